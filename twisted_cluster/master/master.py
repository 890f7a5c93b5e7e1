"""
The master: forks workers, knows them by id, and shares its listening sockets.

This is the object behind C{cluster} in a master process (Node's primary).
It decides nothing about restarting; see L{twisted_cluster.master.supervisor}.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger

from ..commands import WORKER_ID_ENV
from ..events import EventEmitter
from .listeners import BindError, Listeners, ListenRequest
from .process import Worker
from .report import REPORT_FD_ENV, reportFromEnvironment


@dataclass(frozen=True)
class Settings:
    """
    What a fork runs: C{executable *execArgv exec *args}.

    @ivar exec: the script a worker runs (default: this process's script), or
        C{None} when C{execArgv} names what to run (C{["-m", "module"]}).
    @ivar silent: whether a worker's output goes to the master's log (its
        standard output carrying JSON log events, as the C{.tac} bootstrap
        writes them) rather than to the master's own standard output and
        error, as Node's C{silent}.
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
    """

    _log = Logger()
    isMaster = True
    isWorker = False

    def __init__(
        self,
        reactor: IReactorProcess | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor: IReactorProcess = reactor
        self._environ = environ if environ is not None else os.environ
        self.workers: dict[int, Worker] = {}
        self.settings = Settings()
        self.listeners = Listeners()
        self._lastId = 0
        report = reportFromEnvironment(self._environ)
        if report is not None:
            report.attach(self)

    def setupMaster(
        self,
        exec: str | None = None,
        args: list[str] | None = None,
        execArgv: list[str] | None = None,
        silent: bool | None = None,
    ) -> None:
        """
        Change what later forks run.
        """
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

    def fork(self, env: Mapping[str, str] | None = None) -> Worker:
        """
        Start a worker; C{env} adds or overrides environment variables.
        """
        self._lastId += 1
        worker = Worker(self, self._lastId)
        environ = {**self._environ, **(env or {}), WORKER_ID_ENV: str(worker.id)}
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
        d = gatherResults([w.disconnect() for w in list(self.workers.values())])

        def closed(_: object) -> None:
            self.listeners.close()

        return d.addCallback(closed)

    def _listenFor(self, worker: Worker, request: ListenRequest) -> socket.socket:
        try:
            return self.listeners.socketFor(request)
        except BindError as e:
            self._log.error("Worker {id}: {error}", id=worker.id, error=str(e))
            self.emit("listenError", worker, str(e))
            raise

    def _forget(self, worker: Worker) -> None:
        self.workers.pop(worker.id, None)
