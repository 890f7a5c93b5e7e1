"""
Master-side round robin: the master accepts each connection itself and
hands it to the least busy worker, the one with the fewest open connections
it was handed, taking turns among equals (Node's cluster takes turns only).

It costs the master an accept and a descriptor pass per connection, but
balances whatever the kernel does, and by what workers hold, not only by
what they were given; use it where SO_REUSEPORT does not balance, or for
connections that live long and unevenly.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ...request import ListenRequest
from .interface import IScheduling, Pool

if TYPE_CHECKING:
    from ..process import Worker

ACCEPTS_PER_READ = 50


@implementer(IReadDescriptor)
class Distributor:
    """
    Accepts connections on one listening socket while at least one worker
    subscribes, and passes each to the least busy subscriber (fewest
    C{openConnections}), in turn among equals.  A worker that refuses one (it
    has stopped listening) is dropped and the next tried.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        sock: socket.socket,
        listenerId: int,
        available: Callable[[Worker], bool],
    ) -> None:
        self._reactor = reactor
        self._socket = sock
        self.listenerId = listenerId
        self._available = available
        self._subscribers: list[Worker] = []
        self._next = 0
        self._reading = False
        self._held: list[socket.socket] = []

    def subscribe(self, worker: Worker) -> None:
        if worker not in self._subscribers:
            self._subscribers.append(worker)
        self._update()
        held, self._held = self._held, []
        for connection in held:
            self._dispatch(connection, [])

    def unsubscribe(self, worker: Worker) -> None:
        if worker in self._subscribers:
            self._subscribers.remove(worker)
        self._update()

    def _update(self, want: bool | None = None) -> None:
        # Accept only while someone can take connections: the rest wait in
        # the kernel's backlog, not in the master.
        if want is None:
            want = any(map(self._available, self._subscribers))
        if want and not self._reading:
            self._reactor.addReader(self)
        elif not want and self._reading:
            self._reactor.removeReader(self)
        self._reading = want

    def close(self) -> None:
        """
        Stop accepting, and close what no worker took.
        """
        for worker in list(self._subscribers):
            self.unsubscribe(worker)
        held, self._held = self._held, []
        for connection in held:
            connection.close()

    def drain(self) -> None:
        """
        Accept and hand out every connection queued now (the kernel queues
        no more: the cluster is stopping).
        """
        while self._reading:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._dispatch(connection, [])

    def fileno(self) -> int:
        return self._socket.fileno()

    def logPrefix(self) -> str:
        return "RoundRobin"

    def connectionLost(self, reason: Failure) -> None:
        self._reading = False

    def doRead(self) -> None:
        for _ in range(ACCEPTS_PER_READ):
            if not any(map(self._available, self._subscribers)):
                self._update(False)  # Until a worker subscribes again.
                return
            try:
                connection, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._log.warn("Cannot accept a connection: {e}", e=e)
                return
            self._dispatch(connection, [])

    def _pick(self, tried: list[Worker]) -> Worker | None:
        # Look from the one after the last pick, so that equals take turns.
        count = len(self._subscribers)
        best: Worker | None = None
        chosen = self._next
        for n in range(count):
            index = (self._next + 1 + n) % count
            worker = self._subscribers[index]
            if worker in tried or not self._available(worker):
                continue
            if best is None or worker.openConnections < best.openConnections:
                best, chosen = worker, index
        self._next = chosen
        return best

    def _choose(self, connection: socket.socket, tried: list[Worker]) -> Worker | None:
        """
        The worker C{connection} goes to, none of C{tried}; C{None} if no
        subscriber can take it.
        """
        return self._pick(tried)

    def subscribes(self, worker: Worker) -> bool:
        """
        Whether C{worker} takes this socket's connections.
        """
        return worker in self._subscribers

    def _dispatch(self, connection: socket.socket, tried: list[Worker]) -> None:
        worker = self._choose(connection, tried)
        if worker is None:
            # Every subscriber has gone or is going: keep it for the next
            # worker that listens, as the backlog keeps the rest.
            self._held.append(connection)
            self._update(False)
            return

        # Counted now, not when the worker answers: the next connection of
        # this same read must already see it.
        worker.openConnections += 1

        def taken(_: Any) -> None:
            connection.close()  # The worker has its own descriptor now.

        def refused(failure: Failure) -> None:
            worker.openConnections -= 1
            self.unsubscribe(worker)
            self._dispatch(connection, [*tried, worker])

        worker.passConnection(self.listenerId, connection.fileno()).addCallbacks(
            taken, refused
        )


@implementer(IScheduling)
class RoundRobin:
    """
    The master accepts each TCP connection and hands it to the least busy
    worker listening there: one L{Distributor} per listening socket.
    """

    name = "roundrobin"

    def __init__(self, reactor: Any, available: Callable[[Worker], bool]) -> None:
        self._reactor = reactor
        self._available = available
        self._distributors: dict[int, Distributor] = {}

    def _distributor(self, sock: socket.socket, listenerId: int) -> Distributor:
        return Distributor(self._reactor, sock, listenerId, self._available)

    def perSlot(self, request: ListenRequest) -> bool:
        return False

    def listening(
        self, worker: Worker, request: ListenRequest, sock: socket.socket
    ) -> int | None:
        """
        Have C{worker} take C{sock}'s connections from the master (TCP only:
        UNIX and UDP sockets are shared); the listener id it will be handed
        them under.
        """
        if request.kind != "tcp":
            return None
        key = sock.fileno()
        distributor = self._distributors.get(key)
        if distributor is None:
            distributor = self._distributor(sock, key)
            self._distributors[key] = distributor
        distributor.subscribe(worker)
        return key

    def served(self, worker: Worker, pool: Pool) -> None:
        pass

    def handOff(self, leaving: Worker, pool: Pool) -> Deferred[None]:
        # The others are handed what it no longer takes, as they are anyway.
        return succeed(None)

    def forget(self, worker: Worker) -> None:
        for distributor in self._distributors.values():
            distributor.unsubscribe(worker)

    def unlistened(self, worker: Worker, sock: socket.socket) -> None:
        """
        Hand C{worker} no more of C{sock}'s connections.
        """
        distributor = self._distributors.get(sock.fileno())
        if distributor is not None:
            distributor.unsubscribe(worker)

    def closing(self, sock: socket.socket) -> None:
        """
        Stop accepting on C{sock}: it is about to close.
        """
        distributor = self._distributors.pop(sock.fileno(), None)
        if distributor is not None:
            distributor.close()

    def drain(self) -> None:
        for distributor in self._distributors.values():
            distributor.drain()

    def close(self) -> None:
        for distributor in self._distributors.values():
            distributor.close()
        self._distributors.clear()
