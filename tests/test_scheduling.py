"""
The scheduling policies, one by one, against fakes: each provides
L{IScheduling}, and each decides what only it decides.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from twisted.internet.defer import fail, succeed
from twisted.internet.testing import MemoryReactor
from zope.interface.verify import verifyObject

from twisted_cluster.commands import OWN_SLOT, Listen, Online
from twisted_cluster.master import scheduling
from twisted_cluster.master.master import Master
from twisted_cluster.master.scheduling import (
    SCHEDULING,
    IScheduling,
    ReusePort,
    Shared,
    byName,
)
from twisted_cluster.master.scheduling.roundrobin import RoundRobin
from twisted_cluster.master.scheduling.sticky import (
    Affinity,
    Sticky,
    StickyDistributor,
    clientAddress,
)
from twisted_cluster.request import ListenRequest

from .fakes import FakeProcessReactor
from .support import listeningSocket

TCP = ListenRequest("tcp", "127.0.0.1", 0)


class FakeWorker:
    """
    What a distributor sees of a worker: it is handed connections, and
    keeps the peer address of each.
    """

    def __init__(self, name: str, order: list[str] | None = None) -> None:
        self.name = name
        self.refuse = False
        self.peers: list[str] = []
        self.order = [] if order is None else order
        self.openConnections = 0

    def __repr__(self) -> str:
        return f"<FakeWorker {self.name}>"

    def passConnection(self, listener: int, descriptor: int):
        if self.refuse:
            return fail(ConnectionError("not listening"))
        peer = socket.socket(fileno=descriptor)
        try:
            name = peer.getpeername()
            self.peers.append(name[0] if isinstance(name, tuple) else name)
        finally:
            peer.detach()
        self.order.append(self.name)
        return succeed(None)


def connectFrom(address: str, listening: socket.socket) -> socket.socket:
    """
    A connection to C{listening} from C{address} (one of 127.0.0.0/8).
    """
    return socket.create_connection(
        listening.getsockname(), timeout=5, source_address=(address, 0)
    )


@pytest.mark.parametrize("name", SCHEDULING)
def test_everyPolicyByName(name: str) -> None:
    """
    Each name gives a policy that provides the whole interface, called by
    that name (reuseport where it balances, as on Linux).
    """
    policy = byName(name, MemoryReactor(), lambda w: True)
    assert verifyObject(IScheduling, policy)
    assert policy.name == name
    policy.close()


def test_unknownName() -> None:
    with pytest.raises(ValueError, match="reuseport, shared, roundrobin, sticky"):
        byName("random", MemoryReactor(), lambda w: True)


def test_reusePortFallsBackToShared(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Where SO_REUSEPORT does not balance, reuseport is shared.
    """
    monkeypatch.setattr(scheduling, "REUSEPORT", False)
    assert isinstance(byName("reuseport", MemoryReactor(), lambda w: True), Shared)


def test_perSlotOnlyReusePortTCP() -> None:
    unix = ListenRequest("unix", path="/tmp/x.sock")
    udp = ListenRequest("udp", "127.0.0.1", 53)
    reactor = MemoryReactor()
    assert ReusePort().perSlot(TCP)
    assert not ReusePort().perSlot(unix) and not ReusePort().perSlot(udp)
    for policy in (Shared(), RoundRobin(reactor, bool), Sticky(reactor, bool)):
        assert not any(map(policy.perSlot, (TCP, unix, udp)))


def test_sharedWorkersAcceptThemselves() -> None:
    """
    Under shared and reuseport the worker accepts: its listen answer has no
    listener id, and a leaving worker has nothing to hand off.
    """
    reactor = FakeProcessReactor()
    for policy in ("shared", "reuseport"):
        master = Master(reactor, environ={}, scheduling=policy)
        master.fork()
        process = reactor.processes[-1]
        process.call(Online)
        answer = process.call(Listen, request=TCP, slot=OWN_SLOT)
        assert answer["listener"] is None
        master.listeners.close()


def test_reusePortSlotsHandedOffAndReleased() -> None:
    """
    Under reuseport a leaving worker's slot is adopted by a staying one,
    which releases it once the slot's new worker listens.
    """
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={}, scheduling="reuseport")
    a, b = master.fork(), master.fork()
    for process in reactor.processes:
        process.call(Online)
        process.call(Listen, request=TCP, slot=OWN_SLOT)
    assert master.listeners.slotNumbers == {0, 1}
    assert master.listeners.perSlot(TCP)
    master.handOff(b)
    reactor.processes[0].pump.flush()
    assert a.slots == [0, 1]
    assert "Adopt" in reactor.processes[0].peer.received
    reactor.processes[1].exit(signal="SIGKILL")
    c = master.fork()
    assert c.slots == [1]
    newcomer = reactor.processes[2]
    newcomer.call(Online)
    newcomer.call(Listen, request=TCP, slot=OWN_SLOT)
    reactor.processes[0].pump.flush()
    assert a.slots == [0]
    assert "Release" in reactor.processes[0].peer.received
    master.listeners.close()


def test_reusePortHandsNothingOffWhileStopping() -> None:
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={}, scheduling="reuseport")
    a, b = master.fork(), master.fork()
    for process in reactor.processes:
        process.call(Online)
        process.call(Listen, request=TCP, slot=OWN_SLOT)
    master.stopping = True
    master.handOff(b)
    assert a.slots == [0]
    master.listeners.close()


def test_roundRobinSubscribesTCPOnly(tmp_path: Path) -> None:
    """
    Round robin accepts a TCP socket's connections in the master while a
    worker takes them (its listen answer names the listener id); a UNIX
    socket is shared, the worker accepting itself.
    """
    reactor = MemoryReactor()
    policy = RoundRobin(reactor, lambda w: True)
    listening = listeningSocket()
    worker = FakeWorker("a")
    listener = policy.listening(worker, TCP, listening)  # type: ignore[arg-type]
    assert listener == listening.fileno()
    assert len(reactor.getReaders()) == 1
    unixRequest = ListenRequest("unix", path=str(tmp_path / "s.sock"))
    assert policy.listening(worker, unixRequest, listening) is None  # type: ignore[arg-type]
    policy.unlistened(worker, listening)  # type: ignore[arg-type]
    assert not reactor.getReaders()
    policy.listening(worker, TCP, listening)  # type: ignore[arg-type]
    policy.forget(worker)  # type: ignore[arg-type]
    assert not reactor.getReaders()
    policy.listening(worker, TCP, listening)  # type: ignore[arg-type]
    policy.closing(listening)
    assert not reactor.getReaders()
    assert policy.handOff(worker, None).called  # type: ignore[arg-type]
    policy.close()
    listening.close()


def test_roundRobinListenAnswerNamesListener() -> None:
    reactor = FakeProcessReactor()
    for policy in ("roundrobin", "sticky"):
        master = Master(reactor, environ={}, scheduling=policy)
        master.fork()
        process = reactor.processes[-1]
        process.call(Online)
        answer = process.call(Listen, request=TCP, slot=OWN_SLOT)
        assert isinstance(answer["listener"], int)
        master.closeSockets()


def test_setupMasterChangesPolicy() -> None:
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})
    master.setupMaster(scheduling="sticky")
    assert master.scheduling.name == "sticky"
    policy = Shared()
    master.setupMaster(scheduling=policy)
    assert master.scheduling is policy
    with pytest.raises(ValueError):
        master.setupMaster(scheduling="fastest")


# Sticky


def stickyDistributor(
    workers: list[FakeWorker],
    available: dict[FakeWorker, bool] | None = None,
    affinity: Affinity | None = None,
) -> tuple[StickyDistributor, socket.socket, Affinity]:
    listening = listeningSocket()
    affinity = Affinity() if affinity is None else affinity
    ok = (lambda w: True) if available is None else available.__getitem__
    distributor = StickyDistributor(MemoryReactor(), listening, 3, ok, affinity)  # type: ignore[arg-type]
    for worker in workers:
        distributor.subscribe(worker)  # type: ignore[arg-type]
    return distributor, listening, affinity


def test_stickySameAddressSameWorker() -> None:
    """
    Every connection from one address goes to the worker that got its
    first, however busy; new addresses go to the least busy, in turn.
    """
    order: list[str] = []
    a, b, c = (FakeWorker(name, order) for name in "abc")
    distributor, listening, affinity = stickyDistributor([a, b, c])
    clients = [connectFrom("127.0.0.2", listening) for _ in range(10)]
    distributor.doRead()
    assert len(set(order)) == 1 and len(order) == 10
    first = order[0]
    clients += [connectFrom(f"127.0.0.{n}", listening) for n in (3, 4)]
    distributor.doRead()
    assert first not in order[10:] and len(set(order)) == 3
    clients += [connectFrom(f"127.0.0.{n}", listening) for n in (2, 3, 4, 2)]
    distributor.doRead()
    assert order[12:] == [first, order[10], order[11], first]
    assert len(affinity) == 3
    for s in clients:
        s.close()
    distributor.close()
    listening.close()


def test_stickyAddressMovesWhenItsWorkerGoes() -> None:
    """
    A worker that goes takes its addresses with it: their next connection
    goes to a worker that stays, and sticks there.
    """
    order: list[str] = []
    a, b = FakeWorker("a", order), FakeWorker("b", order)
    available = {a: True, b: True}
    affinity = Affinity()
    policy = Sticky(MemoryReactor(), available.__getitem__, affinity)  # type: ignore[arg-type]
    listening = listeningSocket()
    for worker in (a, b):
        policy.listening(worker, TCP, listening)  # type: ignore[arg-type]
    (distributor,) = policy._distributors.values()
    clients = [connectFrom("127.0.0.2", listening)]
    distributor.doRead()
    gone = a if order == ["a"] else b
    stays = b if gone is a else a
    policy.forget(gone)  # type: ignore[arg-type]
    assert len(affinity) == 0
    clients += [connectFrom("127.0.0.2", listening) for _ in range(3)]
    distributor.doRead()
    assert order[1:] == [stays.name] * 3
    assert affinity.get("127.0.0.2") is stays
    for s in clients:
        s.close()
    policy.close()
    listening.close()


def test_stickyMovesOffAWorkerThatStopsTaking() -> None:
    """
    A worker that is retiring (not available) or refuses a connection loses
    its addresses to another, which keeps them.
    """
    order: list[str] = []
    a, b, c = (FakeWorker(name, order) for name in "abc")
    available = {a: True, b: True, c: True}
    distributor, listening, affinity = stickyDistributor([a, b, c], available)
    clients = [connectFrom("127.0.0.2", listening)]
    distributor.doRead()
    (first,) = (w for w in (a, b, c) if w.name == order[0])
    available[first] = False
    clients += [connectFrom("127.0.0.2", listening) for _ in range(2)]
    distributor.doRead()
    assert order[1] != first.name and order[1:] == [order[1]] * 2
    (second,) = (w for w in (a, b, c) if w.name == order[1])
    assert affinity.get("127.0.0.2") is second
    second.refuse = True
    clients.append(connectFrom("127.0.0.2", listening))
    distributor.doRead()
    third = affinity.get("127.0.0.2")
    assert third not in (first, second) and order[-1] == third.name  # type: ignore[union-attr]
    for s in clients:
        s.close()
    distributor.close()
    listening.close()


def test_stickyAcrossListeners() -> None:
    """
    One affinity for all sockets: an address goes to its worker on another
    port too, and on a port its worker does not serve goes elsewhere
    without losing its worker.
    """
    order: list[str] = []
    a, b = FakeWorker("a", order), FakeWorker("b", order)
    affinity = Affinity()
    one, first, _ = stickyDistributor([a, b], affinity=affinity)
    clients = [connectFrom("127.0.0.2", first)]
    one.doRead()
    (owner,) = (w for w in (a, b) if w.name == order[0])
    other = b if owner is a else a
    two, second, _ = stickyDistributor([a, b], affinity=affinity)
    clients += [connectFrom("127.0.0.2", second) for _ in range(2)]
    two.doRead()
    assert order[1:] == [owner.name] * 2
    three, third, _ = stickyDistributor([other], affinity=affinity)
    clients.append(connectFrom("127.0.0.2", third))
    three.doRead()
    assert order[-1] == other.name and affinity.get("127.0.0.2") is owner
    for s in clients:
        s.close()
    for d, s in ((one, first), (two, second), (three, third)):
        d.close()
        s.close()


def test_affinityBounded() -> None:
    """
    The affinity keeps at most its limit of addresses, forgetting the least
    recently seen; a worker's addresses go with it.
    """
    a, b = FakeWorker("a"), FakeWorker("b")
    affinity = Affinity(limit=3)
    for n, worker in zip(range(3), (a, b, a), strict=True):
        affinity.stick(f"10.0.0.{n}", worker)  # type: ignore[arg-type]
    assert affinity.get("10.0.0.0") is a  # now the most recently seen
    affinity.stick("10.0.0.3", b)  # type: ignore[arg-type]
    assert len(affinity) == 3 and affinity.get("10.0.0.1") is None
    assert affinity.get("10.0.0.0") is a
    affinity.stick("10.0.0.0", b)  # type: ignore[arg-type]
    affinity.forget(b)  # type: ignore[arg-type]
    assert len(affinity) == 1 and affinity.get("10.0.0.2") is a
    affinity.forget(a)  # type: ignore[arg-type]
    assert len(affinity) == 0 and not affinity._addresses
    assert Affinity.limit == 65536


def test_floodOfAddressesBounded() -> None:
    """
    However many addresses connect, the master remembers at most the limit.
    """
    order: list[str] = []
    a, b = FakeWorker("a", order), FakeWorker("b", order)
    distributor, listening, affinity = stickyDistributor(
        [a, b], affinity=Affinity(limit=4)
    )
    clients = []
    for n in range(2, 12):
        clients.append(connectFrom(f"127.0.0.{n}", listening))
        distributor.doRead()
        clients.pop().close()
    assert len(order) == 10 and len(affinity) == 4
    distributor.close()
    listening.close()


def test_noAddressNoStickiness(tmp_path: Path) -> None:
    """
    A connection without an IP address (a UNIX socket) is handed out as
    round robin does, and remembers nothing.
    """
    path = str(tmp_path / "s.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(10)
    listening.setblocking(False)
    order: list[str] = []
    a, b = FakeWorker("a", order), FakeWorker("b", order)
    affinity = Affinity()
    distributor = StickyDistributor(
        MemoryReactor(),
        listening,
        3,
        lambda w: True,
        affinity,  # type: ignore[arg-type]
    )
    for worker in (a, b):
        distributor.subscribe(worker)  # type: ignore[arg-type]
    clients = []
    for _ in range(4):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        clients.append(client)
    connection, _ = listening.accept()
    assert clientAddress(connection) is None
    connection.close()
    distributor.doRead()
    assert order == ["b", "a", "b"] and len(affinity) == 0
    for s in clients:
        s.close()
    distributor.close()
    listening.close()
