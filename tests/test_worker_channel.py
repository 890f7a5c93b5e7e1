"""
A worker's end of its channel (twisted_cluster/worker/channel.py) against a
pretend master over an in-memory AMP connection (iosim), on a fake clock.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.test import iosim

from twisted_cluster.commands import (
    Adopt,
    Connection,
    Disconnect,
    Heartbeat,
    Message,
    NotListening,
    Start,
)
from twisted_cluster.messages import encodeMessage
from twisted_cluster.worker.channel import ThisWorker


class PretendMaster(amp.AMP):
    """
    The master's end: records what the worker tells it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[str] = []

    def locateResponder(self, name: bytes) -> Any:
        def respond(box: amp.AmpBox) -> amp.AmpBox:
            self.heard.append(name.decode())
            if name == b"Listen":
                raise amp.RemoteAmpError(b"LISTEN_FAILED", "served by its own again")
            return amp.AmpBox()

        return respond


class Harness:
    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.worker = ThisWorker(self.reactor, 7)
        self.master = PretendMaster()
        transport = iosim.makeFakeServer(self.master)
        # Descriptors pass ahead of the bytes that name them, as on a socket.
        transport.sendFileDescriptor = lambda fd: (
            self.worker._channel.fileDescriptorReceived(os.dup(fd))
        )
        self.pump = iosim.connect(
            self.master,
            transport,
            self.worker._channel,
            iosim.makeFakeClient(self.worker._channel),
            greet=False,
        )

    def call(self, command: type[amp.Command], **kw: Any) -> Any:
        results: list[Any] = []
        self.master.callRemote(command, **kw).addBoth(results.append)
        self.pump.flush()
        self.reactor.advance(0)
        self.pump.flush()
        assert results, f"{command.__name__} not answered"
        return results[0]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_heartbeatAnsweredWithFigures(h: Harness) -> None:
    assert h.call(Heartbeat) == {"figures": {"open": 0, "accepted": 0}}


def test_messagesDeliveredInOrder(h: Harness) -> None:
    seen: list[object] = []
    h.worker.on("message", seen.append)
    batch = b"[" + b",".join(encodeMessage(m) for m in [1, "two", {"3": 3}]) + b"]"
    answered: list[object] = []
    h.master.callRemote(Message, batch=batch).addCallback(answered.append)
    h.pump.flush()
    assert answered == [{}] and seen == []  # answered first, delivered after
    h.reactor.advance(0)
    assert seen == [1, "two", {"3": 3}]


def test_sendReachesTheMaster(h: Harness) -> None:
    sent = h.worker.send({"hello": "master"})
    h.reactor.advance(0)
    h.pump.flush()
    assert h.master.heard == ["Message"]
    h.pump.flush()
    assert sent.called


def test_connectionForNoListenerRefused(h: Harness) -> None:
    """
    A connection for a listener this worker does not serve is refused (the
    master hands it to another) and its descriptor closed.
    """
    read, write = os.pipe()
    try:
        results: list[Any] = []
        h.master.callRemote(Connection, listener=99, descriptor=read).addBoth(
            results.append
        )
        h.pump.flush()
        (failure,) = results
        assert failure.check(NotListening)
    finally:
        os.close(write)
        try:
            os.close(read)
        except OSError:
            pass


def test_disconnectStopsAcceptingThenTheReactor(h: Harness) -> None:
    said: list[str] = []
    h.worker.on("disconnect", lambda: said.append("disconnect"))
    assert h.call(Disconnect) == {}
    assert said == ["disconnect"]
    assert h.worker.isDisconnecting() and h.worker.exitedAfterDisconnect
    assert h.worker.ports.leaving
    # Not yet running: the stop waits for the reactor to run.
    assert h.reactor.whenRunningHooks


def test_adoptWhileLeavingIsANoOp(h: Harness) -> None:
    h.call(Disconnect)
    assert h.call(Adopt, slot=3) == {}
    assert 3 not in h.worker.ports._slots


def test_startFiresOnTheNextTurn(h: Harness) -> None:
    started: list[int] = []
    h.worker.whenStarted().addCallback(started.append)
    h.master.callRemote(Start, slot=2)
    h.pump.flush()
    assert started == []
    h.reactor.advance(0)
    assert started == [2]


def test_adoptOfASlotTakenBackIsNoError(h: Harness) -> None:
    """
    When the master refuses a slot's socket (its own worker came back while
    this one asked), the Adopt is answered, not failed: an error AMP does
    not know would make the master drop the channel.
    """
    from twisted.internet.protocol import Factory

    from twisted_cluster.request import ListenRequest

    h.worker.ports._tcp.append((ListenRequest("tcp", "127.0.0.1", 8080), Factory()))
    assert h.call(Adopt, slot=0) == {}
    assert h.master.heard == ["Listen"]
    assert 0 not in h.worker.ports._slots
    assert not h.worker._channel.transport.disconnecting
