"""
Hostile channel input, fuzzed with hypothesis against the master's end of
a worker's channel (real AMP over iosim, on a fake process reactor): bytes
that are not AMP, unknown commands, known commands with wrong or oversize
values, invalid JSON, bogus answers, descriptors, boxes cut mid-way.

Whatever a worker sends, nothing escapes the master's protocol, the master
holds no more than the bound, closes every descriptor it did not ask for,
and either goes on serving the worker or cuts it off and kills it, with one
log line and no traceback.
"""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from twisted_cluster.master.master import Master

from .fakes import FakeProcessReactor

COMMANDS = [
    b"Message",
    b"Listen",
    b"Unlisten",
    b"Online",
    b"Ready",
    b"BootFailed",
    b"Closed",
    b"Disconnect",
    b"TakeOver",
    b"",
]
KEYS = [b"_command", b"_ask", b"_answer", b"_error", b"batch", b"request", b"slot"]
KEYS += [b"reason", b"count", b"_error_code", b"_error_description", b"batch.1"]


def pair(key: bytes, value: bytes) -> bytes:
    return struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value


values = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(COMMANDS),
    st.integers(-(2**40), 2**40).map(lambda n: str(n).encode()),
    st.sampled_from([b"[]", b"[1,2]", b"{}", b"[", b"null", b'["x"]' * 3]),
    st.sampled_from(
        [
            b'{"kind":"tcp","interface":"127.0.0.1","port":0,"path":"",'
            b'"backlog":50,"mode":438,"occurrence":0,"wantPID":false}',
            b'{"kind":"sctp"}',
            b'{"kind":"tcp","interface":"","port":99999,"path":"","backlog":5,'
            b'"mode":1,"occurrence":0,"wantPID":false}',
        ]
    ),
    st.integers(0, 70_000).map(lambda n: b"v" * n),
)
boxes = st.lists(st.tuples(st.sampled_from(KEYS) | st.binary(max_size=20), values))


@st.composite
def chunk(draw):
    kind = draw(st.sampled_from(["box", "bytes", "cut", "descriptors"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "descriptors":
        return draw(st.integers(1, 5))
    data = b"".join(pair(k[:255], v[:65535]) for k, v in draw(boxes)) + b"\0\0"
    if kind == "cut":
        return data[: draw(st.integers(0, len(data)))]
    return data


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(chunk(), max_size=12))
# An Online asked with an empty key: the master answers it.
@example([b"\x00\x08_command\x00\x06Online\x00\x04_ask\x00\x00\x00\x00"])
def test_hostileChannelInput(chunks) -> None:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        reactor = FakeProcessReactor()
        master = Master(reactor, environ={})
        worker = master.fork()
        process = reactor.processes[0]
        channel = worker._channel
        channel.maxBox = 100_000
        before = len(os.listdir("/proc/self/fd"))
        raw = process.pump.clientIO
        # The bytes are written as if by the worker, so the master's answers
        # to questions the fuzz asked reach a peer that asked none: it is a
        # sink here, not under test.
        process.peer._answerReceived = lambda box: None
        process.peer._errorReceived = lambda box: None
        for data in chunks:
            if isinstance(data, int):
                for _ in range(data):
                    channel.fileDescriptorReceived(os.dup(0))
                continue
            raw.write(data)
            process.pump.flush()
            assert channel._boxBytes <= channel.maxBox
            box = channel._currentBox
            if box is not None:
                assert sum(len(k) + len(v) for k, v in box.items()) <= channel.maxBox
        reactor.advance(10)
        process.pump.flush()
        assert len(os.listdir("/proc/self/fd")) == before
        failures = [e for e in events if "log_failure" in e]
        assert not failures, failures[0]["log_failure"].getTraceback()
        critical = [
            e
            for e in events
            if e.get("log_level") and e["log_level"].name == "critical"
        ]
        assert not critical
        if channel.broken is not None or worker._channel is None:
            assert "KILL" in process.signals
            said = [e for e in events if "killing it" in e.get("log_format", "")]
            assert len(said) == 1
        else:
            assert process.signals == []
    finally:
        globalLogPublisher.removeObserver(events.append)
        master.listeners.close()
