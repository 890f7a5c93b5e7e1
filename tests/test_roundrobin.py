"""
The master's round robin, against fake workers.
"""

from __future__ import annotations

import socket

from twisted.internet.defer import fail, succeed
from twisted.internet.testing import MemoryReactor

from twisted_cluster.master.roundrobin import Distributor


class FakeWorker:
    def __init__(self, name: str, refuse: bool = False) -> None:
        self.name = name
        self.refuse = refuse
        self.got: list[int] = []

    def passConnection(self, listener: int, descriptor: int):
        if self.refuse:
            return fail(ConnectionError("not listening"))
        self.got.append(listener)
        return succeed(None)


def test_inTurnSkippingRefusers() -> None:
    reactor = MemoryReactor()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    listening.setblocking(False)
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
