"""
The policies where the kernel spreads connections and the master touches
none: L{Shared} (one socket per address) and L{ReusePort} (one per worker
slot, C{SO_REUSEPORT}).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, gatherResults, succeed
from zope.interface import implementer

from ...request import ListenRequest
from .interface import IScheduling, Pool

if TYPE_CHECKING:
    from ..process import Worker


@implementer(IScheduling)
class Shared:
    """
    Every worker accepts on the one socket of an address; the master does
    nothing per connection, and the worker that wakes first takes what is
    queued.
    """

    name = "shared"

    def perSlot(self, request: ListenRequest) -> bool:
        return False

    def listening(
        self, worker: Worker, request: ListenRequest, sock: socket.socket
    ) -> int | None:
        return None

    def served(self, worker: Worker, pool: Pool) -> None:
        pass

    def handOff(self, leaving: Worker, pool: Pool) -> Deferred[None]:
        return succeed(None)

    def forget(self, worker: Worker) -> None:
        pass

    def unlistened(self, worker: Worker, sock: socket.socket) -> None:
        pass

    def closing(self, sock: socket.socket) -> None:
        pass

    def drain(self) -> None:
        pass  # The workers accept what is queued as they leave.

    def close(self) -> None:
        pass


@implementer(IScheduling)
class ReusePort(Shared):
    """
    Each worker slot has a TCP listening socket of its own, all bound to
    one port with C{SO_REUSEPORT}, and the kernel spreads new connections
    over them.  A slot's socket outlives its worker: a staying worker adopts
    it when its worker goes, and releases it when the slot's new worker
    listens, so nothing queued there waits.  (What it does not say, it
    does as L{Shared}: nothing.)
    """

    name = "reuseport"

    def perSlot(self, request: ListenRequest) -> bool:
        return request.kind == "tcp"

    def served(self, worker: Worker, pool: Pool) -> None:
        # Its new owner listens: whoever stood in for it can let go.
        for other in pool.workers.values():
            if other is not worker:
                other.release(worker.slots[0]).addErrback(pool.unheard, other)
        if pool.stopping:
            return
        # And it serves any slot left with nobody (its worker went when no
        # other could adopt it): the kernel still queues connections there.
        served = {
            slot
            for w in pool.workers.values()
            if pool.takesConnections(w) and w.state == "listening"
            for slot in w.slots
        }
        # A slot whose own worker is starting is not left with nobody.
        served |= {
            w.slots[0]
            for w in pool.workers.values()
            if not w.isDead() and not w.exitedAfterDisconnect
        }
        for slot in sorted(pool.listeners.slotNumbers - served):
            worker.adopt(slot).addErrback(pool.unheard, worker)

    def handOff(self, leaving: Worker, pool: Pool) -> Deferred[None]:
        if pool.stopping or leaving.standby:
            return succeed(None)
        stayers = [
            w
            for w in pool.workers.values()
            if w is not leaving and w.state == "listening" and pool.takesConnections(w)
        ]
        adoptions = []
        for slot in leaving.slots:
            if not stayers or any(slot in w.slots for w in stayers):
                continue
            heir = min(stayers, key=lambda w: len(w.slots))
            adoptions.append(heir.adopt(slot))
        return gatherResults(adoptions, consumeErrors=True).addCallback(lambda _: None)
