"""
Messages between master and workers: JSON values, never code, sent in
batches.

Every message sent in one turn of the reactor travels in one AMP command as
one JSON array, so a burst of small messages costs one round trip, not one
each; order is kept, and a message of any size still fits (the command's
argument is split over as many AMP values as it needs).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

MAX_BATCH = 1024 * 1024
"""Characters of JSON after which a batch goes at once, not at the end of the turn."""


# One encoder for all: json.dumps with options builds a new one each call.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def encodeMessage(message: object) -> bytes:
    """
    Encode C{message} as JSON.

    @raise TypeError: if JSON cannot encode it (NaN and infinities included,
        as they are not JSON).
    """
    try:
        return _encode(message).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot send {type(message).__name__} message: {e}") from None


def decodeBatch(batch: bytes) -> list[object]:
    """
    The messages of a batch that L{Batcher} made, in order.
    """
    messages: list[object] = json.loads(batch)
    return messages


Deliver = Callable[[bytes], "Deferred[object]"]
"""Send one batch; the result fires once the other side has it."""


class Batcher:
    """
    Collects the messages sent in one reactor turn into one batch.

    @param deliver: sends a batch, or raises if the channel is gone.
    """

    def __init__(self, reactor: IReactorTime, deliver: Deliver) -> None:
        self._reactor = reactor
        self._deliver = deliver
        self._messages: list[str] = []
        self._waiters: list[Deferred[None]] = []
        self._size = 0

    def send(self, message: object) -> Deferred[None]:
        """
        Queue C{message}; the result fires once the other side has it.

        @raise TypeError: if JSON cannot encode C{message}.
        """
        # encodeMessage, inline: this is the hot path of a burst of sends.
        try:
            text = _encode(message)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"cannot send {type(message).__name__} message: {e}"
            ) from None
        if not self._messages:
            self._reactor.callLater(0, self.flush)
        self._messages.append(text)
        self._size += len(text) + 1
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._size >= MAX_BATCH:
            self.flush()
        return d

    def flush(self) -> None:
        """
        Send what is queued now.
        """
        if not self._messages:
            return
        batch = ("[" + ",".join(self._messages) + "]").encode()
        waiters = self._waiters
        self._messages, self._waiters, self._size = [], [], 0
        try:
            sent = self._deliver(batch)
        except Exception:
            sent = Deferred()
            sent.errback(Failure())

        def delivered(_: object) -> None:
            for waiter in waiters:
                waiter.callback(None)

        def failed(failure: Failure) -> None:
            for waiter in waiters:
                waiter.errback(failure)

        sent.addCallbacks(delivered, failed)
