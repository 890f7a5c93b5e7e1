"""
A worker's end of its channel to the master, and C{cluster.worker}.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, FirstError
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .. import __version__
from ..commands import (
    CHANNEL_FD,
    LIFELINE_FD,
    MAX_MESSAGE_SIZE,
    Adopt,
    BootFailed,
    Channel,
    ChannelFactory,
    Closed,
    Connection,
    Disconnect,
    Heartbeat,
    Listen,
    ListenFailed,
    Message,
    Metrics,
    NotListening,
    Online,
    Quiesce,
    Ready,
    Release,
    Resume,
    Start,
    Unlisten,
    boxLimit,
    channelGone,
)
from ..events import EventEmitter
from ..heap import freezeOnceServing
from ..messages import Batcher, decodeBatch
from ..request import ListenRequest
from .lifeline import watchLifeline
from .listening import MINE, Answer, SharedPorts
from .metrics import appMetrics


class ChannelLost(Exception):
    """
    The channel to the master closed.
    """


class WorkerChannel(Channel):
    """
    The AMP protocol on the worker's end of the channel.
    """

    def __init__(self, worker: ThisWorker) -> None:
        super().__init__()
        self._worker = worker
        self._held: list[amp.AmpBox] | None = None
        self._receiving = False
        # While the master replaces its code, the questions not yet asked.
        self._quiet = False
        self._holding: list[tuple[Any, dict[str, Any], Deferred[Any]]] = []

    def dataReceived(self, data: bytes) -> None:
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        # Commands that arrive while a listen* call waits for its socket are
        # held until the call has returned, so that (say) a Disconnect cannot
        # act on a half-made port.
        if (
            self._held is not None
            and amp.COMMAND in box
            # Held, it would keep a listen* waiting for the master to resume.
            and box[amp.COMMAND] != Resume.commandName
        ):
            self._held.append(box)
        else:
            super().ampBoxReceived(box)

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for box in held:
            if self._held is not None:
                # Another synchronous call began: keep order behind it.
                self._held.append(box)
            else:
                super().ampBoxReceived(box)

    def callRemote(self, commandType: Any, *a: Any, **kw: Any) -> Any:
        """
        Ask the master, or once it said L{Quiesce}, hold the question back
        until it says L{Resume}.
        """
        if self._quiet:
            d: Deferred[Any] = Deferred()
            self._holding.append((commandType, kw, d))
            return d if commandType.requiresAnswer else None
        return super().callRemote(commandType, *a, **kw)

    @Quiesce.responder
    def quiesce(self) -> Deferred[dict[str, Any]]:
        self._quiet = True
        return self.whenAnswered().addCallback(lambda _: {})

    @Resume.responder
    def resume(self) -> dict[str, Any]:
        self._quiet = False
        holding, self._holding = self._holding, []
        for command, kw, d in holding:
            asked = self.callRemote(command, **kw)
            if asked is not None:
                asked.chainDeferred(d)
        return {}

    # What these two start may call listen*, whose synchronous call to the
    # master must not run inside this protocol's dataReceived: next turn.

    @Message.responder
    def message(self, batch: bytes) -> dict[str, Any]:
        self._worker._receive(batch)
        return {}

    @Start.responder
    def start(self, slot: int) -> dict[str, Any]:
        self._worker.slot = slot + 1
        self._worker._reactor.callLater(0, self._worker._started.callback, slot)
        return {}

    @Adopt.responder
    def adopt(self, slot: int) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if self._worker.isDisconnecting():
            return {}  # Leaving: the master finds another heir next time.
        return self._worker.ports.adopt(slot).addCallbacks(
            lambda _: {}, self._adoptFailed, errbackArgs=(slot,)
        )

    def _adoptFailed(
        self, failure: Failure, slot: int
    ) -> Deferred[dict[str, Any]] | dict[str, Any] | Failure:
        if channelGone(failure) or self._worker.isDisconnecting():
            return {}  # This worker is going: nothing to tell.
        error: Any = failure.value
        while isinstance(error, FirstError):
            error = error.subFailure.value
        if isinstance(error, ListenFailed):
            # The slot's own worker came back while this one asked: let go
            # of what it took.  (An error AMP does not know would make the
            # master drop this channel.)
            return self._worker.ports.release(slot).addCallback(lambda _: {})
        return failure

    @Release.responder
    def release(self, slot: int) -> Deferred[dict[str, Any]]:
        return self._worker.ports.release(slot).addCallback(lambda _: {})

    @Connection.responder
    def connection(self, listener: int, descriptor: int) -> dict[str, Any]:
        port = self._worker.ports.handed.get(listener)
        if port is None or not port.connected or self._worker.isDisconnecting():
            os.close(descriptor)
            raise NotListening()
        # The app's connectionMade may do anything, listen included: not here.
        port.expect()
        self._worker._reactor.callLater(0, port.connectionReceived, descriptor)
        return {}

    @Heartbeat.responder
    def heartbeat(self) -> dict[str, Any]:
        return {"figures": self._worker.ports.counts.figures()}

    @Metrics.responder
    def metrics(self) -> dict[str, Any]:
        return {"text": appMetrics()}

    @Disconnect.responder
    def disconnect(self) -> dict[str, Any]:
        self._worker._disconnect()
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._worker._channelLost()

    def callSync(self, command: type[amp.Command], timeout: float, **kw: Any) -> Any:
        """
        Call C{command} and wait for its answer without running the reactor.

        A C{listen*} call must return a port at once, so asking the master for
        its socket cannot wait for a later turn of the reactor.  This drives
        the channel's transport by hand until the answer has arrived; whatever
        else arrives meanwhile is dispatched as usual.
        """
        if self._receiving:
            # Reading the channel again from inside its own dataReceived
            # would tangle the parser.
            raise RuntimeError(
                f"{command.__name__} cannot wait for the master from inside a "
                "channel callback; call it in a later turn of the reactor"
            )
        results: list[object] = []
        self.callRemote(command, **kw).addBoth(results.append)
        transport: Any = self.transport
        reactor: Any = transport.reactor
        if self._held is None:
            self._held = []
            reactor.callLater(0, self._release)
        deadline = time.monotonic() + timeout
        while not results:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the master did not answer {command.__name__}")
            writing = [transport] if transport in reactor.getWriters() else []
            readable, writable, _ = select.select([transport], writing, [], remaining)
            why = None
            if writable:
                why = transport.doWrite()
            if readable and not why:
                why = transport.doRead()
            if why:
                # The reactor sees the same end-of-file on its next read.
                raise ChannelLost(f"lost the channel to the master: {why}")
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


class ThisWorker(EventEmitter):
    """
    C{cluster.worker}: this process, as a worker of the cluster.

    @ivar id: this worker's id.
    @ivar slot: its slot, 1..N, which the worker it replaced had (C{None}
        for a spare until it is started).
    @ivar standby: whether it started as a spare, to wait for L{Start}.
    """

    _log = Logger()
    listenTimeout = 30.0

    def __init__(
        self, reactor: Any, workerId: int, maxMessage: int | None = None
    ) -> None:
        super().__init__()
        self.id = workerId
        self.slot: int | None = None
        self.standby = False
        self.exitedAfterDisconnect = False
        self._reactor = reactor
        self._channel = WorkerChannel(self)
        limit = MAX_MESSAGE_SIZE if maxMessage is None else maxMessage
        self._channel.maxBox = boxLimit(limit)
        self._messages = Batcher(
            reactor, self._deliver, self._channel.push, limit=limit
        )
        self._inbox: deque[bytes] = deque()
        self.ports = SharedPorts(
            reactor,
            self._requestSocket,
            self._requestSlot,
            self._handedBack,
            self._unlistened,
        )
        self._closedSinceSaid = 0
        self._disconnecting: Deferred[None] | None = None
        self._started: Deferred[int] = Deferred()

    def connect(self) -> None:
        """
        Take over the channel (descriptor 3), the C{listen*} methods of the
        reactor, and the lifeline that ends this process with the master.
        """
        try:
            # Out of the master's process group: a terminal's Ctrl-C reaches
            # the master alone, which then stops its workers in order.
            os.setpgid(0, 0)
        except OSError:
            pass
        self._reactor.adoptStreamConnection(
            CHANNEL_FD, socket.AF_UNIX, ChannelFactory(self._channel)
        )
        os.close(CHANNEL_FD)
        self.ports.install()
        # Before the app's services stop: the ports they close are not the
        # app's choice but this worker's end.
        self._reactor.addSystemEventTrigger("before", "shutdown", self._leaving)
        watchLifeline(self._reactor, LIFELINE_FD)
        self._channel.callRemote(Online, version=__version__).addErrback(self._unheard)
        # By then the app (a .tac, or the script that imported us) is loaded.
        freezeOnceServing(self._reactor, after=0.2)

    def whenStarted(self) -> Deferred[int]:
        """
        For a spare: fires when the master says to start (with the slot).
        """
        return self._started

    def ready(self) -> None:
        """
        Tell the master the application has started.  From now on a port-0
        listen is this worker's own (L{SharedPorts.private}).
        """
        self.ports.private = True
        self._channel.callRemote(Ready).addErrback(self._unheard)

    def bootFailed(self, reason: str) -> None:
        """
        Tell the master why this worker could not start, before exiting.
        """
        try:
            self._channel.callSync(BootFailed, timeout=5.0, reason=reason)
        except Exception:
            pass

    def send(self, message: object) -> Deferred[None]:
        """
        Send a JSON value to the master; fires once the master has it.

        @raise TypeError: if JSON cannot encode C{message}.
        """
        return self._messages.send(message)

    def _deliver(self, batch: bytes) -> Deferred[object]:
        if self._channel.transport is None:
            raise ChannelLost("not connected to the master")
        d: Deferred[object] = self._channel.callRemote(Message, batch=batch)
        return d

    def isDisconnecting(self) -> bool:
        return self._disconnecting is not None

    def isConnected(self) -> bool:
        transport: Any = self._channel.transport
        return transport is not None and bool(transport.connected)

    def disconnect(self) -> Deferred[None]:
        """
        Stop accepting, let open connections finish, then stop the reactor.
        """
        if self._disconnecting is None and self.isConnected():
            self._channel.callRemote(Disconnect).addErrback(self._unheard)
        return self._disconnect()

    def _disconnect(self) -> Deferred[None]:
        if self._disconnecting is None:
            self.exitedAfterDisconnect = True
            self._log.info("Worker {id} disconnecting", id=self.id)
            self.emit("disconnect")
            self._disconnecting = self.ports.stopAccepting()
            self._disconnecting.addCallback(lambda _: self._stopReactor())
        return self._disconnecting

    def _requestSocket(self, request: ListenRequest) -> Answer:
        try:
            answer = self._channel.callSync(
                Listen, timeout=self.listenTimeout, request=request, slot=MINE
            )
        except ListenFailed as e:
            raise OSError(str(e)) from None
        return Answer(answer["descriptor"], answer["family"], answer["listener"])

    def _requestSlot(self, request: ListenRequest, slot: int) -> Deferred[Answer]:
        d = self._channel.callRemote(Listen, request=request, slot=slot)
        return d.addCallback(
            lambda a: Answer(a["descriptor"], a["family"], a["listener"])
        )

    def _unlistened(self, request: ListenRequest) -> None:
        if self.isConnected():
            self._channel.callRemote(Unlisten, request=request).addErrback(
                self._unheard
            )

    def _handedBack(self) -> None:
        # One notice per turn, however many connections closed in it.
        self._closedSinceSaid += 1
        if self._closedSinceSaid == 1:
            self._reactor.callLater(0, self._sayClosed)

    def _sayClosed(self) -> None:
        count, self._closedSinceSaid = self._closedSinceSaid, 0
        if self._channel.transport is not None:
            self._channel.callRemote(Closed, count=count)

    def _receive(self, batch: bytes) -> None:
        self._inbox.append(batch)
        if len(self._inbox) == 1:
            # Two turns on, not one: the channel's answer, written at the end
            # of the next turn, then tells the master before the listeners
            # run, and its send() Deferreds fire while this worker delivers.
            later = self._reactor.callLater
            later(0, later, 0, self._deliverInbox)

    def _deliverInbox(self) -> None:
        while self._inbox:
            for message in decodeBatch(self._inbox.popleft()):
                self.emit("message", message)

    def _channelLost(self) -> None:
        if self._disconnecting is None:
            self._log.info("Worker {id}: the master has gone; exiting", id=self.id)
        self._stopReactor()

    def _leaving(self) -> None:
        self.ports.leaving = True

    def _stopReactor(self) -> None:
        if not self._reactor.running:
            self._reactor.callWhenRunning(self._stopReactor)
            return
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass  # Already stopping.

    def _unheard(self, failure: Failure) -> None:
        if channelGone(failure):
            return  # We are going: the master learns that from the channel.
        self._log.failure(
            "Worker {id}: the master did not take a notice", failure, id=self.id
        )
