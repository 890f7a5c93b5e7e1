"""
How connections reach workers: the interface every scheduling policy
implements, and what a policy sees of the master.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from ...request import ListenRequest

if TYPE_CHECKING:
    from ..listeners import Listeners
    from ..process import Worker


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

    name = Attribute("The policy's name, as C{--scheduling} takes it.")

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

    def drain() -> None:
        """
        The cluster is stopping, and no new connection is queued any more:
        hand out now what the master's sockets hold queued.
        """

    def close() -> None:
        """
        The cluster has stopped: let go of everything.
        """
