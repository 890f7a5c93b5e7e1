"""
Keep a number of workers running: replace the dead, give up on an app that
cannot start, and stop them all when the service stops.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .master import Master
from .process import Worker
from .restart import RestartPolicy


class ClusterService(Service):
    """
    Supervises C{count} workers of a L{Master}.

    A worker counts as up once it says its application has started.  A
    worker that dies before that failed to boot: if no worker ever came up,
    or too many replacements in a row fail the same way, the app cannot run
    and C{onFatal} is called with the reason, once.  So it is when the
    master cannot bind an address.

    @ivar fatalError: the reason given to C{onFatal}, if it was called.
    """

    _log = Logger()

    def __init__(
        self,
        master: Master,
        count: int,
        reactor: IReactorTime,
        onFatal: Callable[[str], object],
        policy: RestartPolicy | None = None,
        killTimeout: float = 10.0,
    ) -> None:
        self.master = master
        self.count = count
        self.policy = policy if policy is not None else RestartPolicy()
        self.killTimeout = killTimeout
        self.fatalError: str | None = None
        self._reactor = reactor
        self._onFatal = onFatal
        self._everUp = False
        self._upSince: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._bootFailures: dict[int, int] = {}
        self._pendingRestarts: list[IDelayedCall] = []
        master.on("ready", self._workerReady)
        master.on("death", self._workerDied)
        master.on("listenError", self._listenError)

    def startService(self) -> None:
        super().startService()
        self._log.info(
            "Starting {count} worker{s}",
            count=self.count,
            s="" if self.count == 1 else "s",
        )
        for _ in range(self.count):
            self._fork(failures=0, bootFailures=0)

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker (C{SIGTERM}, then C{SIGKILL} after C{killTimeout}
        seconds) and close the shared sockets; fires when all are gone.
        """
        super().stopService()
        for call in self._pendingRestarts:
            if call.active():
                call.cancel()
        self._pendingRestarts.clear()
        workers = list(self.master.workers.values())
        for worker in workers:
            worker.kill("SIGTERM")
        deaths = DeferredList([w.whenDead() for w in workers])
        killer = self._reactor.callLater(self.killTimeout, self._killAll, workers)

        def stopped(_: object) -> None:
            if killer.active():
                killer.cancel()
            self.master.listeners.close()

        return deaths.addCallback(stopped)

    def _killAll(self, workers: list[Worker]) -> None:
        for worker in workers:
            if not worker.isDead():
                self._log.warn(
                    "Worker {id} did not stop in {timeout}s; killing it",
                    id=worker.id,
                    timeout=self.killTimeout,
                )
                worker.kill("SIGKILL")

    def _fork(self, failures: int, bootFailures: int) -> None:
        try:
            worker = self.master.fork()
        except OSError as e:
            self._fatal(f"cannot start a worker: {e}")
            return
        self._failures[worker.id] = failures
        self._bootFailures[worker.id] = bootFailures

    def _workerReady(self, worker: Worker) -> None:
        self._everUp = True
        self._upSince[worker.id] = self._reactor.seconds()
        self._bootFailures[worker.id] = 0

    def _workerDied(
        self, worker: Worker, exitCode: int | None, signal: str | None
    ) -> None:
        upSince = self._upSince.pop(worker.id, None)
        failures = self._failures.pop(worker.id, 0)
        bootFailures = self._bootFailures.pop(worker.id, 0)
        if not self.running or self.fatalError is not None:
            return
        how = f"was killed by {signal}" if signal else f"exited with code {exitCode}"
        if upSince is None:
            reason = worker.bootError or f"worker {worker.id} {how} before it started"
            bootFailures += 1
            if not self._everUp or bootFailures >= self.policy.maxBootFailures:
                self._fatal(reason)
                return
            self._log.error(
                "Worker {id} could not start ({n} in a row): {reason}",
                id=worker.id,
                n=bootFailures,
                reason=reason,
            )
        uptime = None if upSince is None else self._reactor.seconds() - upSince
        failures = self.policy.failuresAfter(failures, uptime)
        delay = self.policy.delay(failures)
        self._log.warn(
            "Worker {id} (pid {pid}) {how}; starting a replacement in {delay:.2f}s",
            id=worker.id,
            pid=worker.pid,
            how=how,
            delay=delay,
        )
        if delay <= 0:
            self._fork(failures, bootFailures)
        else:
            call = self._reactor.callLater(delay, self._restart, failures, bootFailures)
            self._pendingRestarts.append(call)

    def _restart(self, failures: int, bootFailures: int) -> None:
        self._pendingRestarts = [c for c in self._pendingRestarts if c.active()]
        self._fork(failures, bootFailures)

    def _listenError(self, worker: Worker, reason: str) -> None:
        self._fatal(reason)

    def _fatal(self, reason: str) -> None:
        if self.fatalError is not None:
            return
        self.fatalError = reason
        self._log.critical("Stopping the cluster: {reason}", reason=reason)
        self._onFatal(reason)
