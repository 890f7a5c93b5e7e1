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
from .roster import Role, Roster, WorkerRecord

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
    Keeps C{count} spares (records in L{Role.spare}) of a L{Master} while
    C{wanted()} says so.

    @ivar off: whether spares are given up on (none asked for, the app
        listens while it loads, or spares keep dying).
    """

    _log = Logger()

    def __init__(
        self,
        master: Master,
        roster: Roster,
        reactor: IReactorTime,
        count: int,
        backoff: Callable[[int], float],
        wanted: Callable[[], bool],
    ) -> None:
        self._master = master
        self._roster = roster
        self._reactor = reactor
        self._count = count
        self._backoff = backoff
        self._wanted = wanted
        self._failures = 0
        self.off = count <= 0
        master.observers.append(self)

    def take(self, failures: int, bootFailures: int) -> WorkerRecord | None:
        """
        The oldest waiting spare, told to start in a free slot and marked
        starting; or C{None}.
        """
        waiting = self._roster.having(Role.spare)
        if not waiting:
            return None
        record = waiting[0]
        record.enter(Role.starting)
        record.failures, record.bootFailures = failures, bootFailures
        slot = self._master.freeSlot()
        self._log.info(
            "Spare worker {id} takes slot {slot}", id=record.id, slot=slot + 1
        )
        record.worker.start(slot).addErrback(lambda _: None)  # Its death says the rest.
        self._reactor.callLater(REFILL_DELAY, self.fill)
        return record

    def fill(self) -> None:
        """
        Start spares until there are C{count}, if they are wanted now.
        """
        if self.off or not self._wanted():
            return
        while len(self._roster.having(Role.spare)) < self._count:
            try:
                self._roster.add(self._master.spare(), Role.spare)
            except OSError as e:
                self._log.error("Cannot start a spare worker: {e}", e=e)
                return

    def drop(self, why: str) -> None:
        """
        Stop the waiting spares (they hold old code, say).
        """
        for record in self._roster.having(Role.spare):
            self._log.info("Stopping spare worker {id} ({why})", id=record.id, why=why)
            record.enter(Role.retiring)
            record.worker.kill("SIGTERM")
            # A stopped (SIGSTOP) or stuck spare does not act on SIGTERM.
            record.worker.killUnlessDead(KILL_GRACE)

    def workerUp(self) -> None:
        """
        A worker came up: spares that died before were no sign of trouble.
        """
        self._failures = 0

    def died(self, record: WorkerRecord, how: str) -> None:
        """
        A spare died before it was taken.
        """
        if not self._wanted():
            return
        self._failures += 1
        if self._failures >= FAILURES:
            self.off = True
            self._log.error(
                "Spare workers keep dying ({how}); going on without spares", how=how
            )
            return
        self._log.warn("Spare worker {id} died unused: {how}", id=record.id, how=how)
        self._reactor.callLater(self._backoff(self._failures), self.fill)

    def spareListened(self, worker: Worker) -> None:
        if not self.off:
            self.off = True
            self._log.warn(
                "The app listens while it loads, so it cannot wait as a warm spare; "
                "replacements will start cold"
            )
        self.drop("it cannot be a spare")
