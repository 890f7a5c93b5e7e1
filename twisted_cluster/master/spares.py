"""
Warm spares: workers that have loaded the app and wait for a slot, so that
a replacement serves in moments instead of after a Python start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .observer import IWorkerObserver, WorkerObserver

if TYPE_CHECKING:
    from .master import Master
    from .process import Worker

FAILURES = 3
"""Spares dying unused this many times in a row turn spares off."""

KILL_GRACE = 5.0
"""Seconds a spare told to stop gets before it is killed."""

REFILL_DELAY = 1.0
"""Seconds after a spare is taken before the next one starts (the taken
one gets the CPU first)."""


@implementer(IWorkerObserver)
class Spares(WorkerObserver):
    """
    Keeps C{count} spares of a L{Master} while C{wanted()} says so.

    @ivar off: whether spares are given up on (none asked for, the app
        listens while it loads, or spares keep dying).
    """

    _log = Logger()

    def __init__(
        self,
        master: Master,
        reactor: IReactorTime,
        count: int,
        backoff: Callable[[int], float],
        wanted: Callable[[], bool],
    ) -> None:
        self._master = master
        self._reactor = reactor
        self._count = count
        self._backoff = backoff
        self._wanted = wanted
        self._waiting: list[Worker] = []
        self._dropped: set[int] = set()
        self._failures = 0
        self.off = count <= 0
        master.observers.append(self)

    def __contains__(self, worker: Worker) -> bool:
        return worker in self._waiting or worker.id in self._dropped

    def take(self) -> Worker | None:
        """
        A waiting spare, told to start in a free slot; or C{None}.
        """
        if not self._waiting:
            return None
        spare = self._waiting.pop(0)
        slot = self._master._freeSlot()
        self._log.info("Spare worker {id} takes slot {slot}", id=spare.id, slot=slot)
        spare.start(slot).addErrback(lambda _: None)  # Its death says the rest.
        self._reactor.callLater(REFILL_DELAY, self.fill)
        return spare

    def fill(self) -> None:
        """
        Start spares until there are C{count}, if they are wanted now.
        """
        if self.off or not self._wanted():
            return
        while len(self._waiting) < self._count:
            try:
                self._waiting.append(self._master.spare())
            except OSError as e:
                self._log.error("Cannot start a spare worker: {e}", e=e)
                return

    def drop(self, why: str) -> None:
        """
        Stop the waiting spares (they hold old code, say).
        """
        spares, self._waiting = self._waiting, []
        for spare in spares:
            self._log.info("Stopping spare worker {id} ({why})", id=spare.id, why=why)
            self._dropped.add(spare.id)
            spare.kill("SIGTERM")
            # A stopped (SIGSTOP) or stuck spare does not act on SIGTERM.
            spare.killUnlessDead(KILL_GRACE)

    def workerUp(self) -> None:
        """
        A worker came up: spares that died before were no sign of trouble.
        """
        self._failures = 0

    def died(self, spare: Worker, exitCode: int | None, signal: str | None) -> None:
        """
        A spare died before it was taken.
        """
        if spare.id in self._dropped:
            self._dropped.discard(spare.id)
            return
        self._waiting.remove(spare)
        if not self._wanted():
            return
        self._failures += 1
        how = spare.bootError or (
            f"killed by {signal}" if signal else f"exit code {exitCode}"
        )
        if self._failures >= FAILURES:
            self.off = True
            self._log.error(
                "Spare workers keep dying ({how}); going on without spares", how=how
            )
            return
        self._log.warn("Spare worker {id} died unused: {how}", id=spare.id, how=how)
        self._reactor.callLater(self._backoff(self._failures), self.fill)

    def spareListened(self, worker: Worker) -> None:
        if not self.off:
            self.off = True
            self._log.warn(
                "The app listens while it loads, so it cannot wait as a warm spare; "
                "replacements will start cold"
            )
        self.drop("it cannot be a spare")
