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
master's sockets.  Install a non-default reactor before importing this
module: it uses the global reactor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

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

isWorker: bool = isWorkerProcess()
isMaster: bool = not isWorker
isPrimary = isMaster

worker: ThisWorker | None = None
_master: Master | None = None


class NotTheMaster(RuntimeError):
    """
    Called in a worker something only the master does.
    """


def theMaster() -> Master:
    """
    The L{Master} behind this module in the master process.
    """
    if _master is None:
        raise NotTheMaster("this process is a worker, not the master")
    return _master


if isMaster:
    _master = Master()
    _events: EventEmitter = _master
    workers: Mapping[int, Worker] = _master.workers
else:
    worker = thisWorker()
    _events = EventEmitter()
    workers = {}


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
) -> None:
    """
    Change what later forks run: C{python *execArgv exec *args}.
    """
    theMaster().setupMaster(exec=exec, args=args, execArgv=execArgv)


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
    return _events.on(event, callback)


def once(event: str, callback: Listener) -> EventEmitter:
    return _events.once(event, callback)


def removeListener(event: str, callback: Listener) -> EventEmitter:
    return _events.removeListener(event, callback)


def __getattr__(name: str) -> Any:
    if name == "settings":
        settings: Settings = theMaster().settings
        return settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
