"""
The cluster's status as one JSON document: a row per worker, the master's
row and the cluster's state, for C{twisted-cluster status} and metrics.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from .. import __version__
from .roster import Role, WorkerRecord
from .usage import cpuSeconds, residentBytes

if TYPE_CHECKING:
    from .supervisor import ClusterService

STATES = {
    "starting": "starting",
    "running": "serving",
    "reloading": "reloading",
    "upgrading": "upgrading",
    "draining": "draining",
    "stopping": "stopping",
    "failed": "stopping",
}
"""The cluster's state as the status says it (contract §5)."""


class Status:
    """
    Reads a L{ClusterService}'s records into a status document.  CPU is
    the percentage of one core used since the last document (or since the
    process started, in the first).
    """

    def __init__(
        self,
        service: ClusterService,
        clock: IReactorTime,
        cpuOf: Callable[[int], float | None] = cpuSeconds,
        rssOf: Callable[[int], int | None] = residentBytes,
        pid: int | None = None,
    ) -> None:
        self._service = service
        self._clock = clock
        self._cpuOf = cpuOf
        self._rssOf = rssOf
        self._pid = os.getpid() if pid is None else pid
        self._startedAt = clock.seconds()
        # The last CPU reading of each process: (when, CPU seconds).
        self._lastCPU: dict[int, tuple[float, float]] = {}

    def _cpuPercent(self, pid: int, since: float) -> float | None:
        used = self._cpuOf(pid)
        if used is None:
            return None
        now = self._clock.seconds()
        then, before = self._lastCPU.get(pid, (since, 0.0))
        self._lastCPU[pid] = (now, used)
        if now <= then:
            return 0.0
        return round(max(0.0, used - before) / (now - then) * 100, 1)

    def document(self) -> dict[str, Any]:
        """
        The status now: C{{"state", "count", "scheduling", "master",
        "workers"}}, each worker a row of L{row}.
        """
        service = self._service
        live = list(service.roster)
        pids = {r.worker.pid for r in live} | {self._pid}
        for gone in set(self._lastCPU) - pids:
            del self._lastCPU[gone]
        now = self._clock.seconds()
        return {
            "state": STATES[service.state.value],
            "count": service.count,
            "scheduling": service.master.scheduling.name,
            "master": {
                "pid": self._pid,
                "uptime": round(now - service.startedAt, 1),
                "generation": service.generation,
                "version": __version__,
                "cpu": self._cpuPercent(self._pid, self._startedAt),
                "rss": self._rssOf(self._pid),
            },
            "workers": [self.row(r) for r in live],
        }

    def row(self, record: WorkerRecord) -> dict[str, Any]:
        """
        One worker: id, slot, pid, state, uptime (since its app started, or
        since it was forked while starting), restarts of its slot, CPU %,
        resident bytes, open and accepted connections, messages each way and
        the last heartbeat's round trip in milliseconds.
        """
        worker = record.worker
        since = record.upSince if record.upSince is not None else record.bornAt
        pid = worker.pid
        trip = record.figures.roundTrip
        return {
            "id": worker.id,
            "slot": worker.slot,
            "pid": pid,
            "state": record.state,
            "uptime": round(self._clock.seconds() - since, 1),
            "restarts": (
                0
                if record.role is Role.spare
                else self._service.roster.restartsOf(record.slot)
            ),
            "cpu": None if pid is None else self._cpuPercent(pid, record.bornAt),
            "rss": None if pid is None else self._rssOf(pid),
            "open": record.figures.open,
            "accepted": record.figures.accepted,
            "messagesIn": worker.messagesIn,
            "messagesOut": worker.messagesOut,
            "version": worker.version,
            "heartbeatMs": None if trip is None else round(trip * 1000, 2),
        }
