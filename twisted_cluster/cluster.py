"""
Node's C{cluster} module, for Twisted.

    from twisted_cluster import cluster

    if cluster.isMaster:
        for _ in range(2):
            cluster.fork()
        cluster.on("death", lambda worker, exitCode, signal: cluster.fork())
    else:
        reactor.listenTCP(8000, site)
    reactor.run()

A process is a worker exactly when C{TWISTED_CLUSTER_WORKER_ID} is set; the
worker removes it from its environment once connected (as Node does), so the
processes it starts are not taken for workers.  In
the master this module's functions are those of the one L{Master}; in a
worker, C{cluster.worker} is this worker and its C{listen*} calls share the
master's sockets.  Importing it does nothing: the master (or, in a worker,
the channel to it) is made on first use, on the global reactor; install a
non-default reactor before that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess

from .events import EventEmitter, Listener
from .master.master import Master, Settings
from .master.process import Worker
from .worker import isWorkerProcess, thisWorker
from .worker.channel import ThisWorker

__all__ = [
    "isMaster",
    "isPrimary",
    "isWorker",
    "fork",
    "workers",
    "on",
    "once",
    "removeListener",
    "disconnect",
    "setupMaster",
    "setupPrimary",
    "worker",
    "Worker",
]

_master: Master | None = None
_events: EventEmitter | None = None


class NotTheMaster(RuntimeError):
    """
    Called in a worker something only the master does.
    """


def theMaster(reactor: IReactorProcess | None = None) -> Master:
    """
    The L{Master} behind this module in the master process, made on first
    use, on C{reactor} (by default the global one).
    """
    global _master
    if isWorkerProcess():
        raise NotTheMaster("this process is a worker, not the master")
    if _master is None:
        _master = Master(reactor)
    return _master


def _emitter() -> EventEmitter:
    global _events
    if _events is None:
        _events = EventEmitter() if _thisWorker() is not None else theMaster()
    return _events


def _thisWorker() -> ThisWorker | None:
    # In a worker, its channel is taken on first use of this module: any of
    # isMaster, isWorker, worker, workers or on() (so that an app's listen
    # calls after "if cluster.isWorker" share the master's sockets).
    return thisWorker() if isWorkerProcess() else None


def __getattr__(name: str) -> Any:
    if name in ("isWorker", "isMaster", "isPrimary"):
        worker = _thisWorker() is not None
        return worker if name == "isWorker" else not worker
    if name == "worker":
        return _thisWorker()
    if name == "workers":
        return {} if _thisWorker() is not None else theMaster().workers
    if name == "settings":
        settings: Settings = theMaster().settings
        return settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fork(env: Mapping[str, str] | None = None) -> Worker:
    """
    Start a worker running what C{setupMaster} says (by default, this
    script again); C{env} adds or overrides its environment variables.
    """
    return theMaster().fork(env)


def setupMaster(
    exec: str | None = None,
    args: list[str] | None = None,
    execArgv: list[str] | None = None,
    scheduling: str | None = None,
) -> None:
    """
    Change what later forks run: C{python *execArgv exec *args}; and, before
    any worker listens, how connections reach them: C{scheduling} is
    C{"reuseport"} (the default), C{"shared"}, C{"roundrobin"} or
    C{"sticky"}.
    """
    theMaster().setupMaster(
        exec=exec, args=args, execArgv=execArgv, scheduling=scheduling
    )


setupPrimary = setupMaster


def disconnect() -> Deferred[None]:
    """
    Disconnect every worker; fires when all have exited.
    """
    return theMaster().disconnect()


def on(event: str, callback: Listener) -> EventEmitter:
    """
    Call C{callback} on each C{event}: C{fork}, C{online}, C{listening},
    C{message}, C{disconnect}, C{death} (or C{exit}).
    """
    return _emitter().on(event, callback)


def once(event: str, callback: Listener) -> EventEmitter:
    return _emitter().once(event, callback)


def removeListener(event: str, callback: Listener) -> EventEmitter:
    return _emitter().removeListener(event, callback)
