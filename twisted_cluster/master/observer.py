"""
What the master tells its own parts about workers, apart from Node's public
events (C{cluster.on}), which carry only what Node's cluster does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface, implementer

if TYPE_CHECKING:
    from .process import Worker


class IWorkerObserver(Interface):
    """
    Told of worker events that are the cluster's business, not the app's.
    """

    def workerReady(worker: Worker) -> None:
        """
        The application C{worker} runs has started.
        """

    def listenFailed(worker: Worker, reason: str) -> None:
        """
        The master could not bind an address C{worker} asked for.
        """

    def spareListened(worker: Worker) -> None:
        """
        A spare asked to listen while it was loading its app.
        """


@implementer(IWorkerObserver)
class WorkerObserver:
    """
    An observer that does nothing: subclass it and override what matters.
    """

    def workerReady(self, worker: Worker) -> None:
        pass

    def listenFailed(self, worker: Worker, reason: str) -> None:
        pass

    def spareListened(self, worker: Worker) -> None:
        pass


class IClusterObserver(Interface):
    """
    Told of the cluster's own changes: its state, and how many serve.
    """

    def stateChanged(old: str, new: str) -> None:
        """
        The cluster went from state C{old} to C{new} (the values of
        L{twisted_cluster.master.supervisor.State}).
        """

    def servingChanged(serving: int, count: int) -> None:
        """
        C{serving} workers of the C{count} wanted now serve.
        """
