"""
Adopted listening ports in a worker, on real sockets and a memory reactor.
"""

from __future__ import annotations

import socket

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock

from twisted_cluster.worker.listening import ACCEPTS_PER_WAKEUP, _SharedTCPPort


def test_burstNotTakenWhole() -> None:
    """
    A worker takes at most ACCEPTS_PER_WAKEUP connections of a burst at one
    wake-up, however many wait and however its port's own count has grown,
    and the rest at the next.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    burst = 3 * ACCEPTS_PER_WAKEUP + 2
    clients = [socket.create_connection(listener.getsockname()) for _ in range(burst)]
    accepted: list[Protocol] = []

    class Counting(Factory):
        def buildProtocol(self, addr: object) -> Protocol:
            accepted.append(Protocol())
            return accepted[-1]

    port = _SharedTCPPort._fromListeningDescriptor(
        MemoryReactorClock(), listener.fileno(), socket.AF_INET, Counting()
    )
    port.startListening()
    try:
        seen = []
        for _ in range(4):
            port.numberAccepts = 1000
            port.doRead()
            seen.append(len(accepted))
        assert seen == [
            ACCEPTS_PER_WAKEUP,
            2 * ACCEPTS_PER_WAKEUP,
            3 * ACCEPTS_PER_WAKEUP,
            burst,
        ]
    finally:
        for p in accepted:
            p.transport.socket.close()  # type: ignore[union-attr]
        port.socket.close()
        listener.close()
        for c in clients:
            c.close()
