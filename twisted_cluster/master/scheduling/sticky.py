"""
Sticky sessions: round robin, except that the connections of one client
address (its IP address, not its port) keep going to the worker that got the
first of them, for as long as that worker lives and takes connections.

For apps whose sessions live in one process: WebSockets and Socket.IO-style
long polling, C{twisted.web} sessions.  A new address goes to the least busy
worker, as under round robin; when its worker goes (or stops taking
connections, or refuses one), the address is forgotten and its next
connection goes to another, which it then sticks to.

The master remembers at most L{Affinity.limit} addresses, the least recently
seen forgotten first, and a worker's addresses are forgotten when it goes: a
flood of addresses cannot grow the master's memory without bound.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorFDSet
from zope.interface import implementer

from .interface import IScheduling
from .roundrobin import Distributor, RoundRobin

if TYPE_CHECKING:
    from ..process import Worker


class Affinity:
    """
    Which worker each client address sticks to; bounded, least recently seen
    forgotten first.

    @ivar limit: the most addresses remembered.
    """

    limit = 65536

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None:
            self.limit = limit
        self._workers: OrderedDict[str, Worker] = OrderedDict()
        self._addresses: dict[Worker, set[str]] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, address: str) -> Worker | None:
        """
        The worker C{address} sticks to, if any (and it is now the most
        recently seen).
        """
        worker = self._workers.get(address)
        if worker is not None:
            self._workers.move_to_end(address)
        return worker

    def stick(self, address: str, worker: Worker) -> None:
        """
        Send C{address} to C{worker} from now on.
        """
        self._drop(address)
        self._workers[address] = worker
        self._addresses.setdefault(worker, set()).add(address)
        while len(self._workers) > self.limit:
            self._drop(next(iter(self._workers)))

    def forget(self, worker: Worker) -> None:
        """
        Forget every address that sticks to C{worker}.
        """
        for address in self._addresses.pop(worker, set()):
            del self._workers[address]

    def _drop(self, address: str) -> None:
        worker = self._workers.pop(address, None)
        if worker is None:
            return
        addresses = self._addresses[worker]
        addresses.discard(address)
        if not addresses:
            del self._addresses[worker]


def clientAddress(connection: socket.socket) -> str | None:
    """
    The IP address C{connection} comes from; C{None} if it has none (a UNIX
    socket) or is gone already.
    """
    if connection.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        address: str = connection.getpeername()[0]
    except OSError:
        return None
    return address


class StickyDistributor(Distributor):
    """
    A L{Distributor} that hands the connections of one client address to
    one worker, while it takes them.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        sock: socket.socket,
        listenerId: int,
        available: Callable[[Worker], bool],
        affinity: Affinity,
    ) -> None:
        super().__init__(reactor, sock, listenerId, available)
        self._affinity = affinity

    def _choose(self, connection: socket.socket, tried: list[Worker]) -> Worker | None:
        address = clientAddress(connection)
        if address is None:
            return self._pick(tried)
        worker = self._affinity.get(address)
        if worker is not None and worker not in tried and self._available(worker):
            if self.subscribes(worker):
                return worker
            # It takes connections, but not on this socket: it keeps the
            # address for the sockets it does serve.
            return self._pick(tried)
        chosen = self._pick(tried)
        if chosen is not None:
            self._affinity.stick(address, chosen)
        return chosen


@implementer(IScheduling)
class Sticky(RoundRobin):
    """
    Round robin with sticky client addresses, one L{Affinity} for all the
    cluster's listening sockets (a client's HTTP and WebSocket ports go to
    one worker).  UNIX and UDP sockets are shared, as under round robin.
    """

    name = "sticky"

    def __init__(
        self,
        reactor: Any,
        available: Callable[[Worker], bool],
        affinity: Affinity | None = None,
    ) -> None:
        super().__init__(reactor, available)
        self.affinity = Affinity() if affinity is None else affinity

    def _distributor(self, sock: socket.socket, listenerId: int) -> Distributor:
        return StickyDistributor(
            self._reactor, sock, listenerId, self._available, self.affinity
        )

    def forget(self, worker: Worker) -> None:
        super().forget(worker)
        self.affinity.forget(worker)
