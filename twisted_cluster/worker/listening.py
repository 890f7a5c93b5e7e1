"""
In a worker, every way an app listens ends in the master's shared socket.

All of Twisted's ways to listen (C{internet.TCPServer}, C{strports},
endpoints, C{listenSSL}, which layers TLS over C{listenTCP}) end in the
reactor's C{listenTCP}, C{listenUNIX} or C{listenUDP}.  L{SharedPorts}
replaces those three on the reactor: each asks the master for the socket and
adopts it.  The app is not changed, and its C{listen*} call keeps its
contract: it returns a listening port, or raises C{CannotListenError}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet import tcp, udp, unix
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.logger import Logger

from ..commands import OWN_SLOT
from ..internals import (
    adoptListeningPort,
    httpChannelOf,
    peerAddressOf,
    serveAccepted,
    startAdoptedUNIXPort,
    stopUNIXPortKeepingPath,
)
from ..request import ListenRequest

ACTIVATED_START = 3
"""Where systemd's descriptors start: a C{systemd:} endpoint's index 0."""

IDLE_GRACE = 2.0
"""Seconds an idle keep-alive connection of a draining worker stays open."""


class Answer(NamedTuple):
    """
    The master's answer to a listen request.

    @ivar listener: the listener id the master hands connections under,
        when it accepts them itself; else C{None} (the worker accepts).
    """

    descriptor: int
    family: int
    listener: int | None = None


RequestSocket = Callable[[ListenRequest], Answer]
"""Ask the master for this worker's socket for a request, at once."""

RequestSlot = Callable[[ListenRequest, int], "Deferred[Answer]"]
"""Ask the master for a request's socket in another worker slot."""

MINE = OWN_SLOT
"""The slot of the worker asking."""


class Counts:
    """
    The connections a worker's ports accepted: open now, and all so far.
    """

    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0

    def figures(self) -> dict[str, int]:
        return {"open": self.open, "accepted": self.accepted}


class _Tracked:
    """
    A connection that tells its port when it opens and closes, so a worker
    can wait for the connections it accepted to finish.
    """

    server: _SharedTCPPort

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.server._connections.add(self)
        self.server.counts.open += 1
        self.server.counts.accepted += 1

    def connectionLost(self, reason: Any) -> None:
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            self.server._connectionClosed(self)


class _TrackedTCPServer(_Tracked, tcp.Server):  # type: ignore[misc]
    pass


class _TrackedUNIXServer(_Tracked, unix.Server):  # type: ignore[misc]
    pass


class _SharedTCPPort(tcp.Port):
    """
    A TCP port adopted from the master that knows its open connections.
    """

    transport = _TrackedTCPServer  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[object] = set()
        # The worker's, shared by all its ports (L{SharedPorts._start}).
        self.counts = Counts()
        self._idle: list[Deferred[None]] = []
        # Once draining, the seconds an idle HTTP connection may stay open.
        self._draining: float | None = None

    def _connectionClosed(self, connection: object) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
            self.counts.open -= 1
        self._checkIdle()

    def _busy(self) -> bool:
        return bool(self._connections)

    def _checkIdle(self) -> None:
        if not self._busy():
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def drain(self, idleGrace: float = IDLE_GRACE) -> None:
        """
        Have HTTP connections close once their current response is done:
        each later response says C{Connection: close}.  One that is idle
        between requests is closed after C{idleGrace} seconds if it is still
        idle: closing it at once races a request the client may be sending.
        """
        self._draining = idleGrace
        for connection in list(self._connections):
            self._drainOne(connection)

    def _drainOne(self, connection: Any) -> None:
        channel = httpChannelOf(getattr(connection, "protocol", None))
        if channel is not None and self._draining is not None:
            _closeAfterResponse(channel)
            clock: Any = self.reactor
            clock.callLater(self._draining, _closeIfIdle, channel, connection)

    def whenIdle(self) -> Deferred[None]:
        """
        Fires when no connection this port accepted is open.
        """
        if not self._busy():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d


class _RoundRobinPort(_SharedTCPPort):
    """
    A TCP port whose connections the master accepts and hands over: it
    holds the listening socket (for C{getHost}) but never accepts itself.

    @ivar handedBack: called once for each connection handed over that has
        closed, so that the master knows how busy this worker is.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handedBack: Callable[[], None] = lambda: None
        self._expected = 0

    def _connectionClosed(self, connection: object) -> None:
        super()._connectionClosed(connection)
        self.handedBack()

    def startListening(self) -> None:
        super().startListening()
        self.stopReading()

    def expect(self) -> None:
        """
        The worker has said yes to a connection that L{connectionReceived}
        will serve on a later turn: until then, this port is not idle.
        """
        self._expected += 1

    def _busy(self) -> bool:
        return bool(self._expected) or super()._busy()

    def connectionReceived(self, descriptor: int) -> None:
        """
        Serve a connection the master accepted.  It is served even if this
        port stopped listening since the worker took it: the master counts
        it as handed over, so dropping it would close a client's connection
        without an answer.
        """
        self._expected -= 1
        skt = socket.fromfd(descriptor, self.addressFamily, socket.SOCK_STREAM)
        os.close(descriptor)
        skt.setblocking(False)
        protocol = None
        try:
            addr = skt.getpeername()
        except OSError:
            pass  # The client has gone already.
        else:
            protocol = self.factory.buildProtocol(peerAddressOf(self, addr))  # type: ignore[union-attr]
        if protocol is None:
            skt.close()
            self.handedBack()
            self._checkIdle()
            return
        self._drainOne(serveAccepted(self, skt, protocol, addr))


class _SharedUNIXPort(_SharedTCPPort, unix.Port):
    """
    A UNIX port adopted from the master.  The master owns the path: unlike
    an ordinary UNIX port, this one neither changes its mode (the worker may
    not own it) nor removes it on stop.
    """

    transport = _TrackedUNIXServer  # type: ignore[assignment]

    def startListening(self) -> None:
        startAdoptedUNIXPort(self)

    def connectionLost(self, reason: Any) -> None:
        stopUNIXPortKeepingPath(self, reason)


def _closeAfterResponse(channel: Any) -> None:
    def checkPersistence(request: Any, version: bytes) -> bool:
        request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        return False

    # Per connection, in place of HTTPChannel's own answer.
    channel.checkPersistence = checkPersistence
    for request in channel.requests:
        if not request.startedWriting:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
    if channel.requests:
        channel.persistent = False


def _closeIfIdle(channel: Any, connection: Any) -> None:
    if not channel.requests and connection.connected:
        connection.loseConnection()


def _acceptQueued(port: Any) -> None:
    """
    Accept every connection queued on C{port}'s socket now, to be served:
    when the cluster stops, the kernel queues no more, and one left queued
    would be reset when the socket closes.
    """
    if not isinstance(port, _SharedTCPPort) or isinstance(port, _RoundRobinPort):
        return  # Under round robin the master accepts, and drains.
    while port.connected:
        before = port.sessionno
        port.doRead()
        if port.sessionno == before:
            return


class _Stops:
    """
    Tells its owner when the port stops: the owner tells the master, if the
    app stopped it rather than the cluster.
    """

    clusterRequest: ListenRequest | None = None
    onStop: Callable[[Any], None] = staticmethod(lambda port: None)

    def connectionLost(self, reason: Any = None) -> None:
        # A UDP port calls it with no reason.
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            self.onStop(self)


class _StoppingTCPPort(_Stops, _SharedTCPPort):
    pass


class _StoppingRoundRobinPort(_Stops, _RoundRobinPort):
    pass


class _StoppingUNIXPort(_Stops, _SharedUNIXPort):
    pass


class _StoppingUDPPort(_Stops, udp.Port):
    pass


class SharedPorts:
    """
    Makes a reactor's C{listenTCP}, C{listenUNIX} and C{listenUDP} adopt the
    master's shared sockets, and keeps the ports so they can be drained.

    Once L{private} is set (the app has started), a port-0 listen is this
    worker's own, as an FTP server's passive-mode data port must be: the
    client connects to the worker that told it the port.  A port the app
    stops in its own time is said to the master (L{unlistened}), so that a
    socket nobody listens on is closed.

    @ivar leaving: whether this worker is on its way out: its ports stop
        then, but the other workers (or its replacement) keep the sockets.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        requestSocket: RequestSocket,
        requestSlot: RequestSlot,
        handedBack: Callable[[], None] = lambda: None,
        unlistened: Callable[[ListenRequest], None] = lambda request: None,
    ) -> None:
        self._reactor = reactor
        self._requestSocket = requestSocket
        self._requestSlot = requestSlot
        self._handedBack = handedBack
        self._unlistened = unlistened
        self._occurrences: dict[tuple[str, str], set[int]] = {}
        self._tcp: list[tuple[ListenRequest, ServerFactory]] = []
        self._slots: dict[int, list[IListeningPort]] = {}
        self._released: list[IListeningPort] = []
        self._own: dict[str, Callable[..., IListeningPort]] = {}
        # The ports the master hands connections to, by listener id.
        self.handed: dict[int, _RoundRobinPort] = {}
        self.ports: list[IListeningPort] = []
        self.counts = Counts()
        # The addresses of the sockets systemd passed the master, in order.
        self.activated: list[ListenRequest | None] = []
        self.private = False
        self.leaving = False

    def install(self) -> None:
        """
        Replace the reactor's C{listen*} methods with this object's.
        """
        reactor = self._reactor
        self._own = {
            "tcp": reactor.listenTCP,
            "udp": reactor.listenUDP,
        }
        reactor.listenTCP = self.listenTCP
        reactor.listenUNIX = self.listenUNIX
        reactor.listenUDP = self.listenUDP
        if self.activated:
            self._own["adoptStream"] = reactor.adoptStreamPort
            reactor.adoptStreamPort = self.adoptStreamPort

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: int, factory: ServerFactory
    ) -> IListeningPort:
        """
        A C{systemd:} endpoint adopts the descriptor systemd passed; in a
        worker, that is the master's socket of the same address.
        """
        index = fileDescriptor - ACTIVATED_START
        if 0 <= index < len(self.activated):
            request = self.activated[index]
            if request is None or request.kind == "udp":
                raise CannotListenError(
                    "", fileDescriptor, "not a stream socket the cluster can share"
                )
            if request.kind == "unix":
                return self.listenUNIX(request.path, factory)
            return self.listenTCP(request.port, factory, interface=request.interface)
        own: Callable[..., IListeningPort] = self._own["adoptStream"]
        return own(fileDescriptor, addressFamily, factory)

    def listenTCP(
        self,
        port: int,
        factory: ServerFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        if port == 0 and self.private and "tcp" in self._own:
            return self._own["tcp"](port, factory, backlog, interface)
        request = self._request("tcp", interface=interface, port=port, backlog=backlog)
        answer = self._socketFor(request)
        if answer.listener is not None:
            return self._takeFromMaster(request, answer, answer.listener, factory)
        adopted = self._adoptTCP(answer.descriptor, answer.family, factory, request)
        self._tcp.append((request, factory))
        return adopted

    def _takeFromMaster(
        self,
        request: ListenRequest,
        answer: Answer,
        listener: int,
        factory: ServerFactory,
    ) -> IListeningPort:
        try:
            port = adoptListeningPort(
                _StoppingRoundRobinPort,
                self._reactor,
                answer.descriptor,
                answer.family,
                factory,
            )
        finally:
            os.close(answer.descriptor)
        port.handedBack = self._handedBack
        self.handed[listener] = port
        return self._start(port, request)

    def _adoptTCP(
        self,
        descriptor: int,
        family: int,
        factory: ServerFactory,
        request: ListenRequest | None = None,
    ) -> IListeningPort:
        try:
            adopted = adoptListeningPort(
                _StoppingTCPPort, self._reactor, descriptor, family, factory
            )
        finally:
            os.close(descriptor)
        return self._start(adopted, request)

    def adopt(self, slot: int) -> Deferred[None]:
        """
        Serve worker slot C{slot}'s TCP sockets too, with the factories this
        worker's own listen calls gave.
        """
        if slot in self._slots:
            return succeed(None)
        ports = self._slots[slot] = []

        def adoptOne(answer: Answer, factory: ServerFactory) -> None:
            if self.leaving:
                # The answer came after this worker began to leave: serving
                # it now would accept connections that nobody then waits for.
                os.close(answer.descriptor)
                return
            ports.append(self._adoptTCP(answer.descriptor, answer.family, factory))

        return DeferredList(
            [
                self._requestSlot(request, slot).addCallback(adoptOne, factory)
                for request, factory in self._tcp
            ],
            fireOnOneErrback=True,
            consumeErrors=True,
        ).addCallback(lambda _: None)

    def release(self, slot: int) -> Deferred[None]:
        """
        Stop serving slot C{slot}'s sockets; its own worker does now.
        """
        ports = self._slots.pop(slot, [])
        for port in ports:
            if port in self.ports:
                self.ports.remove(port)
        # What they accepted goes on here, and is drained when this one leaves.
        for port in ports:
            if isinstance(port, _SharedTCPPort):
                self._released.append(port)
                port.whenIdle().addCallback(self._forgetReleased, port)
        stopped = [port.stopListening() for port in ports]
        return DeferredList([d for d in stopped if d is not None]).addCallback(
            lambda _: None
        )

    def _forgetReleased(self, _: object, port: IListeningPort) -> None:
        if port in self._released:
            self._released.remove(port)

    def listenUNIX(
        self,
        address: str | bytes,
        factory: ServerFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> IListeningPort:
        path = os.fsdecode(address)
        request = ListenRequest(
            "unix", path=path, backlog=backlog, mode=mode, wantPID=bool(wantPID)
        )
        descriptor = self._socketFor(request).descriptor
        try:
            adopted = adoptListeningPort(
                _StoppingUNIXPort, self._reactor, descriptor, factory
            )
        finally:
            os.close(descriptor)
        return self._start(adopted, request)

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> IListeningPort:
        if port == 0 and self.private and "udp" in self._own:
            return self._own["udp"](port, protocol, interface, maxPacketSize)
        request = self._request("udp", interface=interface, port=port)
        descriptor, family, _ = self._socketFor(request)
        try:
            adopted = adoptListeningPort(
                _StoppingUDPPort,
                self._reactor,
                descriptor,
                family,
                protocol,
                maxPacketSize=maxPacketSize,
            )
        finally:
            os.close(descriptor)
        return self._start(adopted, request)

    def stopAccepting(self) -> Deferred[None]:
        """
        Stop listening on every shared port (the master's copy keeps the
        backlog for the other workers); fires once the connections they
        accepted have closed too.
        """
        self.leaving = True
        ports, self.ports = self.ports, []
        waits = []
        for port in ports:
            _acceptQueued(port)
            stopped = port.stopListening()
            waits.append(stopped if stopped is not None else succeed(None))
        released, self._released = self._released, []
        for port in [*ports, *released]:
            if isinstance(port, _SharedTCPPort):
                port.drain()
                waits.append(port.whenIdle())
        return DeferredList(waits).addCallback(lambda _: None)

    def _request(
        self, kind: str, interface: str, port: int, backlog: int = 50
    ) -> ListenRequest:
        occurrence = 0
        if port == 0:
            # The n-th port-0 listen of each worker shares one ephemeral port:
            # the lowest this worker does not hold, so that one that stops
            # and listens again gets the port the others still hold.
            held = self._occurrences.setdefault((kind, interface), set())
            while occurrence in held:
                occurrence += 1
            held.add(occurrence)
        return ListenRequest(
            kind, interface, port, backlog=backlog, occurrence=occurrence
        )

    def _socketFor(self, request: ListenRequest) -> Answer:
        try:
            return self._requestSocket(request)
        except CannotListenError:
            self._forgetOccurrence(request)
            raise
        except Exception as e:
            self._forgetOccurrence(request)
            where = request.path if request.kind == "unix" else request.interface
            raise CannotListenError(where, request.port, e) from None

    def _forgetOccurrence(self, request: ListenRequest) -> None:
        if request.port == 0 and request.kind != "unix":
            held = self._occurrences.get((request.kind, request.interface), set())
            held.discard(request.occurrence)

    def _start(self, port: Any, request: ListenRequest | None = None) -> IListeningPort:
        if request is not None:
            port.clusterRequest = request
            port.onStop = self._stopped
        if isinstance(port, _SharedTCPPort):
            port.counts = self.counts
        port.startListening()
        self.ports.append(port)
        return port

    def _stopped(self, port: Any) -> None:
        request = port.clusterRequest
        if request is None or self.leaving or port not in self.ports:
            return  # The cluster stopped it, or this worker is leaving.
        self.ports.remove(port)
        self._tcp = [(r, f) for r, f in self._tcp if r != request]
        self._forgetOccurrence(request)
        self._unlistened(request)
