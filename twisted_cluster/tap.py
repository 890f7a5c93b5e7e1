"""
C{twistd cluster}: the command-line shell over L{twisted_cluster.master}.

    twistd -n cluster --app server.tac --workers 4
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .control.paths import defaultControlPath
from .envfile import WorkerEnvironment
from .heap import freezeOnceServing, holdCollection
from .internals import appendToLogFiles, exitTwistdWith
from .master.lean import withoutTLS
from .master.logs import isJSONObserver
from .master.observer import IClusterObserver
from .master.restart import RestartPolicy
from .options import MEGABYTE, Options
from .signals import installSignals, stopCluster
from .titles import masterTitle, setTitle
from .worker.logging import RELAY, STDOUT

if TYPE_CHECKING:
    from .master.supervisor import ClusterService
    from .master.upgrade import InheritedPorts
    from .master.web import PageService

_log = Logger(namespace="twisted_cluster.tap")


def workerLogTarget(runner: Any) -> str:
    """
    Where workers should log, given twistd's options: its standard output,
    its log file, or (syslog, a custom logger, or not twistd) relayed.
    """
    try:
        if runner["syslog"] or (
            runner["logger"] and not isJSONObserver(runner["logger"])
        ):
            return RELAY
        logfile, nodaemon = runner["logfile"], runner["nodaemon"]
    except (KeyError, TypeError):
        return RELAY
    if logfile == "-" or (nodaemon and not logfile):
        return STDOUT
    # twistd opens its log before it changes directory; so do the workers.
    return os.path.abspath(logfile or "twistd.log")


def _switchingTo(runner: Any) -> tuple[int | None, int | None]:
    """
    The uid and gid twistd will switch to after C{privilegedStartService},
    if it will (it runs as root and was given C{--uid} or C{--gid}).
    """
    if os.getuid() != 0:
        return None, None
    try:
        uid, gid = runner["uid"], runner["gid"]
    except (KeyError, TypeError):
        return None, None
    if uid is not None and gid is None:
        import pwd

        gid = pwd.getpwuid(uid).pw_gid
    return uid, gid


def _giveLogTo(path: str, uid: int | None, gid: int | None) -> None:
    # twistd opens its log as root; workers, spawned after the switch, open
    # it again by path (to follow rotation), so it must be theirs.
    if uid is None and gid is None:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    except OSError as e:
        raise SystemExit(
            f"twisted-cluster: cannot give the log {path} to the user "
            f"workers run as: {e.strerror or e}"
        ) from None


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    A L{ClusterService} for the options, on the master of C{cluster}.
    """
    # The reactor and the master's modules, imported here rather than when
    # twistd reads the options: without TLS, which the master never uses.
    with withoutTLS() as fresh:
        if fresh:
            holdCollection()
        if reactor is None:
            from twisted.internet import reactor
        from . import cluster
        from .master.activation import activatedSockets, requestsOf
        from .master.notify import SystemdNotifier
        from .master.supervisor import ClusterService, Limits
        from .master.upgrade import (
            Image,
            InheritedPorts,
            Upgrader,
            readHandover,
            releaseKeeper,
        )

    # An upgrade in place: the previous image of this process handed over.
    handed = readHandover(os.environ)
    runner = getattr(options, "parent", None)
    image = Image.current(runner, handed)

    master = cluster.theMaster(reactor)
    logTarget = workerLogTarget(getattr(options, "parent", None))
    master.setupMaster(
        exec="",
        execArgv=["-m", "twisted_cluster.worker"],
        args=[
            *("--log-to", logTarget, "--log-format", options["log-format"]),
            *workerApp(options),
        ],
        # Workers logging to the master's stdout share it; others pipe theirs
        # to the master, which logs what they write outside their log.
        silent=logTarget != STDOUT,
        scheduling=options["scheduling"],
    )
    master.maxMessage = int(options["max-message-size"] * MEGABYTE)
    environment: WorkerEnvironment = options["environment"]
    master.environment = environment
    # Sockets systemd passed (socket activation) are the shared sockets of
    # their addresses (after an upgrade, in the handover).
    for sock in [] if handed else activatedSockets(os.environ):
        requests = requestsOf(sock)
        for request in requests:
            master.listeners.adopt(request, sock)
        master.activated.append(requests[0] if requests else None)
    if os.path.isabs(logTarget):
        # The workers append to the master's log file: so must the master.
        appendToLogFiles()
    if os.path.isabs(logTarget):
        _giveLogTo(logTarget, *_switchingTo(runner))
    if options["master-hook"] is not None:
        options["master-hook"](cluster)
    status = [0]

    def fatal(reason: str) -> None:
        stream = sys.__stderr__
        if stream is not None:
            stream.write(f"twisted-cluster: {reason}\n")
            stream.flush()
        status[0] = 1
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    policy = RestartPolicy(
        initialDelay=options["restart-delay"],
        maxDelay=options["max-restart-delay"],
        stableAfter=options["stable-after"],
        maxBootFailures=options["max-boot-failures"],
    )
    limits = Limits(
        gracefulTimeout=options["graceful-timeout"],
        timeout=options["timeout"],
        bootTimeout=options["boot-timeout"],
        maxAge=options["max-age"],
        maxMemory=options["max-memory"],
        reloadBatch=options["reload-batch"],
        spares=options["spares"],
        shutdownDelay=options["shutdown-delay"],
    )
    service = ClusterService(
        master,
        options["workers"],
        reactor,
        onFatal=fatal,
        policy=policy,
        limits=limits,
        bindAhead=options["bind"],
    )
    # The listening sockets of the master's own services, after an upgrade.
    ports = InheritedPorts(handed)
    upgrader = Upgrader(
        service,
        reactor,
        image,
        logPath=logTarget if os.path.isabs(logTarget) else None,
    )
    if handed is not None:
        service.inherit(handed["service"])
        # Once this image supervises, the workers' keeper may go.
        reactor.callWhenRunning(releaseKeeper, handed)
        if image.pidfile:
            # twistd was told to leave it (it names this process already):
            # removing it at the end is ours, then.
            reactor.addSystemEventTrigger(
                "after", "shutdown", _removePidfile, image.pidfile
            )
        began = float(handed["began"])
        reactor.callWhenRunning(
            lambda: _log.info(
                "Upgraded in place: generation {n}, {s:.2f}s from the signal "
                "to supervising again",
                n=service.generation,
                s=reactor.seconds() - began,
            )
        )
    reactor.callWhenRunning(installSignals, service, reactor, upgrader.upgrade)
    service.observers.append(_RereadOnReload(environment))
    root = _InTurn()
    notifier = SystemdNotifier.fromEnvironment(reactor, os.environ)
    if notifier is not None:
        # Stopped last: systemd's watchdog is pinged to the end of the stop.
        notifier.setServiceParent(root)
        service.observers.append(notifier)
    control = _controlPath(options["control"], image.pidfile)
    if control is not None:
        from .control.server import ControlService

        # Stopped after the cluster: it shows the stop to the end.
        controlService = ControlService(
            service,
            control,
            reactor,
            lambda now: stopCluster(service, reactor, now),
            upgrade=upgrader.upgrade,
            inherited=ports.take("control", control),
        )
        controlService.setServiceParent(root)
        upgrader.ports["control"] = (control, controlService)
    pages = [
        ("health", lambda: _healthRoot(service)),
        ("metrics", lambda: _metricsRoot(service, reactor)),
    ]
    for what, page in pages:
        if options[what] is not None:
            upgrader.ports[what] = (
                options[what],
                _serve(what, page(), options[what], reactor, fatal, root, ports),
            )
    ports.closeRest()
    service.setServiceParent(root)
    reactor.callWhenRunning(setTitle, masterTitle(options["app"] or options["plugin"]))
    # Later than in a worker: while workers start, they need the CPUs.
    freezeOnceServing(reactor, after=2.0)
    # twistd re-raises the signal that stopped it; a graceful stop exits 0,
    # a fatal error 1.
    reactor.addSystemEventTrigger(
        "after", "shutdown", lambda: exitTwistdWith(reactor, status[0])
    )
    shell: IService = root
    return shell


def workerApp(options: Options) -> list[str]:
    """
    What a worker runs, as the arguments of C{python -m twisted_cluster.worker}:
    the C{.tac}, or the plugin and its arguments (last, after C{--}).
    """
    if options["plugin"] is not None:
        app = ["--plugin", options["plugin"], "--", *options["plugin-args"]]
    else:
        app = ["--app", options["app"]]
    return ["--watch", *app] if options["reload-on-change"] else app


@implementer(IClusterObserver)
class _RereadOnReload:
    """
    Reads C{--env-file} again as a reload begins, for the workers it starts;
    a file that cannot be read leaves the variables read before.
    """

    def __init__(self, environment: WorkerEnvironment) -> None:
        self.environment = environment

    def stateChanged(self, old: str, new: str) -> None:
        if new != "reloading" or self.environment.path is None:
            return
        try:
            self.environment.read()
        except ValueError as e:
            _log.error("{why}; the new workers get the variables read before", why=e)
        else:
            _log.info("Read {path} again", path=self.environment.path)

    def servingChanged(self, serving: int, count: int) -> None:
        pass


def _healthRoot(service: ClusterService) -> Any:
    from .master.health import healthRoot

    return healthRoot(service)


def _metricsRoot(service: ClusterService, reactor: Any) -> Any:
    try:
        from .master.metrics import ClusterMetrics, metricsRoot
    except ImportError as e:
        raise SystemExit(
            f"twisted-cluster: --metrics needs prometheus_client ({e}): "
            "pip install 'twisted-cluster[metrics]'"
        ) from None
    return metricsRoot(ClusterMetrics(service, reactor))


def _serve(
    what: str,
    page: Any,
    description: str,
    reactor: Any,
    fatal: Callable[[str], None],
    root: MultiService,
    ports: InheritedPorts,
) -> PageService:
    """
    Serve C{page} (a resource tree) on the endpoint C{description} names
    (on the socket the previous image listened on there, after an upgrade).
    """
    from twisted.internet.endpoints import serverFromString

    from .master.web import PageService

    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"twisted-cluster: --{what} {description!r}: {e}") from None
    service = PageService(
        what,
        page,
        endpoint,
        fatal,
        reactor=reactor,
        inherited=ports.take(what, description),
    )
    service.setServiceParent(root)
    return service


class _InTurn(MultiService):
    """
    Stops its services one at a time, the last added first.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[object] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(_stopping(child))
        return d.addCallback(lambda _: None)


def _stopping(child: IService) -> Callable[[object], object]:
    return lambda _: child.stopService()


def _controlPath(option: str | None, pidfile: str | None) -> str | None:
    """
    Where the control socket goes: C{--control}, else C{twistd.ctl} beside
    the pid file; C{None} for C{--control none}.
    """
    if option == "none":
        return None
    if option:
        return os.path.abspath(option)
    return defaultControlPath(pidfile or None)


def _removePidfile(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
