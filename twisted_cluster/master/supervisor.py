"""
Keep a number of workers running: replace the dead and the hung, recycle
the old and the fat, reload and scale without dropping a request, give up
on an app that cannot start, and stop them all gracefully.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..request import ListenRequest
from .listeners import BindError
from .master import Master
from .observer import IWorkerObserver, WorkerObserver
from .process import Worker
from .restart import RestartPolicy, jittered
from .spares import Spares
from .watchdog import Watchdog


@dataclass(frozen=True)
class Limits:
    """
    When a worker must go, and how long it gets.

    @ivar gracefulTimeout: seconds a worker asked to stop gets to finish what
        it has before it is killed.
    @ivar timeout: seconds without a heartbeat answer after which a worker is
        taken for hung (0: never).
    @ivar bootTimeout: seconds a new worker's app may take to start before
        the worker is taken for hung (0: never).
    @ivar maxAge: seconds after which a worker is recycled (0: never).
    @ivar maxMemory: resident megabytes above which a worker is recycled
        (0: no limit).
    @ivar jitter: the fraction by which C{maxAge} varies per worker, so
        workers started together are not recycled together.
    @ivar reloadBatch: how many workers a reload replaces at a time.
    @ivar killGrace: seconds between SIGABRT and SIGKILL for a hung worker,
        and between SIGTERM and SIGKILL on an immediate stop.
    @ivar spares: how many warm spares to keep: workers that have loaded the
        app and wait, so that one replaces a dead worker (or adds one) in
        moments rather than a Python start-up.
    """

    gracefulTimeout: float = 30.0
    timeout: float = 30.0
    bootTimeout: float = 60.0
    maxAge: float = 0.0
    maxMemory: float = 0.0
    jitter: float = 0.1
    reloadBatch: int = 1
    killGrace: float = 5.0
    spares: int = 1
    random: Callable[[], float] = field(default=random.random, compare=False)


class State(Enum):
    """
    The cluster's lifecycle.  C{running} and C{reloading} both serve;
    C{failed} is stopping because the app cannot run.
    """

    starting = "starting"
    running = "running"
    reloading = "reloading"
    stopping = "stopping"
    failed = "failed"


_TRANSITIONS = {
    State.starting: {State.running, State.stopping, State.failed},
    State.running: {State.reloading, State.stopping, State.failed},
    State.reloading: {State.running, State.stopping, State.failed},
    State.stopping: set(),
    State.failed: {State.stopping},
}


class IllegalTransition(Exception):
    """
    The cluster was told to enter a state it cannot reach from where it is.
    """


_ENDING = (State.stopping, State.failed)

FLAPPING = (5, 10.0)

"""So many crashes within so many seconds are worth a louder word."""


@implementer(IWorkerObserver)
class _Observer(WorkerObserver):
    """
    Hands a L{ClusterService} what the master tells its parts.
    """

    def __init__(self, service: ClusterService) -> None:
        self._service = service

    def workerReady(self, worker: Worker) -> None:
        self._service._workerReady(worker)

    def listenFailed(self, worker: Worker, reason: str) -> None:
        self._service._listenError(worker, reason)


class ClusterService(Service):
    """
    Supervises C{count} workers of a L{Master}.

    A worker counts as up once it says its application has started.  A
    worker that dies before that failed to boot: if no worker ever came up,
    or too many replacements in a row fail the same way, the app cannot run
    and C{onFatal} is called with the reason, once.  So it is when the
    master cannot bind an address.

    @ivar fatalError: the reason given to C{onFatal}, if it was called.
    @ivar state: the cluster's L{State}.
    """

    _log = Logger()

    def __init__(
        self,
        master: Master,
        count: int,
        reactor: IReactorTime,
        onFatal: Callable[[str], object],
        policy: RestartPolicy | None = None,
        limits: Limits | None = None,
        memoryOf: Callable[[int], float | None] | None = None,
        bindAhead: Sequence[ListenRequest] = (),
    ) -> None:
        self.master = master
        self.bindAhead = tuple(bindAhead)
        self.count = count
        self.policy = policy if policy is not None else RestartPolicy()
        self.limits = limits if limits is not None else Limits()
        self.fatalError: str | None = None
        self.state = State.starting
        self._reactor = reactor
        self._onFatal = onFatal
        self._everUp = False
        self._upSince: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._bootFailures: dict[int, int] = {}
        self._crashes: deque[float] = deque(maxlen=FLAPPING[0])
        self._pendingRestarts: list[IDelayedCall] = []
        self._timers: dict[int, list[IDelayedCall]] = {}
        self._bootTimers: dict[int, IDelayedCall] = {}
        # Workers being replaced or removed on purpose: their death is no crash.
        self._retiring: set[int] = set()
        # Replacements not yet up, and the Deferred their fate fires.
        self._candidates: dict[int, Deferred[bool]] = {}
        # Workers a candidate is starting to replace: the id of the candidate.
        self._replacing: dict[int, int] = {}
        self._recycling: set[int] = set()
        self._immediate = False
        self._spares = Spares(
            master,
            reactor,
            self.limits.spares,
            self.policy.delay,
            lambda: bool(self.running) and self.state is State.running,
        )
        self._watchdog = Watchdog(
            reactor,
            self._watched,
            onHung=self._hangs,
            onFat=self._fat,
            timeout=self.limits.timeout,
            maxMemory=self.limits.maxMemory,
            memoryOf=memoryOf,
        )
        master.observers.append(_Observer(self))
        master.on("death", self._workerDied)

    # The lifecycle

    def _enter(self, state: State) -> None:
        """
        Move the cluster to C{state}.

        @raise IllegalTransition: if the cluster cannot go there from where
            it is (a bug: every caller checks first).
        """
        if state is self.state:
            return
        if state not in _TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"the cluster cannot go from {self.state} to {state}"
            )
        self._log.info("Cluster {old} -> {new}", old=self.state.value, new=state.value)
        self.state = state

    def privilegedStartService(self) -> None:
        """
        Bind the addresses of C{--bind} while this process may: twistd drops
        privileges after this and before L{startService}.
        """
        super().privilegedStartService()
        for request in self.bindAhead:
            try:
                self.master.listeners.bindAhead(request)
            except BindError as e:
                self._log.critical("{error}", error=str(e))
                raise SystemExit(f"twisted-cluster: {e}") from None

    def startService(self) -> None:
        super().startService()
        self._log.info(
            "Starting {count} worker{s}",
            count=self.count,
            s="" if self.count == 1 else "s",
        )
        for _ in range(self.count):
            self._fork(failures=0, bootFailures=0)
        self._watchdog.start()

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker and close the shared sockets; fires when all are
        gone.  Workers stop accepting at once and get C{gracefulTimeout}
        seconds to finish (after L{stopNow}, C{killGrace} seconds and no
        draining); the rest are killed.
        """
        super().stopService()
        self._enter(State.stopping)
        self.master.stopping = True
        self._watchdog.stop()
        for call in self._pendingRestarts:
            if call.active():
                call.cancel()
        self._pendingRestarts.clear()
        workers = list(self.master.workers.values())
        if self._immediate:
            timeout = self.limits.killGrace
            for worker in workers:
                worker.kill("SIGTERM")
        else:
            timeout = self.limits.gracefulTimeout
            for worker in workers:
                worker.disconnect()
        deaths = DeferredList([w.whenDead() for w in workers])
        killer = self._reactor.callLater(timeout, self._killAll, workers, timeout)

        def stopped(_: object) -> None:
            if killer.active():
                killer.cancel()
            self.master.closeSockets()
            self._log.info("All workers have stopped")

        return deaths.addCallback(stopped)

    def stopNow(self) -> None:
        """
        Make the coming stop immediate: no draining.
        """
        self._immediate = True

    def _killAll(self, workers: list[Worker], timeout: float) -> None:
        for worker in workers:
            if not worker.isDead():
                self._log.warn(
                    "Worker {id} did not stop in {timeout}s; killing it",
                    id=worker.id,
                    timeout=timeout,
                )
                worker.kill("SIGKILL")

    # Scaling and reloading

    def scaleUp(self) -> None:
        """
        One worker more.
        """
        if self.state not in (State.running, State.reloading):
            return
        self.count += 1
        self._log.info("Scaling up to {count} workers", count=self.count)
        self._fork(failures=0, bootFailures=0)

    def scaleDown(self) -> None:
        """
        One worker fewer (never fewer than one): the oldest, retired
        gracefully.
        """
        if self.state not in (State.running, State.reloading) or self.count <= 1:
            return
        self.count -= 1
        self._log.info("Scaling down to {count} workers", count=self.count)
        serving = self._serving()
        if serving:
            # The oldest, as gunicorn and circus do: the newest has the
            # freshest code and the least grown memory.
            self._retire(serving[0], "scaling down")
        self._reconcile()

    def reload(self) -> Deferred[bool]:
        """
        Replace every worker with a fresh one, C{reloadBatch} at a time, each
        old one retired only once its replacement is up.  Fires C{True} when
        done, C{False} if a replacement could not start (the old workers
        that are left keep serving).
        """
        if self.state is not State.running:
            self._log.warn(
                "Not reloading: the cluster is {state}", state=self.state.value
            )
            return succeed(False)
        self._enter(State.reloading)
        self._spares.drop("they hold the old code")
        old = self._serving()
        self._log.info(
            "Reloading: replacing {n} workers, {batch} at a time",
            n=len(old),
            batch=self.limits.reloadBatch,
        )
        done: Deferred[bool] = Deferred()

        def nextBatch(ok: object = True) -> None:
            if self.state is not State.reloading:
                done.callback(False)
                return
            if ok is not True:
                self._log.error("Reload aborted; the old workers go on serving")
                self._enter(State.running)
                self._spares.fill()
                self._reconcile()
                done.callback(False)
                return
            batch = [w for w in old if not w.isDead()][: self.limits.reloadBatch]
            for worker in batch:
                old.remove(worker)
            if not batch:
                self._log.info("Reload done")
                self._enter(State.running)
                self._spares.fill()
                self._reconcile()
                done.callback(True)
                return
            results = DeferredList([self._replace(w, "reload") for w in batch])
            results.addCallback(lambda rs: nextBatch(all(ok for _, ok in rs)))

        # Workers dying from here on are replaced in the usual way.
        self._reactor.callLater(0, nextBatch)
        return done

    def _watched(self) -> list[Worker]:
        """
        The workers that are up, retiring ones too: one that hangs while it
        drains is killed at C{timeout}, not at C{gracefulTimeout}.
        """
        return [
            w
            for w in self.master.workers.values()
            if w.id in self._upSince and not w.hung
        ]

    def _reconcile(self) -> None:
        """
        After an event, match the workers to C{count}: retire the oldest
        that are up beyond it, start those missing (races between deaths,
        reloads and scaling otherwise leave one too many or too few).
        Only while plainly running: a reload has more on purpose.
        """
        if not self.running or self.state is not State.running:
            return
        staying = [
            w
            for w in self.master.workers.values()
            if not w.isDead() and w.id not in self._retiring and w not in self._spares
        ]
        pending = sum(1 for call in self._pendingRestarts if call.active())
        missing = self.count - len(staying) - pending
        if missing < 0:
            for worker in self._serving()[:-missing]:
                self._retire(worker, f"over the count of {self.count}")
        if missing > 0:
            self._log.warn(
                "{n} worker(s) short of {count}; starting them",
                n=missing,
                count=self.count,
            )
        for _ in range(missing):
            self._fork(failures=0, bootFailures=0)

    def _serving(self) -> list[Worker]:
        """
        The workers that are up and not on their way out, oldest first.
        """
        return [
            w
            for w in self.master.workers.values()
            if w.id in self._upSince and w.id not in self._retiring and not w.hung
        ]

    def _replace(self, old: Worker, why: str) -> Deferred[bool]:
        """
        Start a replacement for C{old}; once it is up, retire C{old}.  Fires
        with whether the replacement came up.
        """
        try:
            new = self.master.fork(slot=old.slots[0])
        except OSError as e:
            self._log.error("Cannot start a replacement worker: {e}", e=e)
            return succeed(False)
        fate: Deferred[bool] = Deferred()
        self._candidates[new.id] = fate
        self._replacing[old.id] = new.id
        self._watchBoot(new)
        self._log.info(
            "Worker {new} starting to replace worker {old} ({why})",
            new=new.id,
            old=old.id,
            why=why,
        )

        def decided(up: bool) -> bool:
            self._replacing.pop(old.id, None)
            if up:
                self._retire(old, why)
                return up
            reason = new.bootError or f"worker {new.id} exited before it started"
            self._log.error(
                "Replacement worker {new} could not start: {reason}",
                new=new.id,
                reason=reason,
            )
            if old.isDead() and self.running and self.state not in _ENDING:
                # It died waiting for this one: start another, as after a crash.
                self._restartLater(failures=1, bootFailures=1)
            return up

        return fate.addCallback(decided)

    def _retire(self, worker: Worker, why: str) -> None:
        if worker.id in self._retiring or worker.isDead():
            return
        self._log.info("Retiring worker {id} ({why})", id=worker.id, why=why)
        self._retiring.add(worker.id)
        worker.retiring = True
        self._cancelTimers(worker.id)
        # Its slots stay served: someone adopts any no one else serves.
        self.master.handOff(worker).addBoth(lambda _: worker.disconnect())
        killer = self._reactor.callLater(
            self.limits.gracefulTimeout,
            self._killAll,
            [worker],
            self.limits.gracefulTimeout,
        )
        worker.whenDead().addCallback(
            lambda _: killer.cancel() if killer.active() else None
        )

    def _recycle(self, worker: Worker, why: str) -> None:
        if worker.id in self._recycling or worker.id in self._retiring:
            return
        if self.state not in (State.running, State.reloading):
            return
        self._recycling.add(worker.id)
        self._replace(worker, why)

    # Watching the workers

    def _fat(self, worker: Worker, megabytes: float) -> None:
        limit = self.limits.maxMemory
        self._recycle(worker, f"{megabytes:.0f} MB resident, over {limit:g} MB")

    def _hangs(self, worker: Worker, silent: float) -> None:
        self._log.error(
            "Worker {id} (pid {pid}) has not answered heartbeats for {silent:.1f}s; "
            "killing it (SIGABRT, then SIGKILL)",
            id=worker.id,
            pid=worker.pid,
            silent=silent,
        )
        # From now on its death is a crash, to be replaced as usual; retiring
        # it (a reload's) does not cancel this kill.
        worker.hung = True
        worker.kill("SIGABRT")
        worker.killUnlessDead(self.limits.killGrace)

    def _later(
        self, workerId: int, delay: float, f: Callable[..., object], *a: object
    ) -> None:
        self._timers.setdefault(workerId, []).append(
            self._reactor.callLater(delay, f, *a)
        )

    def _cancelTimers(self, workerId: int) -> None:
        for call in self._timers.pop(workerId, []):
            if call.active():
                call.cancel()

    # Births and deaths

    def _fork(self, failures: int, bootFailures: int) -> None:
        worker = self._spares.take()
        if worker is None:
            try:
                worker = self.master.fork()
            except OSError as e:
                self._fatal(f"cannot start a worker: {e}")
                return
        self._failures[worker.id] = failures
        self._bootFailures[worker.id] = bootFailures
        self._watchBoot(worker)

    def _watchBoot(self, worker: Worker) -> None:
        # A worker whose app never finishes loading (a .tac stuck in a loop)
        # is hung too, before it could answer heartbeats.
        if self.limits.bootTimeout:
            timer = self._reactor.callLater(
                self.limits.bootTimeout, self._bootHangs, worker
            )
            self._bootTimers[worker.id] = timer

    def _stopWatchingBoot(self, worker: Worker) -> None:
        timer = self._bootTimers.pop(worker.id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _bootHangs(self, worker: Worker) -> None:
        self._bootTimers.pop(worker.id, None)
        worker.bootError = (
            f"worker {worker.id} did not start within {self.limits.bootTimeout:g}s "
            "(--boot-timeout)"
        )
        self._log.error("{reason}; killing it", reason=worker.bootError)
        worker.kill("SIGKILL")

    def _workerReady(self, worker: Worker) -> None:
        self._stopWatchingBoot(worker)
        self._everUp = True
        now = self._reactor.seconds()
        self._upSince[worker.id] = now
        self._watchdog.up(worker)
        self._bootFailures[worker.id] = 0
        self._spares.workerUp()
        if self.state is State.starting and len(self._upSince) >= self.count:
            self._enter(State.running)
            self._spares.fill()
        if self.limits.maxAge:
            age = jittered(self.limits.maxAge, self.limits.jitter, self.limits.random)
            self._later(worker.id, age, self._recycle, worker, f"older than {age:.0f}s")
        fate = self._candidates.pop(worker.id, None)
        if fate is not None:
            fate.callback(True)
        self._reconcile()

    def _workerDied(
        self, worker: Worker, exitCode: int | None, signal: str | None
    ) -> None:
        self._death(worker, exitCode, signal)
        self._reconcile()

    def _death(self, worker: Worker, exitCode: int | None, signal: str | None) -> None:
        upSince = self._upSince.pop(worker.id, None)
        failures = self._failures.pop(worker.id, 0)
        bootFailures = self._bootFailures.pop(worker.id, 0)
        self._watchdog.gone(worker)
        self._stopWatchingBoot(worker)
        self._recycling.discard(worker.id)
        self._cancelTimers(worker.id)
        retired = worker.id in self._retiring
        self._retiring.discard(worker.id)
        if worker in self._spares:
            self._spares.died(worker, exitCode, signal)
            return
        fate = self._candidates.pop(worker.id, None)
        if fate is not None:
            fate.callback(False)
            return
        if not self.running or self.state in _ENDING or retired:
            return
        if worker.id in self._replacing:
            self._log.warn(
                "Worker {id} (pid {pid}) died; worker {new}, already starting, "
                "replaces it",
                id=worker.id,
                pid=worker.pid,
                new=self._replacing[worker.id],
            )
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
        now = self._reactor.seconds()
        self._crashes.append(now)
        if len(self._crashes) == FLAPPING[0] and now - self._crashes[0] <= FLAPPING[1]:
            self._log.error(
                "Workers are flapping: {n} deaths in {s:.1f}s; restarts back off",
                n=FLAPPING[0],
                s=now - self._crashes[0],
            )
        uptime = None if upSince is None else now - upSince
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
            self._restartLater(failures, bootFailures, delay)

    def _restartLater(
        self, failures: int, bootFailures: int, delay: float | None = None
    ) -> None:
        if delay is None:
            delay = self.policy.delay(failures)
        call = self._reactor.callLater(delay, self._restart, failures, bootFailures)
        self._pendingRestarts.append(call)

    def _restart(self, failures: int, bootFailures: int) -> None:
        self._pendingRestarts = [c for c in self._pendingRestarts if c.active()]
        self._fork(failures, bootFailures)

    def _listenError(self, worker: Worker, reason: str) -> None:
        if worker.id in self._candidates:
            return  # A reload's new worker: the old ones still hold the address.
        self._fatal(reason)

    def _fatal(self, reason: str) -> None:
        if self.fatalError is not None:
            return
        if self.state is State.stopping:
            # Already on the way out (a late listen, say): no cause to fail.
            self._log.error("While stopping: {reason}", reason=reason)
            return
        self.fatalError = reason
        self._enter(State.failed)
        self._log.critical("Stopping the cluster: {reason}", reason=reason)
        self._onFatal(reason)
