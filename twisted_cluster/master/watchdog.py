"""
Watch the workers that are up: heartbeats (a worker whose reactor stops
answering is hung) and resident memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

if TYPE_CHECKING:
    from .process import Worker

MEMORY_INTERVAL = 5.0
"""Seconds between resident-memory checks."""


class Watchdog:
    """
    Every few seconds, sends each watched worker a heartbeat and reads its
    resident memory; calls C{onHung(worker, silentSeconds)} for one that has
    not answered for C{timeout} seconds (once), and C{onFat(worker,
    megabytes)} for one over C{maxMemory} megabytes.  Zero turns a check off.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        watched: Callable[[], Iterable[Worker]],
        onHung: Callable[[Worker, float], object],
        onFat: Callable[[Worker, float], object],
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
        self._lastHeard: dict[int, float] = {}
        self._pinging: set[int] = set()
        self._hung: set[int] = set()
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

    def up(self, worker: Worker) -> None:
        """
        C{worker} is up: its silence counts from now.
        """
        self._lastHeard[worker.id] = self._reactor.seconds()

    def gone(self, worker: Worker) -> None:
        self._lastHeard.pop(worker.id, None)
        self._pinging.discard(worker.id)
        self._hung.discard(worker.id)

    def _check(self) -> None:
        now = self._reactor.seconds()
        for worker in list(self._watched()):
            if worker.id in self._hung:
                continue
            if self._timeout:
                silent = now - self._lastHeard.get(worker.id, now)
                if silent >= self._timeout:
                    self._hung.add(worker.id)
                    self._onHung(worker, silent)
                    continue
                self._ping(worker)
            if self._maxMemory and worker.pid is not None:
                megabytes = self._memoryOf(worker.pid)
                if megabytes is not None and megabytes > self._maxMemory:
                    self._onFat(worker, megabytes)

    def _ping(self, worker: Worker) -> None:
        if worker.id in self._pinging:
            return
        self._pinging.add(worker.id)

        def answered(_: object) -> None:
            self._pinging.discard(worker.id)
            self._lastHeard[worker.id] = self._reactor.seconds()

        def unanswered(_: object) -> None:
            self._pinging.discard(worker.id)

        worker.heartbeat().addCallbacks(answered, unanswered)


def residentMegabytes(pid: int) -> float | None:
    """
    The resident set of process C{pid} in megabytes, or C{None} if unknown.
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
