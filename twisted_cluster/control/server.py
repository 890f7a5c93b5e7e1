"""
The master's end of the control socket: a UNIX socket, mode 0600, that
only its owner (and root) may use, speaking L{twisted_cluster.control.commands}.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogPublisher,
    formatEvent,
    globalLogPublisher,
)
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from ..internals import adoptListeningPort, startAdoptedUNIXPort
from ..master.status import Status as StatusReader
from ..master.upgrade import IHandsOverAPort, handOverPort, resumePort
from .commands import Progress, Refused, Reload, Scale, Send, Status, Stop, Upgrade

if TYPE_CHECKING:
    from ..master.supervisor import ClusterService

_PEERCRED = struct.Struct("3i")


def peerUid(transport: Any) -> int | None:
    """
    The uid of the process at the other end of a UNIX connection, or
    C{None} where the kernel does not say (C{SO_PEERCRED}: Linux).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    handle: socket.socket = transport.getHandle()
    _, uid, _ = _PEERCRED.unpack(
        handle.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
    )
    return int(uid)


class ControlProtocol(amp.AMP):
    """
    One client of the control socket.
    """

    _log = Logger()

    def __init__(self, control: ControlService) -> None:
        super().__init__()
        self._control = control
        self._observers: list[_Forward] = []
        # Who waits for this connection to close.
        self.gone: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        super().connectionMade()
        uid = peerUid(self.transport)
        if uid is not None and uid not in (os.getuid(), 0):
            self._log.warn("Control socket: refused a client of uid {uid}", uid=uid)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._control.clients.add(self)

    def _follow(self, start: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """
        Call C{start}; until the Deferred it gives fires, the master's own
        log lines go to this client as L{Progress}.
        """
        observer = self._forward()
        d = maybeDeferred(start)

        def done(result: object) -> object:
            self._unforward(observer)
            return result

        return d.addBoth(done)

    def _forward(self) -> _Forward:
        observer = _Forward(self)
        self._observers.append(observer)
        self._control.publisher.addObserver(observer)
        return observer

    def _unforward(self, observer: _Forward) -> None:
        if observer in self._observers:
            self._observers.remove(observer)
            self._control.publisher.removeObserver(observer)

    @Status.responder
    def status(self) -> dict[str, Any]:
        return {"status": self._control.status.document()}

    @Reload.responder
    def reload(self) -> Deferred[dict[str, Any]]:
        service = self._control.service

        def start() -> Deferred[bool]:
            if service.state.value != "running":
                raise Refused(f"not reloading: the cluster is {service.state.value}")
            return service.reload()

        def done(ok: bool) -> dict[str, Any]:
            if not ok:
                raise Refused("the reload failed: a new worker could not start")
            return {}

        return self._follow(start).addCallback(done)

    @Scale.responder
    def scale(self, count: int, relative: bool) -> Deferred[dict[str, Any]]:
        service = self._control.service
        target = service.count + count if relative else count

        def start() -> Deferred[None]:
            try:
                return service.scaleTo(target)
            except ValueError as e:
                raise Refused(str(e)) from None

        def failed(failure: Failure) -> Failure:
            if failure.check(Refused):
                return failure
            return Failure(Refused(failure.getErrorMessage()))

        return self._follow(start).addCallbacks(lambda _: {"count": target}, failed)

    @Stop.responder
    def stop(self, now: bool) -> dict[str, Any]:
        self._control.stopCluster(now)
        # The answer goes first; the lines of the stop follow until the
        # master exits and the connection closes.
        self._forward()
        return {}

    @Upgrade.responder
    def upgrade(self) -> Deferred[dict[str, Any]]:
        upgrade = self._control.upgrade
        if upgrade is None:
            raise Refused("this master cannot upgrade in place")

        def refused(failure: Failure) -> Failure:
            return Failure(Refused(failure.getErrorMessage()))

        return self._follow(upgrade).addCallbacks(lambda _: {}, refused)

    @Send.responder
    def send(self, worker: int, message: object) -> Deferred[dict[str, Any]]:
        workers = self._control.service.master.workers
        if worker == 0:
            # Not the spares: their app waits to start.
            targets = [w for w in workers.values() if w.isConnected() and not w.standby]
        elif worker in workers and workers[worker].isConnected():
            targets = [workers[worker]]
        else:
            raise Refused(f"no worker {worker} is connected")
        try:
            sent = [w.send(message) for w in targets]
        except (TypeError, ValueError) as e:
            raise Refused(str(e)) from None
        return gatherResults(sent, consumeErrors=True).addCallbacks(
            lambda _: {"sent": len(sent)},
            lambda f: Failure(Refused(f"a worker did not take it: {f.value}")),
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for observer in list(self._observers):
            self._unforward(observer)
        self._control.clients.discard(self)
        gone, self.gone = self.gone, []
        for d in gone:
            d.callback(None)
        super().connectionLost(reason)


@implementer(ILogObserver)
class _Forward:
    """
    Sends the master's own informational log lines to a control client.
    """

    def __init__(self, protocol: ControlProtocol) -> None:
        self._protocol = protocol

    def __call__(self, event: LogEvent) -> None:
        namespace = event.get("log_namespace", "")
        level = event.get("log_level", LogLevel.info)
        if not namespace.startswith("twisted_cluster.master"):
            return
        if level < LogLevel.info or self._protocol.transport is None:
            return
        text = formatEvent(event)
        if text:
            self._protocol.callRemote(Progress, line=text[:4096])


class ControlFactory(Factory):
    noisy = False  # A client per command is no news.

    def __init__(self, control: ControlService) -> None:
        self._control = control

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self._control)


@implementer(IHandsOverAPort)
class ControlService(Service):
    """
    Listens on the control socket at C{path} while running.  A path that
    cannot be made gives one warning, and the cluster runs without it.

    @ivar port: the listening port, if there is one.
    """

    _log = Logger()

    def __init__(
        self,
        service: ClusterService,
        path: str,
        reactor: Any,
        stopCluster: Callable[[bool], object],
        publisher: LogPublisher | None = None,
        upgrade: Callable[[], Deferred[None]] | None = None,
        inherited: int | None = None,
    ) -> None:
        """
        @param inherited: the descriptor of the listening socket the
            master's previous image had at C{path} (an upgrade in place).
        """
        self.service = service
        self.path = path
        self.status = StatusReader(service, reactor)
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self.port: IListeningPort | None = None
        self.clients: set[ControlProtocol] = set()
        self._reactor = reactor
        self._stopCluster = stopCluster
        self.upgrade = upgrade
        self._inherited = inherited

    def stopCluster(self, now: bool) -> None:
        """
        Stop the cluster, gracefully or at once (which also hurries a
        graceful stop under way).
        """
        self._stopCluster(now)

    def startService(self) -> None:
        super().startService()
        fd, self._inherited = self._inherited, None
        if fd is not None:
            # The same socket, still 0600 at the same path.
            self.port = adoptUNIXPort(self._reactor, fd, ControlFactory(self))
            return
        why = _clearStale(self.path)
        if why is not None:
            self._log.warn(
                "No control socket at {path}: {why}", path=self.path, why=why
            )
            return
        # Owner-only from the start: no moment at the umask's mode.
        mask = os.umask(0o177)
        try:
            self.port = self._reactor.listenUNIX(
                self.path, ControlFactory(self), mode=0o600
            )
        except CannotListenError as e:
            reason = e.socketError
            self._log.warn(
                "No control socket at {path}: {why}",
                path=self.path,
                why=getattr(reason, "strerror", None) or reason,
            )
            return
        finally:
            os.umask(mask)
        self._log.info("Control socket at {path}", path=self.path)

    def handover(self) -> Deferred[int | None]:
        """
        The listening socket's descriptor, for the master's next image; it
        accepts nothing more here until L{resume}.  (Clients stay until the
        exec: the one that asked for the upgrade waits for it.)
        """
        return succeed(handOverPort(self.port))

    def resume(self) -> None:
        """
        Accept again: the upgrade did not happen.
        """
        resumePort(self.port)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, and close each client's connection once what it was
        sent (the last lines of a stop) is written.
        """
        super().stopService()
        port, self.port = self.port, None
        closing: list[Deferred[Any]] = []
        if port is not None:
            closing.append(maybeDeferred(port.stopListening))
        for client in list(self.clients):
            gone: Deferred[None] = Deferred()
            client.gone.append(gone)
            closing.append(gone)
            client.transport.loseConnection()  # type: ignore[union-attr]
        return gatherResults(closing).addCallback(lambda _: None)


def adoptUNIXPort(reactor: Any, fd: int, factory: Factory) -> IListeningPort:
    """
    Listen with C{factory} on the listening UNIX socket C{fd}, leaving its
    path's mode as it is (Twisted's own adoption would make it 0666); the
    path goes when the port stops, as a port's own.
    """
    from twisted.internet import unix

    try:
        port = adoptListeningPort(unix.Port, reactor, fd, factory)
        startAdoptedUNIXPort(port)
    finally:
        os.close(fd)
    listening: IListeningPort = port
    return listening


def _clearStale(path: str) -> str | None:
    """
    Make way for a control socket at C{path}: remove one a dead master left.
    Why it cannot be made there, else C{None}.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror
    if not stat.S_ISSOCK(mode):
        return "the path exists and is not a socket"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno != errno.ECONNREFUSED:
            return e.strerror or str(e)
    else:
        return "another master answers there"
    finally:
        probe.close()
    try:
        os.unlink(path)
    except OSError as e:
        return e.strerror
    return None
