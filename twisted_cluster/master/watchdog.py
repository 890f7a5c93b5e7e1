"""
Watch the workers that are up: heartbeats (a worker whose reactor stops
answering is hung) and resident memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from .roster import Recycle, WorkerRecord
from .usage import residentMegabytes

MEMORY_INTERVAL = 5.0
"""Seconds between resident-memory checks."""


class Watchdog:
    """
    Every few seconds, sends each watched worker a heartbeat and reads its
    resident memory.  One that has not answered for C{timeout} seconds is
    marked hung (L{WorkerRecord.hung}) and C{onHung(record)} called, once;
    one over C{maxMemory} megabytes is marked for recycling
    (L{WorkerRecord.recycle}) and C{onFat(record)} called.  Zero turns a
    check off.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        watched: Callable[[], Iterable[WorkerRecord]],
        onHung: Callable[[WorkerRecord], object],
        onFat: Callable[[WorkerRecord], object],
        timeout: float = 0.0,
        maxMemory: float = 0.0,
        memoryOf: Callable[[int], float | None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._watched = watched
        self._onHung = onHung
        self._onFat = onFat
        self._timeout = timeout
        self._maxMemory = maxMemory
        self._memoryOf = memoryOf if memoryOf is not None else residentMegabytes
        self._loop = LoopingCall(self._check)
        self._loop.clock = reactor

    def start(self) -> None:
        intervals = []
        if self._timeout:
            intervals.append(min(self._timeout / 3, MEMORY_INTERVAL))
        if self._maxMemory:
            intervals.append(MEMORY_INTERVAL)
        if intervals:
            self._loop.start(min(intervals), now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        now = self._reactor.seconds()
        for record in list(self._watched()):
            if record.hung is not None:
                continue
            if self._timeout:
                heard = now if record.lastHeard is None else record.lastHeard
                silent = now - heard
                if silent >= self._timeout:
                    record.hung = silent
                    self._onHung(record)
                    continue
                self._ping(record)
            pid = record.worker.pid
            if self._maxMemory and pid is not None and record.recycle is None:
                megabytes = self._memoryOf(pid)
                if megabytes is not None and megabytes > self._maxMemory:
                    record.recycle = Recycle(
                        "memory",
                        f"{megabytes:.0f} MB resident, over {self._maxMemory:g} MB",
                    )
                    self._onFat(record)

    def _ping(self, record: WorkerRecord) -> None:
        if record.pinging:
            return
        record.pinging = True

        sent = self._reactor.seconds()

        def answered(figures: dict[str, int]) -> None:
            record.pinging = False
            now = record.lastHeard = self._reactor.seconds()
            record.figures.heard(figures, roundTrip=now - sent)

        def unanswered(_: object) -> None:
            record.pinging = False

        record.worker.heartbeat().addCallbacks(answered, unanswered)
