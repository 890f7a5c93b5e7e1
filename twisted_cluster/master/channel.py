"""
The master's end of a worker's channel: the commands a worker may send, and
the rules it must keep.

A worker is not trusted with the master's memory or descriptors.  A box is
bounded (L{Channel.maxBox}); a descriptor the master did not ask for (it
never asks a worker for one) is closed at once; what a worker sends must be
the protocol, valid JSON where JSON is due; and a worker that does not read
its end stops being read, so it cannot make the master queue answers.  A
worker that breaks a rule is cut off and killed, with one log line saying
why, and the supervisor replaces it as after any crash.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import fail, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from ..commands import (
    BootFailed,
    Channel,
    Closed,
    Disconnect,
    Listen,
    ListenFailed,
    Message,
    Online,
    Ready,
    Unlisten,
)
from ..request import ListenRequest
from .listeners import BindError

if TYPE_CHECKING:
    from .process import Worker


class Quiet(Exception):
    """
    The channel is quiet: the master is handing it to its next image.
    """


class MasterChannel(Channel):
    """
    The master's end of a worker's channel.

    @ivar quiet: whether it asks nothing (the master is replacing its code:
        an answer would reach the new image, which never asked).
    """

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker
        self.quiet = False

    def callRemote(self, commandType: Any, *a: Any, **kw: Any) -> Any:
        if self.quiet:
            return fail(
                Quiet(f"not asking {commandType.__name__}: the master is upgrading")
            )
        return super().callRemote(commandType, *a, **kw)

    def connectionMade(self) -> None:
        # While the worker leaves what we write unread, read nothing of it
        # either: it cannot make us hold more than one buffer of answers.
        transport: Any = self.transport
        transport.registerProducer(_ReadingFollowsWriting(transport), True)

    def breach(self, why: str) -> None:
        first = self.broken is None
        super().breach(why)
        if first:
            self._worker._breached(why)

    # What a worker may not send at all

    def fileDescriptorReceived(self, descriptor: int) -> None:
        os.close(descriptor)
        self.breach("sent a file descriptor the master did not ask for")

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if self.broken is not None:
            return
        try:
            super().ampBoxReceived(box)
        except Exception as e:
            self.breach(f"sent a box that is not the protocol ({_oneLine(e)})")

    def locateResponder(self, name: bytes) -> Any:
        responder = super().locateResponder(name)
        if responder is None:
            self.breach(f"sent an unknown command {name[:64]!r}")
            return _ignore

        def guarded(box: amp.AmpBox) -> Any:
            return maybeDeferred(responder, box).addErrback(self._refused, name)

        return guarded

    def _refused(self, failure: Failure, name: bytes) -> amp.AmpBox | Failure:
        if failure.check(amp.RemoteAmpError):
            return failure  # One of the command's own errors, for the worker.
        error: Any = failure.value
        self.breach(f"sent a {name[:64]!r} the master cannot take: {_oneLine(error)}")
        # The connection is being cut: an answer rather than an error, which
        # AMP would log.
        return amp.AmpBox()

    # The commands

    @Online.responder
    def online(self, version: str | None = None) -> dict[str, Any]:
        self._worker._online(None if version is None else version[:64])
        return {}

    @Ready.responder
    def ready(self) -> dict[str, Any]:
        self._worker._ready()
        return {}

    @Disconnect.responder
    def disconnecting(self) -> dict[str, Any]:
        self._worker.exitedAfterDisconnect = True
        return {}

    @BootFailed.responder
    def bootFailed(self, reason: str) -> dict[str, Any]:
        self._worker._bootFailed(reason[:4096])
        return {}

    @Closed.responder
    def closed(self, count: int) -> dict[str, Any]:
        self._worker.openConnections = max(0, self._worker.openConnections - count)
        return {}

    @Message.responder
    def message(self, batch: bytes) -> dict[str, Any]:
        self._worker._receive(batch)
        return {}

    @Listen.responder
    def listen(self, request: ListenRequest, slot: int) -> dict[str, Any]:
        try:
            sock, listener = self._worker._listen(request, slot)
        except BindError as e:
            raise ListenFailed(str(e)) from None
        # The socket stays open in the master, as the descriptor must until
        # the worker has it.
        return {
            "descriptor": sock.fileno(),
            "family": int(sock.family),
            "listener": listener,
        }

    @Unlisten.responder
    def unlisten(self, request: ListenRequest) -> dict[str, Any]:
        self._worker._unlisten(request)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._worker._channelLost()


@implementer(IPushProducer)
class _ReadingFollowsWriting:
    """
    Registered as the producer of a channel's transport, so that reading
    from it stops while what is written to it waits.  (Not the protocol
    itself: its own C{resumeProducing} would parse again, within the same
    read, what it is parsing.)
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


def _ignore(box: amp.AmpBox) -> amp.AmpBox:
    return amp.AmpBox()


def _oneLine(e: BaseException) -> str:
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
