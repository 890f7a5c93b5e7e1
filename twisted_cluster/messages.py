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

from .internals import compactJSONEncoder
from .limits import MAX_MESSAGE_SIZE

BATCH_SIZE = 64 * 1024
"""Characters of JSON after which a batch goes, and is written, at once rather
than at the end of the turn: the other side reads a long burst while this side
still sends it, as Node writes each message at once."""


class _Encoder:
    """
    JSON text of one message at a time, with C{json}'s C encoder kept and
    reused: C{json.dumps} and C{JSONEncoder.encode} build a new one on every
    call, half the cost of a small message.
    """

    def __init__(self) -> None:
        self.encode: Callable[[object], str]
        self._reset()

    def _reset(self) -> None:
        chunks = compactJSONEncoder(_unencodable)
        if chunks is None:  # pragma: no cover - not CPython
            self.encode = json.JSONEncoder(
                allow_nan=False, separators=(",", ":")
            ).encode
            return
        self.encode = lambda message: "".join(chunks(message, 0))

    def failed(self, message: object, error: Exception) -> TypeError:
        """
        The error to raise for C{message}, which C{encode} refused with
        C{error}.
        """
        # The refused encoding left the values it was inside in the circular
        # reference table: start afresh.
        self._reset()
        return TypeError(f"cannot send {type(message).__name__} message: {error}")


def _unencodable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODE_ERRORS = (TypeError, ValueError, RecursionError)
"""What encoding a value JSON cannot hold raises: NaN and infinities are not
JSON, circular and too deeply nested values cannot be written out."""

_encoder = _Encoder()


def encodeMessage(message: object) -> bytes:
    """
    Encode C{message} as JSON.

    @raise TypeError: if JSON cannot encode it.
    """
    try:
        return _encoder.encode(message).encode()
    except _ENCODE_ERRORS as e:
        raise _encoder.failed(message, e) from None


def decodeBatch(batch: bytes) -> list[object]:
    """
    The messages of a batch that L{Batcher} made, in order.
    """
    messages = json.loads(batch)
    if not isinstance(messages, list):
        raise ValueError(f"a batch is a JSON array, not {type(messages).__name__}")
    return messages


Deliver = Callable[[bytes], "Deferred[object]"]
"""Send one batch; the result fires once the other side has it."""


class Batcher:
    """
    Collects the messages sent in one reactor turn into one batch.

    @param deliver: sends a batch, or raises if the channel is gone.
    @param push: writes what C{deliver} has sent so far now, not when the
        reactor next gets round to it.
    @param limit: the most bytes of JSON one message may take: the other
        side cuts off a channel that sends more.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        deliver: Deliver,
        push: Callable[[], None] = lambda: None,
        limit: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.limit = limit
        self._reactor = reactor
        self._deliver = deliver
        self._push = push
        self._scheduled = False
        self._messages: list[str] = []
        self._waiters: list[Deferred[None]] = []
        self._size = 0
        self._encoder = _Encoder()

    def send(self, message: object) -> Deferred[None]:
        """
        Queue C{message}; the result fires once the other side has it.

        @raise TypeError: if JSON cannot encode C{message}.
        @raise ValueError: if its JSON is longer than C{limit}.
        """
        try:
            text = self._encoder.encode(message)
        except _ENCODE_ERRORS as e:
            raise self._encoder.failed(message, e) from None
        if len(text) > self.limit:
            raise ValueError(
                f"cannot send a message of {len(text)} bytes: the limit is "
                f"{self.limit} (--max-message-size)"
            )
        if not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self._turnEnded)
        self._messages.append(text)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        self._size += len(text) + 1
        if self._size >= BATCH_SIZE:
            self.flush()
            self._push()
        return d

    def _turnEnded(self) -> None:
        self._scheduled = False
        self.flush()

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
