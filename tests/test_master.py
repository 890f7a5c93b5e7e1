"""
Unit tests of the master's parts: events, restart policy, log relay, framing.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import succeed
from twisted.logger import LogLevel, eventAsJSON
from twisted.protocols import amp
from twisted.test import iosim
from zope.interface.verify import verifyObject

from twisted_cluster.commands import BigBytes, Listen, Online, Ready
from twisted_cluster.master.logs import WorkerLogRelay
from twisted_cluster.master.master import Master
from twisted_cluster.master.process import IWorkerHost
from twisted_cluster.master.restart import RestartPolicy
from twisted_cluster.request import ListenRequest

from .fakes import FakeProcessReactor


def test_eventsInOrderOncePerWorker(tmp_path) -> None:
    """
    fork, online, listening, disconnect, death: once each, in order, and the
    worker leaves workers when death fires.
    """
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})
    seen: list[tuple[object, ...]] = []
    for event in ["fork", "online", "listening", "disconnect", "exit"]:
        master.on(event, lambda *args, e=event: seen.append((e, *args)))
    worker = master.fork()
    assert worker.state == "none"
    process = reactor.processes[0]
    process.call(Online)
    assert worker.state == "online"
    process.call(
        Listen,
        request=ListenRequest(
            "unix", path=str(tmp_path / "s.sock"), backlog=5, mode=0o600
        ),
        slot=-1,
    )
    assert worker.state == "listening"
    inWorkers = []
    master.on("death", lambda w, code, sig: inWorkers.append(w.id in master.workers))
    process.exit(signal="SIGKILL")
    assert [s[0] for s in seen] == ["fork", "online", "listening", "disconnect", "exit"]
    assert seen[-1] == ("exit", worker, None, "SIGKILL")
    assert inWorkers == [False]
    assert worker.state == "dead" and worker.isDead()
    assert not worker.exitedAfterDisconnect
    master.listeners.close()


def test_idsNeverReused() -> None:
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})
    first = master.fork()
    reactor.processes[0].exit(code=1)
    assert master.fork().id == first.id + 1


def test_forkEnvironment() -> None:
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={"BASE": "1", "OVER": "old"})
    master.fork(env={"OVER": "new"})
    env = reactor.processes[0].env
    assert env["BASE"] == "1" and env["OVER"] == "new"
    assert env["TWISTED_CLUSTER_WORKER_ID"] == "1"


def test_setupMasterChangesArgv() -> None:
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})
    master.setupMaster(exec="", execArgv=["-m", "mod"], args=["--x"])
    master.fork()
    assert reactor.processes[0].argv[1:] == ["-m", "mod", "--x"]


@pytest.mark.parametrize("draw,expected", [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2)])
def test_jitterBounds(draw: float, expected: float) -> None:
    policy = RestartPolicy(initialDelay=1.0, jitter=0.2, random=lambda: draw)
    assert policy.delay(1) == pytest.approx(expected)


def test_delayCapped() -> None:
    policy = RestartPolicy(initialDelay=1.0, maxDelay=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_logRelay() -> None:
    """
    Worker events are re-published with the worker's id; raw standard error
    lines become warnings; split records are joined.
    """
    published: list[dict] = []
    relay = WorkerLogRelay(7, observer=published.append)
    event = {
        "log_format": "hello {who}",
        "who": "world",
        "log_level": LogLevel.info,
        "log_namespace": "app",
        "log_time": 1.0,
    }
    record = b"\x1e" + eventAsJSON(event).encode() + b"\n"
    relay.eventsReceived(record[:10])
    assert published == []
    relay.eventsReceived(record[10:] + b"\x1e")
    assert published[0]["log_system"] == "worker 7: app#info"
    relay.errorsReceived(b"Fatal Python error: Aborted\npartial")
    relay.flush()
    texts = [e.get("line") for e in published[1:]]
    assert texts == ["Fatal Python error: Aborted", "partial"]


class Echo(amp.Command):
    arguments = [(b"data", BigBytes())]
    response = [(b"data", BigBytes())]


class Echoer(amp.AMP):
    @Echo.responder
    def echo(self, data: bytes) -> dict:
        return {"data": data}


@pytest.mark.parametrize("size", [0, 1, 0xFFFF, 0x10000, 16 * 1024 * 1024 + 3])
def test_bigBytesRoundTrip(size: int) -> None:
    """
    Values past AMP's 64 KiB limit cross intact.
    """
    client, server, pump = iosim.connectedServerAndClient(Echoer, amp.AMP)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    results: list = []
    client.callRemote(Echo, data=data).addBoth(results.append)
    pump.flush()
    assert results[0]["data"] == data


def test_messagesAreJSON() -> None:
    from twisted_cluster.messages import encodeMessage

    assert json.loads(encodeMessage({"a": [1, None, "é"]})) == {"a": [1, None, "é"]}
    with pytest.raises(TypeError, match="cannot send set"):
        encodeMessage({1, 2})
    with pytest.raises(TypeError):
        encodeMessage(float("nan"))
    circular: list = []
    circular.append(circular)
    with pytest.raises(TypeError, match="Circular"):
        encodeMessage(circular)
    assert encodeMessage(2**70) == b"1180591620717411303424"


def test_refusedMessageLeavesNoTrace() -> None:
    """
    A value refused part-way through does not taint the next send of the
    same objects (the circular-reference check forgets what it saw).
    """
    from twisted.internet.task import Clock

    from twisted_cluster.messages import Batcher, decodeBatch

    sent: list[bytes] = []
    clock = Clock()
    batcher = Batcher(clock, lambda b: sent.append(b) or succeed(None))
    inner = [1]
    message = [inner, {"bad": object()}]
    with pytest.raises(TypeError, match="cannot send list"):
        batcher.send(message)
    message.pop()
    batcher.send(message)
    clock.advance(0)
    assert [decodeBatch(b) for b in sent] == [[[[1]]]]


def test_batchesPerTurnInOrder() -> None:
    """
    The messages sent in one turn travel as one batch; each send fires when
    the batch is delivered; the next turn makes a new batch.
    """
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from twisted_cluster.messages import Batcher, decodeBatch

    clock = Clock()
    sent: list[tuple[bytes, Deferred]] = []

    def deliver(batch: bytes) -> Deferred:
        d: Deferred = Deferred()
        sent.append((batch, d))
        return d

    batcher = Batcher(clock, deliver)
    results = [batcher.send(n) for n in range(3)]
    with pytest.raises(TypeError):
        batcher.send(object())
    assert sent == []
    clock.advance(0)
    assert [decodeBatch(b) for b, _ in sent] == [[0, 1, 2]]
    assert not any(r.called for r in results)
    sent[0][1].callback(None)
    assert all(r.called for r in results)
    batcher.send("next")
    clock.advance(0)
    assert decodeBatch(sent[1][0]) == ["next"]


def test_longBurstGoesInSeveralBatchesAtOnce() -> None:
    """
    A burst past L{BATCH_SIZE} is sent, and pushed out, batch by batch as it
    is made, not at the end of the turn; order holds across the batches.
    """
    from twisted.internet.task import Clock

    from twisted_cluster.messages import BATCH_SIZE, Batcher, decodeBatch

    clock = Clock()
    events: list[object] = []

    def deliver(batch: bytes):
        events.append(decodeBatch(batch))
        return succeed(None)

    batcher = Batcher(clock, deliver, lambda: events.append("push"))
    message = "x" * (BATCH_SIZE // 4)
    results = [batcher.send([n, message]) for n in range(10)]
    assert [e if e == "push" else [m[0] for m in e] for e in events] == [
        [0, 1, 2, 3],
        "push",
        [4, 5, 6, 7],
        "push",
    ]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert [m[0] for m in events[-1]] == [8, 9]  # type: ignore[union-attr]
    assert all(r.called for r in results)
    assert clock.getDelayedCalls() == []


def test_batchFailureFailsEachSend() -> None:
    from twisted.internet.task import Clock

    from twisted_cluster.messages import Batcher

    def deliver(batch: bytes):
        raise ConnectionError("gone")

    clock = Clock()
    batcher = Batcher(clock, deliver)
    results = [batcher.send(n) for n in range(2)]
    clock.advance(0)
    failures: list = []
    for r in results:
        r.addErrback(failures.append)
    assert [f.check(ConnectionError) for f in failures] == [ConnectionError] * 2


def test_slotLeftWithNobodyIsAdopted() -> None:
    """
    Under reuseport, a slot whose worker went when no other could adopt it
    (the rest were leaving) is served by the next worker that listens.
    """
    from twisted_cluster.request import ListenRequest

    reactor = FakeProcessReactor()
    master = Master(reactor, environ={}, scheduling="reuseport")
    request = ListenRequest("tcp", "127.0.0.1", 0)
    a = master.fork()
    master.fork()
    for process in reactor.processes:
        process.call(Online)
        process.call(Listen, request=request, slot=-1)
    assert master.listeners.slotNumbers == {0, 1}
    a.exitedAfterDisconnect = True  # leaving: it may not adopt
    reactor.processes[1].exit(signal="SIGKILL")  # slot 1: nobody to adopt it
    reactor.processes[0].exit(code=0)
    c = master.fork()
    assert c.slots == [0]
    newcomer = reactor.processes[2]
    newcomer.call(Online)
    newcomer.call(Listen, request=request, slot=-1)
    newcomer.pump.flush()
    assert "Adopt" in newcomer.peer.received
    assert c.slots == [0, 1]
    master.listeners.close()


def test_publicEventsAreNodesOnly(tmp_path) -> None:
    """
    C{cluster.on()} sees Node's events only: a worker's app starting, a
    failed listen and a spare's early listen reach the master's observers,
    not its public emitter.
    """
    from twisted_cluster.master.observer import WorkerObserver
    from twisted_cluster.request import ListenRequest

    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})
    emitted: list[str] = []
    emit = master.emit
    master.emit = lambda name, *args: (emitted.append(name), emit(name, *args))[1]

    class Seen(WorkerObserver):
        def __init__(self):
            self.calls = []

        def workerReady(self, worker):
            self.calls.append(("ready", worker.id))

        def listenFailed(self, worker, reason):
            self.calls.append(("listenFailed", worker.id))

        def spareListened(self, worker):
            self.calls.append(("spareListened", worker.id))

    seen = Seen()
    master.observers.append(seen)
    worker = master.fork()
    process = reactor.processes[0]
    process.call(Online)
    process.call(Ready)
    with pytest.raises(Exception, match="cannot listen"):
        missing = str(tmp_path / "missing" / "s.sock")
        process.call(Listen, request=ListenRequest("unix", path=missing), slot=-1)
    spare = master.spare()
    reactor.processes[1].call(Online)
    with pytest.raises(Exception, match="spare"):
        reactor.processes[1].call(
            Listen, request=ListenRequest("tcp", "127.0.0.1", 0), slot=-1
        )
    for p in reactor.processes:
        p.exit(code=0)
    assert seen.calls == [
        ("ready", worker.id),
        ("listenFailed", worker.id),
        ("spareListened", spare.id),
    ]
    node = {"fork", "online", "listening", "message", "disconnect", "death", "setup"}
    assert set(emitted) <= node, set(emitted) - node
    master.listeners.close()


def test_aWorkerReachesItsMasterThroughItsHostAlone() -> None:
    """
    A worker handle is built with an L{IWorkerHost} and a reactor, and
    touches no other part of the master: it holds no reference to it.
    """
    master = Master(FakeProcessReactor(), environ={})
    worker = master.fork()
    host = worker._host
    assert verifyObject(IWorkerHost, host)
    assert master not in vars(worker).values()


def test_slotsAreOneToNAndReused() -> None:
    """
    Workers get slots 1..N, told in their environment; a replacement of a
    dead worker gets its slot; a spare has none until it is started.
    """
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})
    first, second = master.fork(), master.fork()
    assert (first.slot, second.slot) == (1, 2)
    assert reactor.processes[0].env["TWISTED_CLUSTER_WORKER_SLOT"] == "1"
    spare = master.spare()
    assert spare.slot is None
    assert "TWISTED_CLUSTER_WORKER_SLOT" not in reactor.processes[2].env
    reactor.processes[0].exit(signal="SIGKILL")
    assert master.fork().slot == 1
