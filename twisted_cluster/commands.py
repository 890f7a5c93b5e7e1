"""
The AMP commands spoken between the master and its workers.

Each worker has one channel: a UNIX socketpair whose child end the worker
inherits as file descriptor 3.  Only data crosses it; a listening socket is
passed as an L{amp.Descriptor}, never as anything that could run code.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, FirstError, succeed
from twisted.internet.error import ConnectionClosed, ConnectionLost
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from .internals import ampKeyBeingRead, dropAMPBoxBeingRead
from .limits import MAX_MESSAGE_SIZE, boxLimit
from .request import ListenRequest

CHANNEL_FD = 3
"""The descriptor number of the worker's end of its channel."""

LIFELINE_FD = 4
"""The descriptor number of the pipe that reads end-of-file when the master dies."""

WORKER_ID_ENV = "TWISTED_CLUSTER_WORKER_ID"
"""A process is a worker exactly when this environment variable is set."""

WORKER_SLOT_ENV = "TWISTED_CLUSTER_WORKER_SLOT"
"""Tells a worker its slot, 1..N (none for a spare until it is started)."""

MAX_MESSAGE_ENV = "TWISTED_CLUSTER_MAX_MESSAGE"
"""Tells a worker the largest message, in bytes of JSON, either side takes."""


class BigBytes(amp.Argument):
    """
    A byte string of any size.

    AMP limits one value to 65,535 bytes, so a longer string is split over
    the keys C{name}, C{name.1}, C{name.2}, ... of the same box.
    """

    chunkSize = 0xFFFF

    def toBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: object,
    ) -> None:
        value: bytes = objects[name.decode("ascii")]
        size = self.chunkSize
        strings[name] = value[:size]
        for index, start in enumerate(range(size, len(value), size), 1):
            strings[b"%s.%d" % (name, index)] = value[start : start + size]

    def fromBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: object,
    ) -> None:
        parts = [strings[name]]
        index = 1
        while (key := b"%s.%d" % (name, index)) in strings:
            parts.append(strings[key])
            index += 1
        objects[name.decode("ascii")] = b"".join(parts)


class JSON(amp.Argument):
    """
    A JSON value (data only: never a pickle or code), up to AMP's 65,535
    bytes.
    """

    def toString(self, inObject: Any) -> bytes:
        return json.dumps(inObject, separators=(",", ":")).encode()

    def fromString(self, inString: bytes) -> Any:
        return json.loads(inString)


class ListenFailed(Exception):
    """
    The master could not create the listening socket a worker asked for.
    """


class Request(amp.Argument):
    """
    A L{ListenRequest}, as one value.
    """

    def toString(self, inObject: ListenRequest) -> bytes:
        return inObject.toBytes()

    def fromString(self, inString: bytes) -> ListenRequest:
        return ListenRequest.fromBytes(inString)


OWN_SLOT = -1
"""The slot in a L{Listen} for the sockets of the asking worker's own slot."""


class Listen(amp.Command):
    """
    Worker to master: give me the shared listening socket for this listen
    call.  The master binds it on first request and keeps it for the life of
    the cluster; every worker making the same call gets the same socket.
    """

    arguments = [
        (b"request", Request()),
        (b"slot", amp.Integer()),  # which worker slot's socket; OWN_SLOT: the asker's
    ]
    response = [
        (b"descriptor", amp.Descriptor()),
        (b"family", amp.Integer()),
        # When the master accepts and hands connections over (Connection),
        # the listener id they come under; absent when the worker accepts.
        (b"listener", amp.Integer(optional=True)),
    ]
    errors = {ListenFailed: b"LISTEN_FAILED"}


class Unlisten(amp.Command):
    """
    Worker to master: the app stopped listening on this address (in its own
    time, not because the worker is leaving); a socket nobody else listens on
    is closed, so new connections are refused, as after a plain
    C{stopListening}.
    """

    arguments = [(b"request", Request())]
    response = []


class Online(amp.Command):
    """
    Worker to master: I am running (sent as soon as the channel is up), the
    twisted-cluster C{version} I loaded.
    """

    arguments = [(b"version", amp.Unicode(optional=True))]
    response = []


class Ready(amp.Command):
    """
    Worker to master: the application I run has started (sent by the
    C{.tac} bootstrap once its services have started).
    """

    arguments = []
    response = []


class BootFailed(amp.Command):
    """
    Worker to master: I could not start, for this reason (one line).
    """

    arguments = [(b"reason", amp.Unicode())]
    response = []


class Message(amp.Command):
    """
    Either way: a batch of messages, as one JSON array.  The answer says it
    arrived.
    """

    arguments = [(b"batch", BigBytes())]
    response = []


ACTIVATED_ENV = "TWISTED_CLUSTER_ACTIVATED"
"""Tells a worker the addresses of the sockets systemd passed the master, in
their order (a JSON list of listen requests), for C{systemd:} endpoints."""

STANDBY_ENV = "TWISTED_CLUSTER_STANDBY"
"""Set for a spare: it loads the app, then waits for L{Start}."""


class Start(amp.Command):
    """
    Master to a spare worker: start the app you have loaded, in slot
    C{slot}.  Answered at once; L{Ready} follows when the app has started.
    """

    arguments = [(b"slot", amp.Integer())]
    response = []


class Adopt(amp.Command):
    """
    Master to worker: serve worker slot C{slot}'s sockets too, beside your
    own (its worker has gone, or is leaving).  Answered once you do.
    """

    arguments = [(b"slot", amp.Integer())]
    response = []


class Release(amp.Command):
    """
    Master to worker: stop serving slot C{slot}'s sockets (its new worker
    serves them now).
    """

    arguments = [(b"slot", amp.Integer())]
    response = []


class NotListening(Exception):
    """
    The worker no longer takes connections for that listener.
    """


class Connection(amp.Command):
    """
    Master to worker: a connection the master accepted on listener
    C{listener} (the id its L{Listen} answer gave); yours now.
    """

    arguments = [(b"listener", amp.Integer()), (b"descriptor", amp.Descriptor())]
    response = []
    errors = {NotListening: b"NOT_LISTENING"}


class Closed(amp.Command):
    """
    Worker to master: C{count} of the connections you handed me (by
    L{Connection}) have closed since I last said.  Sent at most once per turn.
    """

    arguments = [(b"count", amp.Integer())]
    response = []
    requiresAnswer = False


class Heartbeat(amp.Command):
    """
    Master to worker: are you there?  Answered by the worker's reactor, so a
    worker stuck in a blocking call does not answer, with the worker's
    figures: C{{"open": connections open now, "accepted": connections
    accepted so far}}.
    """

    arguments = []
    response = [(b"figures", JSON(optional=True))]


class Metrics(amp.Command):
    """
    Master to worker: your app's metrics, C{prometheus_client}'s default
    registry in Prometheus' text format (empty where the app does not use
    C{prometheus_client}).
    """

    arguments = []
    response = [(b"text", BigBytes())]


class Quiesce(amp.Command):
    """
    Master to worker: the master is about to replace its code in place.
    Answer once every question you asked has its answer, then ask nothing
    more, until L{Resume}: what the master has read of the channel then ends
    at a box's end, and a new master image can read on from there.
    """

    arguments = []
    response = []


class Resume(amp.Command):
    """
    Master to worker (the new image, or the old one if the upgrade did not
    happen): ask again; what you held back goes now.
    """

    arguments = []
    response = []


class Disconnect(amp.Command):
    """
    Master to worker: stop accepting, finish what you have, then exit.
    Worker to master: I am doing so, of my own accord.
    """

    arguments = []
    response = []


class Channel(amp.AMP):
    """
    AMP between the master and one worker.  It does not log its connection
    coming and going: the worker's lifecycle, logged by the master, says so.

    A box may hold at most C{maxBox} bytes: past that, L{breach} is called
    and nothing more is read, so the other side cannot make this one hold
    more.

    @ivar maxBox: the most bytes of keys and values in one box.
    """

    maxBox = boxLimit(MAX_MESSAGE_SIZE)

    def __init__(self) -> None:
        super().__init__()
        self._boxBytes = 0
        self.broken: str | None = None
        # The questions out, and who waits for their answers (L{whenAnswered}).
        self._asking = 0
        self._answering: list[Deferred[None]] = []

    def callRemote(self, commandType: Any, *a: Any, **kw: Any) -> Any:
        asked = super().callRemote(commandType, *a, **kw)
        if asked is not None:
            self._asking += 1
            asked.addBoth(self._answered)
        return asked

    def _answered(self, result: object) -> object:
        self._asking -= 1
        if not self._asking:
            waiting, self._answering = self._answering, []
            for d in waiting:
                d.callback(None)
        return result

    def whenAnswered(self) -> Deferred[None]:
        """
        Fires once every question asked so far has its answer (or failed):
        then nothing this side asked is in flight.
        """
        if not self._asking:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._answering.append(d)
        return d

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None

    def proto_key(self, string: bytes) -> str:
        if not string:
            self._boxBytes = 0
        return str(super().proto_key(string))

    def proto_value(self, string: bytes) -> str:
        key = ampKeyBeingRead(self) or b""
        self._boxBytes += len(key) + len(string) + 4
        if self._boxBytes > self.maxBox:
            self.breach(f"sent a box over {self.maxBox} bytes")
            return "value"
        return str(super().proto_value(string))

    def lengthLimitExceeded(self, length: int) -> None:
        self.breach(f"sent bytes that are not AMP (a key of {length} bytes)")

    def breach(self, why: str) -> None:
        """
        The other side broke the channel's rules (C{why} says how): stop
        reading it at once, forget what it sent, and drop the connection.
        """
        if self.broken is not None:
            return
        self.broken = why
        dropAMPBoxBeingRead(self)
        self._boxBytes = 0
        self.pauseProducing()
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def push(self) -> None:
        """
        Write what the transport holds now rather than on the reactor's next
        turn, so that the other side can read a long burst while this side is
        still sending it.
        """
        transport: Any = self.transport
        if (
            transport is not None
            and transport.connected
            and not transport.disconnecting
        ):
            # As the reactor would when the socket is writable.  A write error
            # leaves the data buffered and the reactor, writing it next, meets
            # the same error and closes the connection as usual.
            transport.doWrite()


def channelGone(failure: Failure) -> bool:
    """
    Whether C{failure} only says the channel closed (the other end is
    going), however deep in a L{FirstError} it lies: no news, no log.
    """
    error: Any = failure.value
    while isinstance(error, FirstError):
        error = error.subFailure.value
    return isinstance(error, ConnectionClosed | ConnectionLost)


class ChannelFactory(Factory):
    """
    Gives C{adoptStreamConnection} the channel protocol that already exists.
    """

    def __init__(self, channel: amp.AMP) -> None:
        self._channel = channel

    def buildProtocol(self, addr: object) -> amp.AMP:
        return self._channel
