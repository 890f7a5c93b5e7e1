"""
How connections reach workers: one interface, L{IScheduling}, and an
implementation per policy.

The master forks workers and knows them; what a policy decides (whether a
worker slot has a socket of its own, whether the master accepts and hands
connections over, what happens to a leaving worker's share) is asked of its
L{IScheduling} and nowhere else:

  - L{Shared}: every worker accepts on the one socket of an address;
  - L{ReusePort}: each worker slot has a TCP socket of its own on the port
    (C{SO_REUSEPORT}), and the kernel spreads connections over them; a slot
    whose worker goes is adopted by a staying worker;
  - L{twisted_cluster.master.roundrobin.RoundRobin}: the master accepts and
    hands each connection to the least busy worker;
  - L{twisted_cluster.master.sticky.Sticky}: as round robin, but a client
    address keeps going to the worker that first got it while it lives.

UNIX and UDP addresses are one shared socket under every policy.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from ..request import ListenRequest
from .listeners import REUSEPORT

if TYPE_CHECKING:
    from .listeners import Listeners
    from .process import Worker


SCHEDULING = ("reuseport", "shared", "roundrobin", "sticky")
"""The names of the policies, for C{--scheduling} and C{setupMaster}."""


class Pool(Protocol):
    """
    What a policy sees of the master: its workers and its sockets.
    """

    @property
    def workers(self) -> Mapping[int, Worker]:
        """The live workers by id."""

    @property
    def stopping(self) -> bool:
        """Whether the cluster is stopping (nothing is handed over then)."""

    @property
    def listeners(self) -> Listeners:
        """The master's listening sockets."""

    def takesConnections(self, worker: Worker) -> bool:
        """Whether C{worker} may be given connections now."""

    def unheard(self, failure: Failure, worker: Worker) -> None:
        """Log that C{worker} did not answer a command (unless it is gone)."""


class IScheduling(Interface):
    """
    A way of spreading connections over workers.  The master calls these as
    workers listen, serve, stop listening and go.
    """

    name = Attribute("The policy's name, one of L{SCHEDULING}.")

    def perSlot(request: ListenRequest) -> bool:
        """
        Whether each worker slot has a listening socket of its own for
        C{request}'s address (else every worker shares one).
        """

    def listening(
        worker: Worker, request: ListenRequest, sock: socket.socket
    ) -> int | None:
        """
        C{worker} listens on C{sock} (which it is about to get): the listener
        id under which the master will hand it connections it accepted on
        C{sock}, or C{None} when the worker accepts on C{sock} itself.
        """

    def served(worker: Worker, pool: Pool) -> None:
        """
        C{worker} now listens in its own slot: whoever stood in for that slot
        may let go, and anything left unserved may be given to it.
        """

    def handOff(leaving: Worker, pool: Pool) -> Deferred[None]:
        """
        C{leaving} is about to stop taking connections: make sure what it
        serves stays served.  Fires once it is.
        """

    def forget(worker: Worker) -> None:
        """
        Hand C{worker} no more connections: it is disconnecting, or dead.
        """

    def unlistened(worker: Worker, sock: socket.socket) -> None:
        """
        C{worker}'s app stopped listening on C{sock}; others still do.
        """

    def closing(sock: socket.socket) -> None:
        """
        C{sock} is about to be closed: nobody listens on it any more.
        """

    def close() -> None:
        """
        The cluster has stopped: let go of everything.
        """


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

    def close(self) -> None:
        pass


@implementer(IScheduling)
class ReusePort:
    """
    Each worker slot has a TCP listening socket of its own, all bound to
    one port with C{SO_REUSEPORT}, and the kernel spreads new connections
    over them.  A slot's socket outlives its worker: a staying worker adopts
    it when its worker goes, and releases it when the slot's new worker
    listens, so nothing queued there waits.
    """

    name = "reuseport"

    def perSlot(self, request: ListenRequest) -> bool:
        return request.kind == "tcp"

    def listening(
        self, worker: Worker, request: ListenRequest, sock: socket.socket
    ) -> int | None:
        return None

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

    def forget(self, worker: Worker) -> None:
        pass

    def unlistened(self, worker: Worker, sock: socket.socket) -> None:
        pass

    def closing(self, sock: socket.socket) -> None:
        pass

    def close(self) -> None:
        pass


_log = Logger()


def byName(
    name: str, reactor: object, available: Callable[[Worker], bool]
) -> IScheduling:
    """
    The policy called C{name} (one of L{SCHEDULING}).  C{reuseport} where
    C{SO_REUSEPORT} does not balance (anywhere but Linux) is C{shared}, with
    a warning.

    @param reactor: the reactor a policy that accepts in the master reads with.
    @param available: whether a worker may be handed connections now.
    @raise ValueError: for an unknown name.
    """
    # Imported here: those modules implement this module's interface.
    from .roundrobin import RoundRobin
    from .sticky import Sticky

    if name == "reuseport":
        if REUSEPORT:
            return ReusePort()
        _log.warn("SO_REUSEPORT does not balance here; sharing one socket")
        return Shared()
    if name == "shared":
        return Shared()
    if name == "roundrobin":
        return RoundRobin(reactor, available)
    if name == "sticky":
        return Sticky(reactor, available)
    raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}")
