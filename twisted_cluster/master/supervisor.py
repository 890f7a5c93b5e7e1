"""
Keep a number of workers running: replace the dead and the hung, recycle
the old and the fat, reload and scale without dropping a request, give up
on an app that cannot start, and stop them all gracefully.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..request import ListenRequest
from .listeners import BindError
from .master import Master
from .observer import IClusterObserver, IWorkerObserver, WorkerObserver
from .process import Worker
from .restart import RestartPolicy, jittered
from .roster import IllegalTransition, Recycle, Role, Roster, WorkerRecord
from .spares import Spares
from .watchdog import Watchdog

__all__ = ["ClusterService", "IllegalTransition", "Limits", "State"]


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
    @ivar shutdownDelay: seconds a graceful stop keeps serving, draining,
        before the workers stop accepting: the health check fails at once,
        so that load balancers stop routing here first.
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
    shutdownDelay: float = 0.0
    random: Callable[[], float] = field(default=random.random, compare=False)


class State(Enum):
    """
    The cluster's lifecycle.  C{running} and C{reloading} both serve; so
    does C{upgrading}, while the master replaces its own code, starting and
    retiring nothing;
    C{draining} serves too, for C{shutdownDelay} seconds before it stops,
    while the health check says it is going; C{failed} is stopping because
    the app cannot run.
    """

    starting = "starting"
    running = "running"
    reloading = "reloading"
    upgrading = "upgrading"
    draining = "draining"
    stopping = "stopping"
    failed = "failed"


_TRANSITIONS = {
    State.starting: {State.running, State.draining, State.stopping, State.failed},
    State.running: {
        State.reloading,
        State.upgrading,
        State.draining,
        State.stopping,
        State.failed,
    },
    State.reloading: {State.running, State.draining, State.stopping, State.failed},
    State.upgrading: {State.running, State.draining, State.stopping, State.failed},
    State.draining: {State.stopping, State.failed},
    State.stopping: set(),
    State.failed: {State.stopping},
}


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

    Every event (a worker ready or dead, a timer, a policy's finding) ends
    with one L{reconcile step <_reconcile>}, which decides from the
    L{roster}, the one record per worker, what to start and what to retire.

    @ivar fatalError: the reason given to C{onFatal}, if it was called.
    @ivar state: the cluster's L{State}.
    @ivar roster: the record of each worker it started.
    @ivar reloads: how many reloads were C{"done"} and C{"failed"}.
    @ivar startedAt: when this master process first started (before any
        upgrade in place).
    @ivar generation: how many times it has upgraded in place.
    @ivar observers: the L{IClusterObserver}s told of its changes.
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
        self.roster = Roster(reactor)
        self.reloads: Counter[str] = Counter(done=0, failed=0)
        # This master process: since when, and how often it upgraded in place.
        self.startedAt = reactor.seconds()
        self.generation = 0
        self._reactor = reactor
        self._onFatal = onFatal
        self._everUp = False
        self._crashes: deque[float] = deque(maxlen=FLAPPING[0])
        # Replacements owed for workers that died, each when its backoff ends.
        self._owed: list[_Owed] = []
        self._immediate = False
        self._drainEnds: IDelayedCall | None = None
        self._killer: IDelayedCall | None = None
        # Told of the cluster's state and how many serve.
        self.observers: list[IClusterObserver] = []
        self._serving = 0
        # Who waits for the workers to match the count (L{whenSettled}).
        self._settling: list[Deferred[None]] = []
        self._spares = Spares(
            master,
            self.roster,
            reactor,
            self.limits.spares,
            self.policy.delay,
            lambda: bool(self.running) and self.state is State.running,
        )
        self._watchdog = Watchdog(
            reactor,
            self._watched,
            onHung=self._hangs,
            onFat=lambda record: self._reconcile(),
            timeout=self.limits.timeout,
            maxMemory=self.limits.maxMemory,
            memoryOf=memoryOf,
        )
        # What the master's previous image handed over (an upgrade in place).
        self._handed: Mapping[str, Any] | None = None
        master.observers.append(_Observer(self))
        master.inService = self._inService
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
        old, self.state = self.state, state
        if state is State.upgrading:
            # Nothing is asked of a worker while its channel comes to rest.
            self.master.upgrading = True
            self._watchdog.stop()
        elif old is State.upgrading:
            self._upgradeEnded()
        for observer in list(self.observers):
            observer.stateChanged(old.value, state.value)

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
        if self._handed is not None:
            self._takeOver(self._handed)
            return
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
        gone.  With C{shutdownDelay}, the cluster first drains: it serves on
        for that long while the health check fails.  Then workers stop
        accepting and get C{gracefulTimeout} seconds to finish (after
        L{stopNow}, no delay, C{killGrace} seconds and no draining); the rest
        are killed.
        """
        delay = self.limits.shutdownDelay
        if delay > 0 and not self._immediate and self.state not in _ENDING:
            self._enter(State.draining)
            self._log.info(
                "Draining: serving {delay:g}s more before stopping", delay=delay
            )
            drained: Deferred[None] = Deferred()
            self._drainEnds = self._reactor.callLater(delay, drained.callback, None)
            return drained.addCallback(lambda _: self._stop())
        return self._stop()

    def _stop(self) -> Deferred[None]:
        super().stopService()
        self._enter(State.stopping)
        self._checkSettled()
        self.master.stopping = True
        self._watchdog.stop()
        for owed in self._owed:
            owed.cancel()
        self._owed.clear()
        workers = list(self.master.workers.values())
        if self._immediate:
            timeout = self.limits.killGrace
            for worker in workers:
                worker.kill("SIGTERM")
        else:
            timeout = self.limits.gracefulTimeout
            # Nothing queued is reset when the sockets close: the workers
            # accept what is queued as they leave, and nothing more queues.
            self.master.stopQueueing()
            for worker in workers:
                worker.disconnect()
        deaths = DeferredList([w.whenDead() for w in workers])
        killer = self._reactor.callLater(timeout, self._killAll, workers, timeout)
        self._killer = killer

        def stopped(_: object) -> None:
            if killer.active():
                killer.cancel()
            self.master.closeSockets()
            self._log.info("All workers have stopped")

        return deaths.addCallback(stopped)

    def stopNow(self) -> None:
        """
        Make the stop immediate: no draining.  A drain under way ends now;
        a graceful stop under way sends every worker SIGTERM, and kills
        what is left C{killGrace} seconds later.
        """
        self._immediate = True
        ends = self._drainEnds
        if ends is not None and ends.active():
            ends.reset(0)
        killer = self._killer
        if self.state is State.stopping and killer is not None and killer.active():
            for worker in list(self.master.workers.values()):
                worker.kill("SIGTERM")
            killer.reset(self.limits.killGrace)

    def isStopping(self) -> bool:
        """
        Whether a stop has begun (draining, stopping, or failed).
        """
        return self.state in (State.draining, *_ENDING)

    def _killAll(self, workers: list[Worker], timeout: float) -> None:
        for worker in workers:
            if not worker.isDead():
                self._log.warn(
                    "Worker {id} did not stop in {timeout}s; killing it",
                    id=worker.id,
                    timeout=timeout,
                )
                worker.kill("SIGKILL")

    # Upgrading the master in place

    def settled(self) -> bool:
        """
        Whether the cluster runs plainly: C{count} workers serve, and no
        worker is starting or retiring, nor a replacement owed.
        """
        if self.state is not State.running or self._owed:
            return False
        records = self.roster.having(Role.starting, Role.serving, Role.retiring)
        return len(records) == self.count and all(
            r.role is Role.serving for r in records
        )

    def beginUpgrade(self) -> None:
        """
        The master is about to replace its code: start and retire nothing,
        ping no one, hand round robin's connections to no one.

        @raise ValueError: if the cluster is not L{settled}.
        """
        if self.state is not State.running:
            raise ValueError(f"the cluster is {self.state.value}")
        if not self.settled():
            raise ValueError(
                "workers are starting or retiring; upgrade once the cluster has settled"
            )
        self._enter(State.upgrading)

    def endUpgrade(self) -> None:
        """
        The upgrade did not happen: this image supervises on.
        """
        if self.state is State.upgrading:
            self._enter(State.running)
            self._reconcile()

    def _upgradeEnded(self) -> None:
        # Whether it failed or a stop cut it short: the workers talk again.
        self.master.upgrading = False
        for worker in list(self.master.workers.values()):
            worker.resume().addErrback(self.master.unheard, worker)
        if self.state not in (*_ENDING, State.draining):
            self._watchdog.start()

    def handover(self) -> dict[str, Any]:
        """
        What the master's next image needs to supervise on (with
        L{Master.handover}): the count, the records and the counts kept.
        """
        return {
            "count": self.count,
            "startedAt": self.startedAt,
            "generation": self.generation + 1,
            "reloads": dict(self.reloads),
            "roster": self.roster.handover(),
            "master": self.master.handover(),
        }

    def inherit(self, handed: Mapping[str, Any]) -> None:
        """
        Supervise, from L{startService} on, what the previous image handed
        over (L{handover}) instead of starting workers; its sockets at once,
        so that L{privilegedStartService} binds none again (it may no longer
        bind a port below 1024).
        """
        self.master.inheritSockets(handed["master"])
        self._handed = handed

    def _takeOver(self, handed: Mapping[str, Any]) -> None:
        self._handed = None
        self.count = int(handed["count"])
        self.startedAt = float(handed["startedAt"])
        self.generation = int(handed["generation"])
        self.reloads.update(handed["reloads"])
        workers = self.master.inheritWorkers(handed["master"])
        self.roster.inherit(handed["roster"], {w.id: w for w in workers})
        self._everUp = True
        self._enter(State.running)
        for record in self.roster:
            if self.limits.maxAge and record.upSince is not None:
                age = jittered(
                    self.limits.maxAge, self.limits.jitter, self.limits.random
                )
                left = max(0.0, record.upSince + age - self._reactor.seconds())
                self.roster.later(record, "recycle", left, self._aged, record, age)
        self._log.info(
            "Took over {n} worker{s} from the previous master image",
            n=len(workers),
            s="" if len(workers) == 1 else "s",
        )
        for worker in workers:
            worker.resume().addErrback(self.master.unheard, worker)
        for worker in workers:
            # Reaped from now on: one that died meanwhile is replaced now.
            worker.watchInherited()
        self._watchdog.start()
        self._spares.fill()
        self._reconcile()

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
        self._reconcile()

    def scaleDown(self) -> None:
        """
        One worker fewer (never fewer than one): the oldest, retired
        gracefully.
        """
        if self.state not in (State.running, State.reloading) or self.count <= 1:
            return
        self.count -= 1
        self._log.info("Scaling down to {count} workers", count=self.count)
        serving = self.roster.serving()
        if serving:
            # The oldest, as gunicorn and circus do: the newest has the
            # freshest code and the least grown memory.
            self._retire(serving[0], "scaling down")
        self._reconcile()

    def scaleTo(self, count: int) -> Deferred[None]:
        """
        Run C{count} workers: start the missing, retire the oldest beyond.
        Fires once they serve and the retired are gone.

        @raise ValueError: if C{count} is below 1, or the cluster is not
            plainly running (starting, reloading or stopping).
        """
        if count < 1:
            raise ValueError(f"cannot run {count} workers: at least 1")
        if self.state is not State.running:
            raise ValueError(f"cannot scale: the cluster is {self.state.value}")
        if count != self.count:
            self._log.info(
                "Scaling from {old} to {new} workers", old=self.count, new=count
            )
            self.count = count
        self._reconcile()
        return self.whenSettled()

    def whenSettled(self) -> Deferred[None]:
        """
        Fires once the cluster runs C{count} serving workers and none other
        is starting or retiring; fails if it stops first.
        """
        d: Deferred[None] = Deferred()
        self._settling.append(d)
        self._checkSettled()
        return d

    def _checkSettled(self) -> None:
        if not self._settling:
            return
        if self.state in _ENDING:
            waiting, self._settling = self._settling, []
            for d in waiting:
                d.errback(RuntimeError(f"the cluster is {self.state.value}"))
            return
        if self.settled():
            waiting, self._settling = self._settling, []
            for d in waiting:
                d.callback(None)

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
        old = self.roster.serving()
        self._log.info(
            "Reloading: replacing {n} workers, {batch} at a time",
            n=len(old),
            batch=self.limits.reloadBatch,
        )
        done: Deferred[bool] = Deferred()

        def finish(ok: bool) -> None:
            self.reloads["done" if ok else "failed"] += 1
            self._enter(State.running)
            self._spares.fill()
            self._reconcile()
            done.callback(ok)

        def nextBatch(ok: object = True) -> None:
            if self.state is not State.reloading:
                done.callback(False)
                return
            if ok is not True:
                self._log.error("Reload aborted; the old workers go on serving")
                finish(False)
                return
            batch = [r for r in old if r.role is not Role.dead]
            batch = batch[: self.limits.reloadBatch]
            for record in batch:
                old.remove(record)
            if not batch:
                self._log.info("Reload done")
                finish(True)
                return
            replaced = [self._replace(r, "reload", "reload") for r in batch]
            results = DeferredList(replaced)
            results.addCallback(lambda rs: nextBatch(all(ok for _, ok in rs)))

        # Workers dying from here on are replaced in the usual way.
        self._reactor.callLater(0, nextBatch)
        return done

    # The reconcile step

    def _reconcile(self) -> None:
        """
        The step every event ends with: decide what to start and retire,
        then tell those waiting whether the workers now match the count.
        """
        self._decide()
        self._checkSettled()
        serving = len(self.roster.serving())
        if serving != self._serving:
            self._serving = serving
            for observer in list(self.observers):
                observer.servingChanged(serving, self.count)

    def _decide(self) -> None:
        """
        After every event: start the replacements now due, replace the
        workers a policy marked for recycling and, while plainly running,
        match the workers to C{count}: retire the oldest beyond it, start
        those missing (races between deaths, reloads and scaling otherwise
        leave one too many or too few; a reload has more on purpose).
        """
        if not self.running or self.state in (*_ENDING, State.upgrading):
            return  # Upgrading: the new image, or this one after, starts them.
        for owed in [o for o in self._owed if o.due]:
            self._owed.remove(owed)
            self._fork(owed.failures, owed.bootFailures)
            if self.state in _ENDING:
                return
        if self.state in (State.running, State.reloading):
            for record in self.roster.serving():
                if record.recycle is not None and not record.recycling:
                    record.recycling = True
                    self._replace(record, record.recycle.why, record.recycle.cause)
        if self.state is not State.running:
            return
        staying = sum(1 for r in self.roster if r.staying)
        missing = self.count - staying - len(self._owed)
        if missing < 0:
            for record in self.roster.serving()[:-missing]:
                self._retire(record, f"over the count of {self.count}")
        if missing > 0:
            self._log.warn(
                "{n} worker(s) short of {count}; starting them",
                n=missing,
                count=self.count,
            )
        for _ in range(missing):
            self._fork(failures=0, bootFailures=0)

    def _inService(self, worker: Worker) -> bool:
        record = self.roster.get(worker)
        return record is None or record.inService

    def _watched(self) -> list[WorkerRecord]:
        """
        The workers that are up, retiring ones too: one that hangs while it
        drains is killed at C{timeout}, not at C{gracefulTimeout}.
        """
        return [r for r in self.roster if r.upSince is not None and r.hung is None]

    def _replace(self, old: WorkerRecord, why: str, cause: str) -> Deferred[bool]:
        """
        Start a replacement for C{old}; once it is up, retire C{old}.  Fires
        with whether the replacement came up.

        @param cause: why, for the restart counts: one of L{CAUSES}.
        """
        try:
            worker = self.master.fork(slot=old.slot)
        except OSError as e:
            self._log.error("Cannot start a replacement worker: {e}", e=e)
            return succeed(False)
        new = self.roster.add(worker, Role.starting)
        fate: Deferred[bool] = Deferred()
        new.fate = fate
        old.replacement = new
        self._watchBoot(new)
        self._log.info(
            "Worker {new} starting to replace worker {old} ({why})",
            new=new.id,
            old=old.id,
            why=why,
        )

        def decided(up: bool) -> bool:
            old.replacement = None
            if up:
                self.roster.restarts[cause] += 1
                self._retire(old, why)
                return up
            reason = worker.bootError or f"worker {new.id} exited before it started"
            self._log.error(
                "Replacement worker {new} could not start: {reason}",
                new=new.id,
                reason=reason,
            )
            if old.role is Role.dead and self.running and self.state not in _ENDING:
                # It died waiting for this one: start another, as after a crash.
                self._owe(failures=1, bootFailures=1, delay=self.policy.delay(1))
            return up

        return fate.addCallback(decided)

    def _retire(self, record: WorkerRecord, why: str) -> None:
        if record.role in (Role.retiring, Role.dead):
            return
        self._log.info("Retiring worker {id} ({why})", id=record.id, why=why)
        record.enter(Role.retiring)
        record.cancelTimers()
        worker = record.worker
        # Its slots stay served: someone adopts any no one else serves.
        self.master.handOff(worker).addBoth(lambda _: worker.disconnect())
        timeout = self.limits.gracefulTimeout
        self.roster.later(record, "stop", timeout, self._killAll, [worker], timeout)

    # What the policies found

    def _aged(self, record: WorkerRecord, age: float) -> None:
        if record.recycle is None:
            record.recycle = Recycle("age", f"older than {age:.0f}s")
        self._reconcile()

    def _hangs(self, record: WorkerRecord) -> None:
        self._log.error(
            "Worker {id} (pid {pid}) has not answered heartbeats for {silent:.1f}s; "
            "killing it (SIGABRT, then SIGKILL)",
            id=record.id,
            pid=record.worker.pid,
            silent=record.hung,
        )
        # Its death is a crash, to be replaced as usual; retiring it (a
        # reload's) does not cancel this kill.
        record.worker.kill("SIGABRT")
        record.worker.killUnlessDead(self.limits.killGrace)

    # Births and deaths

    def _fork(self, failures: int, bootFailures: int) -> None:
        record = self._spares.take(failures, bootFailures)
        if record is None:
            try:
                worker = self.master.fork()
            except OSError as e:
                self._fatal(f"cannot start a worker: {e}")
                return
            record = self.roster.add(worker, Role.starting, failures, bootFailures)
        self._watchBoot(record)

    def _watchBoot(self, record: WorkerRecord) -> None:
        # A worker whose app never finishes loading (a .tac stuck in a loop)
        # is hung too, before it could answer heartbeats.
        if self.limits.bootTimeout:
            self.roster.later(
                record, "boot", self.limits.bootTimeout, self._bootHangs, record
            )

    def _bootHangs(self, record: WorkerRecord) -> None:
        worker = record.worker
        worker.bootError = (
            f"worker {worker.id} did not start within {self.limits.bootTimeout:g}s "
            "(--boot-timeout)"
        )
        self._log.error("{reason}; killing it", reason=worker.bootError)
        worker.kill("SIGKILL")

    def _workerReady(self, worker: Worker) -> None:
        record = self.roster.get(worker)
        if record is None:
            # Forked by the app's own cluster.fork(): supervised from now on.
            record = self.roster.add(worker, Role.starting)
        record.cancelTimer("boot")
        self._everUp = True
        now = self._reactor.seconds()
        record.upSince = record.lastHeard = now
        record.bootFailures = 0
        if record.role is Role.starting:
            record.enter(Role.serving)
        self._spares.workerUp()
        up = sum(1 for r in self.roster if r.upSince is not None)
        if self.state is State.starting and up >= self.count:
            self._enter(State.running)
            self._spares.fill()
        if self.limits.maxAge:
            age = jittered(self.limits.maxAge, self.limits.jitter, self.limits.random)
            self.roster.later(record, "recycle", age, self._aged, record, age)
        fate, record.fate = record.fate, None
        if fate is not None:
            fate.callback(True)
        self._reconcile()

    def _workerDied(
        self, worker: Worker, exitCode: int | None, signal: str | None
    ) -> None:
        record = self.roster.get(worker)
        if record is not None:
            self._death(record, exitCode, signal)
        self._reconcile()

    def _death(
        self, record: WorkerRecord, exitCode: int | None, signal: str | None
    ) -> None:
        worker = record.worker
        role = record.role
        how = f"was killed by {signal}" if signal else f"exited with code {exitCode}"
        asked = role in (Role.spare, Role.retiring) and record.hung is None
        self.roster.died(record, how, crashed=not asked and not self.master.stopping)
        if role is Role.spare:
            self._spares.died(
                record,
                worker.bootError
                or (f"killed by {signal}" if signal else f"exit code {exitCode}"),
            )
            return
        fate, record.fate = record.fate, None
        if fate is not None:
            fate.callback(False)
            return
        if not self.running or self.state in _ENDING or role is Role.retiring:
            return
        if record.replacement is not None:
            self._log.warn(
                "Worker {id} (pid {pid}) died; worker {new}, already starting, "
                "replaces it",
                id=worker.id,
                pid=worker.pid,
                new=record.replacement.id,
            )
            return
        failures, bootFailures = record.failures, record.bootFailures
        if record.upSince is None:
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
        uptime = None if record.upSince is None else now - record.upSince
        failures = self.policy.failuresAfter(failures, uptime)
        delay = self.policy.delay(failures)
        self._log.warn(
            "Worker {id} (pid {pid}) {how}; starting a replacement in {delay:.2f}s",
            id=worker.id,
            pid=worker.pid,
            how=how,
            delay=delay,
        )
        cause = "hang" if record.hung is not None else "signal" if signal else "crash"
        self.roster.restarts[cause] += 1
        self._owe(failures, bootFailures, delay)

    def _owe(self, failures: int, bootFailures: int, delay: float) -> None:
        """
        A replacement is due in C{delay} seconds: the reconcile step then
        starts it.
        """
        owed = _Owed(failures, bootFailures)
        self._owed.append(owed)
        if delay <= 0:
            owed.due = True
        else:
            owed.call = self._reactor.callLater(delay, self._due, owed)

    def _due(self, owed: _Owed) -> None:
        owed.due = True
        self._reconcile()

    def _listenError(self, worker: Worker, reason: str) -> None:
        record = self.roster.get(worker)
        if record is not None and record.fate is not None:
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
        self._checkSettled()
        self._log.critical("Stopping the cluster: {reason}", reason=reason)
        self._onFatal(reason)


@dataclass(eq=False)
class _Owed:
    """
    A replacement owed for a worker that died, and the backoff it waits.
    """

    failures: int
    bootFailures: int
    due: bool = False
    call: IDelayedCall | None = None

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
