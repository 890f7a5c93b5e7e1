"""
The master's round robin, against fake workers.
"""

from __future__ import annotations

import socket

from twisted.internet.defer import fail, succeed
from twisted.internet.testing import MemoryReactor

from twisted_cluster.master.scheduling.roundrobin import Distributor

from .support import listeningSocket


class FakeWorker:
    def __init__(
        self, name: str, refuse: bool = False, order: list[str] | None = None
    ) -> None:
        self.name = name
        self.refuse = refuse
        self.got: list[int] = []
        self.order = [] if order is None else order
        self.openConnections = 0

    def passConnection(self, listener: int, descriptor: int):
        if self.refuse:
            return fail(ConnectionError("not listening"))
        self.got.append(listener)
        self.order.append(self.name)
        return succeed(None)


def test_inTurnSkippingRefusers() -> None:
    reactor = MemoryReactor()
    listening = listeningSocket()
    a, b, c = FakeWorker("a"), FakeWorker("b", refuse=True), FakeWorker("c")
    distributor = Distributor(reactor, listening, 7, lambda w: True)
    assert distributor not in reactor.getReaders()
    for worker in (a, b, c):
        distributor.subscribe(worker)  # type: ignore[arg-type]
    assert distributor in reactor.getReaders()
    clients = [socket.create_connection(listening.getsockname()) for _ in range(6)]
    distributor.doRead()
    assert len(a.got) + len(c.got) == 6 and abs(len(a.got) - len(c.got)) <= 1
    assert a.got[0] == 7
    # b refused, so it is dropped; with no one left, the master stops accepting.
    distributor.unsubscribe(a)  # type: ignore[arg-type]
    distributor.unsubscribe(c)  # type: ignore[arg-type]
    assert distributor not in reactor.getReaders()
    for s in clients:
        s.close()
    listening.close()


def test_leastBusyFirstInTurnAmongEquals() -> None:
    """
    Each connection goes to the worker with the fewest open connections it
    was handed; equals take turns; a refused connection is not counted.
    """
    listening = listeningSocket()
    order: list[str] = []
    a, b, c = (FakeWorker(name, order=order) for name in "abc")
    a.openConnections, b.openConnections, c.openConnections = 3, 0, 1
    distributor = Distributor(MemoryReactor(), listening, 1, lambda w: True)
    for worker in (a, b, c):
        distributor.subscribe(worker)  # type: ignore[arg-type]
    clients = [socket.create_connection(listening.getsockname()) for _ in range(5)]
    distributor.doRead()
    # b catches up with c, then b and c take turns until a's 3 is reached.
    assert order == ["b", "c", "b", "c", "b"]
    assert [w.openConnections for w in (a, b, c)] == [3, 3, 3]
    # b's connections close: the next go to b.
    b.openConnections = 0
    clients += [socket.create_connection(listening.getsockname()) for _ in range(2)]
    distributor.doRead()
    assert order[5:] == ["b", "b"]
    # A worker that refuses gives its count back.
    c.refuse = True
    c.openConnections = 0
    clients.append(socket.create_connection(listening.getsockname()))
    distributor.doRead()
    assert c.openConnections == 0
    assert order[7:] == ["b"]
    for s in clients:
        s.close()
    listening.close()


def test_heldWhileNoWorkerTakesThem() -> None:
    """
    A connection no subscriber can take (each refuses, or is going) is held,
    not dropped, and the master stops accepting; the next worker to
    subscribe gets it, and accepting resumes.
    """
    reactor = MemoryReactor()
    listening = listeningSocket()
    going = FakeWorker("going", refuse=True)
    available = {going: True}
    distributor = Distributor(reactor, listening, 7, lambda w: available[w])
    distributor.subscribe(going)  # type: ignore[arg-type]
    client = socket.create_connection(listening.getsockname())
    distributor.doRead()  # going refuses it: no one else
    assert distributor not in reactor.getReaders()
    late = socket.create_connection(listening.getsockname())
    fresh = FakeWorker("fresh")
    available[fresh] = True
    distributor.subscribe(fresh)  # type: ignore[arg-type]
    assert fresh.got == [7]  # the one held
    assert distributor in reactor.getReaders()
    distributor.doRead()
    assert fresh.got == [7, 7]  # and the one the backlog kept
    available[fresh] = False  # retiring
    other = socket.create_connection(listening.getsockname())
    distributor.doRead()
    assert fresh.got == [7, 7] and distributor not in reactor.getReaders()
    for s in (client, late, other):
        s.close()
    distributor.close()
    listening.close()
