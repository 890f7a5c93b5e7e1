"""
The master: forks workers, knows them by id, and shares its listening sockets.

This is the object behind C{cluster} in a master process (Node's primary).
It decides nothing about restarting; see L{twisted_cluster.master.supervisor}.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..commands import (
    ACTIVATED_ENV,
    MAX_MESSAGE_ENV,
    MAX_MESSAGE_SIZE,
    STANDBY_ENV,
    WORKER_ID_ENV,
    WORKER_SLOT_ENV,
    channelGone,
)
from ..events import EventEmitter
from ..request import ListenRequest
from .listeners import BindError, Listeners
from .observer import IWorkerObserver
from .process import SPARE_SLOT, IWorkerHost, Worker
from .report import REPORT_FD_ENV, reportFromEnvironment
from .scheduling import IScheduling, byName


@dataclass(frozen=True)
class Settings:
    """
    What a fork runs: C{executable *execArgv exec *args}.

    @ivar exec: the script a worker runs (default: this process's script), or
        C{None} when C{execArgv} names what to run (C{["-m", "module"]}).
    @ivar silent: whether a worker's standard output and error go to the
        master, which logs them (JSON log events from a C{.tac} worker that
        relays its log, anything else as text), rather than to the master's
        own standard output and error; as Node's C{silent}.
    """

    exec: str | None = field(default_factory=lambda: sys.argv[0] or None)
    args: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv[1:]))
    execArgv: tuple[str, ...] = ()
    executable: str = sys.executable
    silent: bool = False

    def argv(self) -> list[str]:
        script = [self.exec] if self.exec else []
        return [self.executable, *self.execArgv, *script, *self.args]


class Master(EventEmitter):
    """
    Node's C{cluster} in the primary process.

    @ivar workers: the live workers by id; a worker leaves it when its
        C{death} event fires.
    @ivar stopping: whether the cluster is stopping: a worker that goes then
        hands its slots to no one.
    @ivar maxMessage: the most bytes of JSON one message may take, either
        way, for workers forked from now on; a worker that sends more is cut
        off.
    @ivar scheduling: how connections reach the workers; every decision
        that depends on the policy is its.
    @ivar environment: asked at each fork for the variables every worker
        gets over the master's own (C{--env}, C{--env-file}, which a reload
        reads again); C{fork}'s C{env} overrides them.
    @ivar upgrading: whether the master is replacing its own code in place
        (L{handover}): no worker takes connections from it meanwhile.
    """

    _log = Logger()
    isMaster = True
    isWorker = False

    def __init__(
        self,
        reactor: IReactorProcess | None = None,
        environ: Mapping[str, str] | None = None,
        scheduling: str | IScheduling = "reuseport",
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor: IReactorProcess = reactor
        self._environ = environ if environ is not None else os.environ
        self.workers: dict[int, Worker] = {}
        self.settings = Settings()
        self.stopping = False
        self.maxMessage = MAX_MESSAGE_SIZE
        self.environment: Callable[[], Mapping[str, str]] = dict
        # The addresses of the sockets systemd passed, in their order.
        self.activated: list[ListenRequest | None] = []
        # The cluster's own parts, told what Node's events do not carry.
        self.observers: list[IWorkerObserver] = []
        self._host = _Host(self)
        # The supervisor's word on whether a worker is in service (not being
        # retired, nor hung): its records are the one source of that.
        self.inService: Callable[[Worker], bool] = lambda worker: True
        # Replacing its own code: round robin hands out nothing meanwhile.
        self.upgrading = False
        self._schedule(scheduling)
        self._lastId = 0
        report = reportFromEnvironment(self._reactor, self._environ)  # type: ignore[arg-type]
        if report is not None:
            report.attach(self)
            self.observers.append(report)

    def setupMaster(
        self,
        exec: str | None = None,
        args: list[str] | None = None,
        execArgv: list[str] | None = None,
        silent: bool | None = None,
        scheduling: str | IScheduling | None = None,
    ) -> None:
        """
        Change what later forks run; C{scheduling} (one of
        L{twisted_cluster.master.scheduling.SCHEDULING}, or a policy) only
        before any worker has listened.
        """
        if scheduling is not None:
            if len(self.listeners):
                raise ValueError("scheduling cannot change once workers listen")
            previous = self.scheduling
            self._schedule(scheduling)
            previous.close()
        changes: dict[str, Any] = {}
        if silent is not None:
            changes["silent"] = silent
        if exec is not None:
            changes["exec"] = exec
        if args is not None:
            changes["args"] = tuple(args)
        if execArgv is not None:
            changes["execArgv"] = tuple(execArgv)
        self.settings = replace(self.settings, **changes)
        self.emit("setup", self.settings)

    setupPrimary = setupMaster

    def _schedule(self, scheduling: str | IScheduling) -> None:
        if isinstance(scheduling, str):
            scheduling = byName(scheduling, self._reactor, self.takesConnections)
        self.scheduling: IScheduling = scheduling
        self.listeners = Listeners(scheduling.perSlot)

    def fork(
        self, env: Mapping[str, str] | None = None, slot: int | None = None
    ) -> Worker:
        """
        Start a worker; C{env} adds or overrides environment variables.

        @param slot: the worker slot it serves (with the C{reuseport} policy,
            which of the per-worker sockets it takes): by default the slot of
            a worker that went, else a new one.
        """
        self._lastId += 1
        worker = Worker(
            self._host,
            self._reactor,  # type: ignore[arg-type]
            self._lastId,
            self.freeSlot() if slot is None else slot,
            self.maxMessage,
        )
        environ = {
            **self._environ,
            **self.environment(),
            **(env or {}),
            WORKER_ID_ENV: str(worker.id),
            **({} if worker.slot is None else {WORKER_SLOT_ENV: str(worker.slot)}),
            MAX_MESSAGE_ENV: str(self.maxMessage),
        }
        if self.activated:
            environ[ACTIVATED_ENV] = json.dumps(
                [None if r is None else r.toJSON() for r in self.activated]
            )
        environ.pop(REPORT_FD_ENV, None)
        worker.spawn(
            self._reactor,
            self.settings.executable,
            self.settings.argv(),
            environ,
            relayOutput=self.settings.silent,
        )
        self.workers[worker.id] = worker
        self.emit("fork", worker)
        return worker

    def disconnect(self) -> Deferred[None]:
        """
        Disconnect every worker; fires once all have exited and the master's
        listening sockets are closed.
        """
        self.stopping = True
        d = gatherResults([w.disconnect() for w in list(self.workers.values())])

        def closed(_: object) -> None:
            self.closeSockets()

        return d.addCallback(closed)

    def freeSlot(self) -> int:
        """
        The slot the next worker takes: the lowest whose worker went and
        that a stand-in serves, else the lowest nobody holds.
        """
        owned = {w.slots[0] for w in self.workers.values() if not w.standby}
        held = {
            slot
            for w in self.workers.values()
            for slot in w.slots
            if slot != SPARE_SLOT
        }
        orphans = held - owned
        if orphans:
            return min(orphans)
        return min(set(range(len(held) + 1)) - held)

    def handOff(self, leaving: Worker) -> Deferred[None]:
        """
        Make sure what C{leaving} serves stays served (under C{reuseport}, a
        worker that stays adopts each slot that no other worker serves).
        Fires once it is.
        """
        return self.scheduling.handOff(leaving, self)

    def spare(self, env: Mapping[str, str] | None = None) -> Worker:
        """
        Start a spare: a worker that loads the app, then waits until
        L{Worker.start} gives it a slot, so that it serves within moments.
        """
        return self.fork({**(env or {}), STANDBY_ENV: "1"}, slot=SPARE_SLOT)

    def unheard(self, failure: Failure, worker: Worker) -> None:
        """
        Log that C{worker} did not answer a command, unless it is gone.
        """
        if not worker.isDead() and not channelGone(failure):
            self._log.failure("Worker {id} did not answer", failure, id=worker.id)

    def stopQueueing(self) -> None:
        """
        The cluster is stopping: the kernel queues no new connection on the
        shared TCP sockets, and what it queued is handed out and served;
        new clients are refused once the sockets close.
        """
        self.listeners.stopQueueing()
        self.scheduling.drain()

    def closeSockets(self) -> None:
        """
        Close every listening socket: the cluster has stopped.
        """
        self.scheduling.close()
        self.listeners.close()

    def takesConnections(self, worker: Worker) -> bool:
        """
        Whether C{worker} may be given connections: connected, and not on
        its way out (asked to leave, retired or hung).
        """
        return (
            worker.isConnected()
            and not worker.exitedAfterDisconnect
            and not self.upgrading
            and self.inService(worker)
        )

    # Upgrading in place

    def handover(self) -> dict[str, Any]:
        """
        What the master's next image needs to go on where this one stops:
        its workers and sockets, descriptors included (each worker quiesced).
        """
        return {
            "lastId": self._lastId,
            "listeners": self.listeners.handover(),
            "activated": [None if r is None else r.toJSON() for r in self.activated],
            "workers": [w.handover() for w in self.workers.values()],
        }

    def inheritSockets(self, handed: Mapping[str, Any]) -> None:
        """
        Take on the sockets the previous image handed over (L{handover}):
        before twistd's privileged start, which would bind them again.
        """
        self._lastId = int(handed["lastId"])
        self.listeners.inherit(handed["listeners"])
        self.activated = [
            None if r is None else ListenRequest.fromJSON(r)
            for r in handed["activated"]
        ]

    def inheritWorkers(self, handed: Mapping[str, Any]) -> list[Worker]:
        """
        Take on the workers the previous image handed over (L{handover},
        after L{inheritSockets}); quiet until told to L{Worker.resume}.
        """
        workers = []
        for body in handed["workers"]:
            worker = Worker(
                self._host,
                self._reactor,  # type: ignore[arg-type]
                int(body["id"]),
                int(body["slots"][0]),
                self.maxMessage,
            )
            worker.inherit(self._reactor, body)
            self.workers[worker.id] = worker
            workers.append(worker)
        # Round robin takes them on again (the listener ids, the sockets'
        # descriptors, are the same numbers in this image).
        for worker in workers:
            for request in worker.requests():
                sock = self.listeners.socketFor(request, worker.slots[0])
                self.scheduling.listening(worker, request, sock)
        return workers


@implementer(IWorkerHost)
class _Host:
    """
    What a L{Worker} may ask of its L{Master}, and nothing else.
    """

    _log = Logger()

    def __init__(self, master: Master) -> None:
        self._master = master

    def emit(self, event: str, *args: object) -> None:
        self._master.emit(event, *args)

    def workerReady(self, worker: Worker) -> None:
        for observer in list(self._master.observers):
            observer.workerReady(worker)

    def spareListened(self, worker: Worker) -> None:
        for observer in list(self._master.observers):
            observer.spareListened(worker)

    def socketFor(
        self, worker: Worker, request: ListenRequest, slot: int
    ) -> socket.socket:
        try:
            return self._master.listeners.socketFor(request, slot)
        except BindError as e:
            self._log.error("Worker {id}: {error}", id=worker.id, error=str(e))
            for observer in list(self._master.observers):
                observer.listenFailed(worker, str(e))
            raise

    def distribute(
        self, worker: Worker, request: ListenRequest, sock: socket.socket
    ) -> int | None:
        return self._master.scheduling.listening(worker, request, sock)

    def unlistened(self, worker: Worker, request: ListenRequest) -> None:
        # Its app stopped listening there: close what no one else serves, so
        # that new connections are refused rather than left unaccepted.
        master = self._master
        others = [
            w
            for w in master.workers.values()
            if w is not worker and w.listensOn(request.key)
        ]
        served = {slot for w in others for slot in w.slots}
        mine = set(worker.slots) if master.listeners.perSlot(request) else set()
        for slot, sock in master.listeners.sockets(request).items():
            if not others or (slot in mine and slot not in served):
                master.scheduling.closing(sock)
                master.listeners.closeSocket(request, slot)
            else:
                master.scheduling.unlistened(worker, sock)

    def served(self, worker: Worker) -> None:
        self._master.scheduling.served(worker, self._master)

    def leaving(self, worker: Worker) -> None:
        self._master.scheduling.forget(worker)

    def gone(self, worker: Worker) -> None:
        master = self._master
        master.workers.pop(worker.id, None)
        master.scheduling.forget(worker)
        master.handOff(worker).addErrback(master.unheard, worker)
