"""
One worker, seen from the master: its process, its channel and its handle.
"""

from __future__ import annotations

import os
import signal as signals
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from twisted.internet import address as addresses
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from ..commands import (
    CHANNEL_FD,
    LIFELINE_FD,
    OWN_SLOT,
    Adopt,
    ChannelFactory,
    Connection,
    Disconnect,
    Heartbeat,
    Message,
    Metrics,
    Quiesce,
    Release,
    Resume,
    Start,
    boxLimit,
)
from ..events import EventEmitter
from ..internals import continueDescriptorsFrom, descriptorsSent
from ..limits import MAX_MESSAGE_SIZE
from ..messages import Batcher, decodeBatch
from ..request import ListenRequest
from .channel import MasterChannel
from .inherited import InheritedProcess, OutputPipes
from .lifecycle import Lifecycle, lifecycleMachine
from .listeners import BindError
from .logs import WorkerLogRelay

MINE = OWN_SLOT
"""The slot of a listen request for the asking worker's own sockets."""

SPARE_SLOT = -1
"""The slot of a spare that has not been told to start."""

MAX_LISTENS = 256
"""The most different addresses one worker may listen on."""

ORPHAN_GRACE = 5.0
"""Seconds a worker whose channel closed gets to exit before it is killed."""


class IWorkerHost(Interface):
    """
    What a worker handle needs of the master it belongs to: a L{Worker}
    reaches the rest of the cluster through this alone.
    """

    def emit(event: str, *args: object) -> None:
        """
        Fire Node's cluster-level C{event}, the worker first in C{args}.
        """

    def workerReady(worker: Worker) -> None:
        """
        The application C{worker} runs has started.
        """

    def spareListened(worker: Worker) -> None:
        """
        A spare asked to listen while it was loading its app.
        """

    def socketFor(worker: Worker, request: ListenRequest, slot: int) -> socket.socket:
        """
        The listening socket C{worker} serves C{request} with in C{slot}.

        @raise BindError: if the address cannot be bound.
        """

    def distribute(
        worker: Worker, request: ListenRequest, sock: socket.socket
    ) -> int | None:
        """
        The listener id under which the master hands C{worker} the
        connections of C{sock}, or C{None} if it accepts them itself.
        """

    def unlistened(worker: Worker, request: ListenRequest) -> None:
        """
        C{worker}'s app stopped listening on C{request}'s address.
        """

    def served(worker: Worker) -> None:
        """
        C{worker} listens in its own slot now.
        """

    def leaving(worker: Worker) -> None:
        """
        C{worker} was asked to go: hand it nothing more.
        """

    def gone(worker: Worker) -> None:
        """
        C{worker} is dead.
        """


class ProtocolError(Exception):
    """
    A worker sent what the channel's rules forbid: it is killed.
    """


class Worker(EventEmitter):
    """
    A worker process, as Node's C{cluster.Worker}.

    @ivar id: its id; ids start at 1 and are never reused.
    @ivar exitedAfterDisconnect: whether it exited because it was asked to
        disconnect (by C{disconnect()}, or by itself), not by a crash or
        C{kill()}.
    @ivar bootError: why it could not start, if it said.
    @ivar state: C{"none"}, C{"online"}, C{"listening"}, C{"disconnected"}
        or C{"dead"}; its lifecycle's state.
    @ivar slots: the worker slots whose sockets it serves: its own first,
        then any it adopted from a worker that went.
    @ivar ready: whether the application it runs has started (only a
        C{.tac} bootstrap says so).
    @ivar openConnections: how many of the connections round robin handed it
        are open, as far as the master knows.
    @ivar messagesIn: how many messages it sent the master.
    @ivar messagesOut: how many messages the master sent it.
    @ivar version: the twisted-cluster version it loaded, as it said.
    @ivar brokeRules: how it broke the channel's rules, if it did (it was
        killed for it).
    """

    _log = Logger()

    def __init__(
        self,
        host: IWorkerHost,
        reactor: IReactorTime,
        workerId: int,
        slot: int = 0,
        maxMessage: int = MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__()
        self.id = workerId
        self.slots = [slot]
        self.state = "none"
        self.exitedAfterDisconnect = False
        self.bootError: str | None = None
        self.ready = False
        self.openConnections = 0
        self.messagesIn = 0
        self.messagesOut = 0
        self.version: str | None = None
        self.process: IProcessTransport | None = None
        self._pid: int | None = None
        self.exitCode: int | None = None
        self.signal: str | None = None
        self._host = host
        self._reactor = reactor
        self._maxMessage = maxMessage
        self._messages = Batcher(reactor, self._deliver, self._push, limit=maxMessage)
        self._channel: MasterChannel | None = None
        self._output: OutputPipes | None = None
        self._lifeline: int | None = None
        self._lifecycle: Lifecycle = lifecycleMachine(self)
        self._logs = WorkerLogRelay(workerId, slot=lambda: self.slot)
        self._deathWaiters: list[Deferred[Worker]] = []
        # The addresses its app listens on, by listen request key.
        self._listens: dict[tuple[object, ...], ListenRequest] = {}
        # Every slot it was asked to adopt: it may ask for their sockets.
        self._handed: set[int] = set()
        self._orphaned: IDelayedCall | None = None
        self.brokeRules: str | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.id} pid={self.pid} state={self.state}>"

    @property
    def pid(self) -> int | None:
        """
        The process id (kept after it exits), or C{None} before it started.
        """
        return self._pid

    def isDead(self) -> bool:
        return self.state == "dead"

    def isConnected(self) -> bool:
        return self._channel is not None

    def send(self, message: object) -> Deferred[None]:
        """
        Send a JSON value to the worker; the result fires when it has it.

        @raise TypeError: if JSON cannot encode C{message}.
        """
        sent = self._messages.send(message)
        self.messagesOut += 1
        return sent

    def _deliver(self, batch: bytes) -> Deferred[object]:
        if self._channel is None:
            raise ConnectionError(f"worker {self.id} is not connected")
        d: Deferred[object] = self._channel.callRemote(Message, batch=batch)
        return d

    def _push(self) -> None:
        if self._channel is not None:
            self._channel.push()

    def kill(self, signal: str = "SIGTERM") -> None:
        """
        Send C{signal} (a name such as C{"SIGKILL"}) to the worker's process.
        """
        name = "SIG" + signal.upper().removeprefix("SIG")
        number = getattr(signals, name, None)
        if not isinstance(number, signals.Signals):
            raise ValueError(f"no such signal: {signal}")
        if self.process is None:
            return
        try:
            self.process.signalProcess(int(number))
        except ProcessExitedAlready:
            pass

    def killUnlessDead(self, seconds: float) -> None:
        """
        SIGKILL the worker in C{seconds} if it has not died by then (a
        stopped or stuck process acts on no other signal).
        """
        killer = self._reactor.callLater(seconds, self.kill, "SIGKILL")
        self.whenDead().addCallback(
            lambda _: killer.cancel() if killer.active() else None
        )

    @property
    def slot(self) -> int | None:
        """
        Its slot, 1..N: stable, and reused by the worker that replaces it;
        C{None} for a spare not yet started.
        """
        return None if self.standby else self.slots[0] + 1

    @property
    def standby(self) -> bool:
        """
        Whether it is a spare that has not been told to start.
        """
        return self.slots[0] == SPARE_SLOT

    def start(self, slot: int) -> Deferred[None]:
        """
        Tell a spare to start its app, serving slot C{slot}.
        """
        if self._channel is None:
            return fail(ConnectionError(f"worker {self.id} is not connected"))
        self.slots = [slot]
        d: Deferred[None] = self._channel.callRemote(Start, slot=slot)
        return d.addCallback(lambda _: None)

    def adopt(self, slot: int) -> Deferred[None]:
        """
        Have the worker serve slot C{slot}'s sockets too.
        """
        if slot in self.slots:
            return succeed(None)
        if self._channel is None:
            return fail(ConnectionError(f"worker {self.id} is not connected"))
        self.slots.append(slot)
        self._handed.add(slot)
        self._log.info("Worker {id} serves slot {slot} too", id=self.id, slot=slot + 1)
        d: Deferred[None] = self._channel.callRemote(Adopt, slot=slot)
        return d.addCallback(lambda _: None)

    def release(self, slot: int) -> Deferred[None]:
        """
        Have the worker stop serving slot C{slot} (not its own).
        """
        if slot not in self.slots[1:]:
            return succeed(None)
        self.slots.remove(slot)
        if self._channel is None:
            return succeed(None)
        d: Deferred[None] = self._channel.callRemote(Release, slot=slot)
        return d.addCallback(lambda _: None)

    def passConnection(self, listener: int, descriptor: int) -> Deferred[None]:
        """
        Hand the worker a connection the master accepted (round robin).
        """
        if self._channel is None:
            return fail(ConnectionError(f"worker {self.id} is not connected"))
        d: Deferred[None] = self._channel.callRemote(
            Connection, listener=listener, descriptor=descriptor
        )
        return d.addCallback(lambda _: None)

    def heartbeat(self) -> Deferred[dict[str, int]]:
        """
        Fires once the worker's reactor has answered, with its figures:
        C{{"open": connections open, "accepted": connections so far}}.
        """
        if self._channel is None:
            return fail(ConnectionError(f"worker {self.id} is not connected"))
        d: Deferred[dict[str, Any]] = self._channel.callRemote(Heartbeat)
        return d.addCallback(_figuresOf)

    def metrics(self) -> Deferred[bytes]:
        """
        Fires with the worker's app metrics in Prometheus' text format.
        """
        if self._channel is None:
            return fail(ConnectionError(f"worker {self.id} is not connected"))
        d: Deferred[dict[str, Any]] = self._channel.callRemote(Metrics)
        return d.addCallback(lambda answer: answer["text"])

    def disconnect(self) -> Deferred[Worker]:
        """
        Ask the worker to stop accepting, finish what it has and exit; the
        result fires with this worker when it is dead.
        """
        if self.isDead():
            return succeed(self)
        self.exitedAfterDisconnect = True
        self._host.leaving(self)
        if self._channel is not None:
            self._channel.callRemote(Disconnect).addErrback(lambda _: None)
        else:
            self.kill("SIGTERM")
        return self.whenDead()

    def whenDead(self) -> Deferred[Worker]:
        """
        A Deferred that fires with this worker once its process has exited.
        """
        if self.isDead():
            return succeed(self)
        d: Deferred[Worker] = Deferred()
        self._deathWaiters.append(d)
        return d

    # Spawning

    def spawn(
        self,
        reactor: IReactorProcess,
        executable: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        relayOutput: bool = True,
    ) -> None:
        """
        Start the worker's process with its channel as descriptor 3 and its
        lifeline as descriptor 4.  Its output is relayed to the master's log,
        or with C{relayOutput} false goes where the master's goes.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Pipes of our own, not Twisted's "r": an upgrade hands them on.
        pipes = {fd: os.pipe() for fd in (1, 2)} if relayOutput else {}
        output: dict[int, int | str] = (
            {fd: w for fd, (_, w) in pipes.items()} if relayOutput else {1: 1, 2: 2}
        )
        lifelineRead, self._lifeline = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY)
        protocol = WorkerProcessProtocol(self)
        try:
            self.process = reactor.spawnProcess(
                protocol,
                executable,
                list(argv),
                env=dict(env),
                childFDs={
                    0: devnull,
                    **output,
                    CHANNEL_FD: theirs.fileno(),
                    LIFELINE_FD: lifelineRead,
                },
            )
            channel = self._adoptChannel(reactor, ours.fileno())
        except BaseException:
            os.close(self._lifeline)
            self._lifeline = None
            for r, _ in pipes.values():
                os.close(r)
            raise
        finally:
            ours.close()
            theirs.close()
            os.close(lifelineRead)
            os.close(devnull)
            for _, w in pipes.values():
                os.close(w)
        self._output = OutputPipes(reactor, protocol)
        for fd, (r, _) in pipes.items():
            self._output.read(fd, r)
        self._channel = channel
        self._pid = self.process.pid

    # Upgrading the master in place

    def quiesce(self) -> Deferred[None]:
        """
        Bring the channel to rest for the master's next image: send what is
        queued, tell the worker to hold its questions (L{Quiesce}), and fire
        once every question either side asked has its answer.  From then on
        the master asks nothing until L{resume}.
        """
        channel = self._channel
        if channel is None:
            return fail(ConnectionError(f"worker {self.id} is not connected"))
        self._messages.flush()
        asked: Deferred[object] = channel.callRemote(Quiesce)
        channel.quiet = True
        return asked.addCallback(lambda _: channel.whenAnswered())

    def resume(self) -> Deferred[None]:
        """
        Talk again after L{quiesce} (the upgrade did not happen, or this is
        the new image): the worker asks what it held back.
        """
        channel = self._channel
        if channel is None:
            return succeed(None)
        channel.quiet = False
        transport: Any = channel.transport
        if transport is not None:
            transport.resumeProducing()  # L{handover} paused it.
        if self._output is not None:
            self._output.resume()
        d: Deferred[None] = channel.callRemote(Resume)
        return d.addCallback(lambda _: None)

    def handover(self) -> dict[str, Any]:
        """
        What the master's next image needs to take this worker on, its
        descriptors included: after L{quiesce}, just before the exec.
        """
        channel = self._channel
        transport: Any = None if channel is None else channel.transport
        if transport is None or self._lifeline is None or self._pid is None:
            raise ConnectionError(f"worker {self.id} is not connected")
        # Nothing arrives now (the worker holds its questions): what is
        # unread stays in the socket for the next image.
        transport.pauseProducing()
        output: dict[int, int] = {}
        if self._output is not None:
            self._output.pause()
            output = self._output.descriptors()
        return {
            "id": self.id,
            "pid": self._pid,
            "slots": list(self.slots),
            "state": self.state,
            "ready": self.ready,
            "openConnections": self.openConnections,
            "messagesIn": self.messagesIn,
            "messagesOut": self.messagesOut,
            "version": self.version,
            "listens": [r.toJSON() for r in self._listens.values()],
            "handed": sorted(self._handed),
            "channel": transport.fileno(),
            "descriptorsSent": descriptorsSent(channel),
            "lifeline": self._lifeline,
            "output": {str(fd): pipe for fd, pipe in output.items()},
            "logs": self._logs.pending(),
        }

    def inherit(self, reactor: IReactorProcess, handed: Mapping[str, Any]) -> None:
        """
        Take on the worker the master's previous image described in
        C{handed} (L{handover}): its channel, lifeline and output pipes are
        this process's descriptors already.
        """
        self.slots = [int(slot) for slot in handed["slots"]]
        self.ready = bool(handed["ready"])
        self.openConnections = int(handed["openConnections"])
        self.messagesIn = int(handed["messagesIn"])
        self.messagesOut = int(handed["messagesOut"])
        version = handed.get("version")
        self.version = None if version is None else str(version)
        for body in handed["listens"]:
            request = ListenRequest.fromJSON(body)
            self._listens[request.key] = request
        self._handed = {int(slot) for slot in handed["handed"]}
        self._pid = int(handed["pid"])
        self._lifeline = int(handed["lifeline"])
        os.set_inheritable(self._lifeline, False)
        self._logs.restore(handed["logs"])
        if handed["state"] == "listening":
            self._lifecycle.inheritedListening()
        else:
            self._lifecycle.inheritedOnline()
        protocol = WorkerProcessProtocol(self)
        self._output = OutputPipes(reactor, protocol)
        for fd, pipe in handed["output"].items():
            os.set_inheritable(int(pipe), False)
            self._output.read(int(fd), int(pipe))
        descriptor = int(handed["channel"])
        try:
            channel = self._adoptChannel(
                reactor,
                descriptor,
                # Quiet until the new image says Resume; the worker numbers
                # the descriptors it is passed from its first.
                quiet=True,
                descriptorsSent=int(handed["descriptorsSent"]),
            )
        finally:
            os.close(descriptor)
        self._channel = channel
        self.process = InheritedProcess(self._pid, protocol)

    def _adoptChannel(
        self,
        reactor: IReactorProcess,
        descriptor: int,
        quiet: bool = False,
        descriptorsSent: int = 0,
    ) -> MasterChannel:
        """
        The master's end of this worker's channel, on C{descriptor} (which
        the caller closes: the reactor has its own copy).
        """
        channel = MasterChannel(self)
        channel.maxBox = boxLimit(self._maxMessage)
        channel.quiet = quiet
        if descriptorsSent:
            continueDescriptorsFrom(channel, descriptorsSent)
        reactor.adoptStreamConnection(  # type: ignore[attr-defined]
            descriptor, socket.AF_UNIX, ChannelFactory(channel)
        )
        return channel

    def watchInherited(self) -> None:
        """
        Reap an inherited worker when it exits (at once, if it has).
        """
        if isinstance(self.process, InheritedProcess):
            self.process.watch()

    def requests(self) -> list[ListenRequest]:
        """
        The addresses its app listens on.
        """
        return list(self._listens.values())

    # What the channel and the process protocol report

    def _online(self, version: str | None = None) -> None:
        self.version = version
        self._lifecycle.online()

    def _ready(self) -> None:
        self.ready = True
        self._host.workerReady(self)

    def _bootFailed(self, reason: str) -> None:
        self.bootError = reason

    def _receive(self, batch: bytes) -> None:
        for message in decodeBatch(batch):
            self.messagesIn += 1
            self.emit("message", message)
            self._host.emit("message", self, message)

    def _listen(
        self, request: ListenRequest, slot: int
    ) -> tuple[socket.socket, int | None]:
        own = slot == MINE
        if not own and slot not in self._handed:
            # Only a slot the master asked it to adopt: any other would make
            # a socket on the app's port that nobody accepts on.
            raise ProtocolError(f"asked for the sockets of slot {slot}, not its own")
        if not own and slot not in self.slots[1:]:
            # Released again while it asked (its own worker came back).
            raise BindError(f"slot {slot} is served by its own worker again")
        if self.standby:
            self._host.spareListened(self)
            raise BindError("a spare worker may not listen before it is started")
        self._listens[request.key] = request
        if len(self._listens) > MAX_LISTENS:
            raise ProtocolError(f"asked for more than {MAX_LISTENS} listening sockets")
        sock = self._host.socketFor(self, request, self.slots[0] if own else slot)
        if own:
            self._lifecycle.listening(_addressOf(sock))
        return sock, self._host.distribute(self, request, sock)

    def _unlisten(self, request: ListenRequest) -> None:
        self._listens.pop(request.key, None)
        self._host.unlistened(self, request)

    def listensOn(self, key: tuple[object, ...]) -> bool:
        """
        Whether its app listens on the address of this listen request key.
        """
        return key in self._listens

    def _breached(self, why: str) -> None:
        self.brokeRules = why
        self._log.error(
            "Worker {id} (pid {pid}) {why}; killing it",
            id=self.id,
            pid=self.pid,
            why=why,
        )
        self.kill("SIGKILL")

    def _channelLost(self) -> None:
        self._channel = None
        self._lifecycle.channelLost()
        alive = self.exitCode is None and self.signal is None
        if alive and self.process is not None and self.brokeRules is None:
            # A worker exits when its channel goes; one that does not cannot
            # be supervised.
            self._orphaned = self._reactor.callLater(ORPHAN_GRACE, self._orphan)

    def _orphan(self) -> None:
        self._log.error(
            "Worker {id} (pid {pid}) lost its channel but did not exit in {s}s; "
            "killing it",
            id=self.id,
            pid=self.pid,
            s=ORPHAN_GRACE,
        )
        self.kill("SIGKILL")

    def _exited(self, exitCode: int | None, signal: str | None) -> None:
        self.exitCode, self.signal = exitCode, signal
        if self._orphaned is not None and self._orphaned.active():
            self._orphaned.cancel()
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._channel is not None and self._channel.transport is not None:
            # A worker's orphaned children might hold its end open.
            self._channel.transport.loseConnection()
        self._lifecycle.exited(exitCode, signal)

    # The lifecycle's outputs

    def _emitOnline(self) -> None:
        self._log.info("Worker {id} (pid {pid}) is online", id=self.id, pid=self.pid)
        self.emit("online")
        self._host.emit("online", self)

    def _emitListening(self, address: IAddress) -> None:
        self._log.info(
            "Worker {id} is listening on {address}", id=self.id, address=address
        )
        self._host.served(self)
        self.emit("listening", address)
        self._host.emit("listening", self, address)

    def _emitDisconnect(self) -> None:
        self._log.info("Worker {id} disconnected", id=self.id)
        self.emit("disconnect")
        self._host.emit("disconnect", self)

    def _emitDeath(self, exitCode: int | None, signal: str | None) -> None:
        self._logs.flush()
        self._log.info(
            "Worker {id} (pid {pid}) is dead: {how}",
            id=self.id,
            pid=self.pid,
            how=f"killed by {signal}" if signal else f"exit code {exitCode}",
        )
        self._host.gone(self)
        self.emit("death", exitCode, signal)
        self._host.emit("death", self, exitCode, signal)
        waiters, self._deathWaiters = self._deathWaiters, []
        for waiter in waiters:
            waiter.callback(self)


class WorkerProcessProtocol(ProcessProtocol):
    """
    Relays a worker's output to the master's log and reports its exit.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self._worker._logs.eventsReceived(data)
        elif childFD == 2:
            self._worker._logs.errorsReceived(data)

    def processExited(self, reason: Failure) -> None:
        exitCode: int | None = None
        signal: str | None = None
        if reason.check(ProcessDone):
            exitCode = 0
        elif reason.check(ProcessTerminated):
            value = cast(ProcessTerminated, reason.value)
            exitCode = value.exitCode
            if value.signal is not None:
                signal = signalName(value.signal)
        self._worker._exited(exitCode, signal)


def _figuresOf(answer: dict[str, Any]) -> dict[str, int]:
    figures = answer.get("figures")
    if not isinstance(figures, dict):
        return {}
    return {
        k: v
        for k, v in figures.items()
        if k in ("open", "accepted") and type(v) is int and v >= 0
    }


def signalName(number: int) -> str:
    """
    C{"SIGKILL"} for 9, and so on.
    """
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _addressOf(sock: socket.socket) -> IAddress:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return addresses.UNIXAddress(name)
    kind: Literal["TCP", "UDP"] = "UDP" if sock.type == socket.SOCK_DGRAM else "TCP"
    if sock.family == socket.AF_INET6:
        return addresses.IPv6Address(kind, name[0], name[1])
    return addresses.IPv4Address(kind, name[0], name[1])
