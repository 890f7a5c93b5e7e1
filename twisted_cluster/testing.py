"""
Test a clustered app for real, from trial or pytest-twisted.

    from twisted_cluster.testing import startCluster

    @pytest_twisted.inlineCallbacks
    def test_serves():
        running = yield startCluster("server.tac", workers=2, env={"PORT": "0"})
        try:
            ...  # talk to ("127.0.0.1", running.port)
        finally:
            yield running.stop()

L{startCluster} runs the app as users do (C{twistd -n cluster --app} for a
C{.tac}, C{python script.py} for a script), waits until every worker
listens, and says where.  It learns what happens from the master's event
report (L{twisted_cluster.master.report}), not from its log.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from .master.report import REPORT_FD_ENV

REPORT_FD = 3
Event = dict[str, Any]


class ClusterFailed(Exception):
    """
    The cluster exited, or did not get where it was awaited in time.
    """


class RunningCluster(ProcessProtocol):
    """
    A cluster started by L{startCluster}.

    @ivar events: every worker event the master reported, in order.
    @ivar output: what the master (and any worker that shares its output)
        wrote on standard output and error.
    @ivar exitStatus: the master's exit code once it has exited (a negative
        number for a signal), else C{None}.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.events: list[Event] = []
        self.output = b""
        self.exitStatus: int | None = None
        self._buffer = b""
        self._waiters: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self._exited: Deferred[int] = Deferred()

    # What users ask

    @property
    def pid(self) -> int:
        return int(self.transport.pid)  # type: ignore[union-attr]

    @property
    def workers(self) -> dict[int, int]:
        """
        The live workers: their pids by id.
        """
        live: dict[int, int] = {}
        for event in self.events:
            if event["event"] == "fork":
                live[event["worker"]] = event["pid"]
            elif event["event"] == "death":
                live.pop(event["worker"], None)
        return live

    @property
    def addresses(self) -> list[list[Any]]:
        """
        Every address a worker listens on, each once, as the report gives
        them (C{["TCP", host, port]}, C{["UNIX", path]}, ...).
        """
        found: list[list[Any]] = []
        for event in self.events:
            if event["event"] == "listening" and event["address"] not in found:
                found.append(event["address"])
        return found

    @property
    def port(self) -> int:
        """
        The port of the first TCP or UDP address the workers listen on.
        """
        for address in self.addresses:
            if address[0] != "UNIX":
                return int(address[2])
        raise ClusterFailed("no worker listens on a port")

    def whenEvent(
        self, match: Callable[[Event], bool], timeout: float = 30.0
    ) -> Deferred[Event]:
        """
        Fires with the first event, past or future, that C{match}es.
        """

        def found() -> Event | None:
            return next((e for e in self.events if match(e)), None)

        return self._when(found, timeout, "an event")

    def whenListening(
        self, count: int, timeout: float = 30.0
    ) -> Deferred[RunningCluster]:
        """
        Fires once C{count} live workers have each listened.
        """

        def enough() -> RunningCluster | None:
            live = self.workers
            listening = {
                e["worker"]
                for e in self.events
                if e["event"] == "listening" and e["worker"] in live
            }
            return self if len(listening) >= count else None

        return self._when(enough, timeout, f"{count} workers listening")

    def signal(self, name: str) -> None:
        """
        Send the master a signal, such as C{"TERM"} or C{"HUP"}.
        """
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except ProcessExitedAlready:
            pass

    def whenExited(self) -> Deferred[int]:
        """
        Fires with the master's exit status once it has exited.
        """
        if self.exitStatus is not None:
            return succeed(self.exitStatus)
        d: Deferred[int] = Deferred()

        def relay(status: int) -> int:
            d.callback(status)
            return status

        self._exited.addCallback(relay)
        return d

    def stop(self, timeout: float = 15.0) -> Deferred[int]:
        """
        Stop the master with C{SIGTERM} (C{SIGKILL} after C{timeout}s) and
        make sure none of its workers outlives it; fires with its exit status.
        """
        if self.exitStatus is None:
            self.signal("TERM")
            killer = self._reactor.callLater(timeout, self.signal, "KILL")
        else:
            killer = None
        d = self.whenExited()

        def reap(status: int) -> Deferred[int]:
            if killer is not None and killer.active():
                killer.cancel()
            return self._reapWorkers(timeout).addCallback(lambda _: status)

        return d.addCallback(reap)

    # The process protocol

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != REPORT_FD:
            self.output += data
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.events.append(json.loads(line))
        self._check()

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        signal = getattr(value, "signal", None)
        self.exitStatus = -signal if signal else int(getattr(value, "exitCode", 0) or 0)
        self._check()
        self._exited.callback(self.exitStatus)

    def _when(
        self, check: Callable[[], Any], timeout: float, what: str
    ) -> Deferred[Any]:
        result = check()
        if result is not None:
            return succeed(result)
        d: Deferred[Any] = Deferred()
        call = self._reactor.callLater(
            timeout, self._fail, d, f"timed out after {timeout}s waiting for {what}"
        )
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        self._waiters.append((check, d))
        return d

    def _check(self) -> None:
        for entry in list(self._waiters):
            check, d = entry
            result = check()
            if result is not None:
                self._waiters.remove(entry)
                d.callback(result)
            elif self.exitStatus is not None:
                self._fail(d, f"the cluster exited with status {self.exitStatus}")

    def _fail(self, d: Deferred[Any], why: str) -> None:
        self._waiters = [w for w in self._waiters if w[1] is not d]
        if not d.called:
            output = self.output.decode("utf-8", "replace")[-2000:]
            d.errback(ClusterFailed(f"{why}; its output ended:\n{output}"))

    def _reapWorkers(self, timeout: float) -> Deferred[None]:
        """
        Wait for workers the master did not see die (it may have been
        killed) to go, and kill any still there after C{timeout}.
        """
        pids = list(self.workers.values())
        d = gatherResults([whenGone(self._reactor, pid) for pid in pids])
        killer = self._reactor.callLater(timeout, _killAll, pids)

        def reaped(_: object) -> None:
            if killer.active():
                killer.cancel()

        return d.addBoth(reaped)


@implementer(IReadDescriptor)
class _ExitWatcher:
    """
    Becomes readable when a process that is not our child exits (a pidfd).
    """

    def __init__(self, reactor: Any, fd: int, gone: Deferred[None]) -> None:
        self._reactor, self._fd, self._gone = reactor, fd, gone

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._reactor.removeReader(self)
        os.close(self._fd)
        self._gone.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "pidfd"


def whenGone(reactor: Any, pid: int) -> Deferred[None]:
    """
    Fires when process C{pid} (any process, not only a child) has exited.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return succeed(None)
    gone: Deferred[None] = Deferred()
    reactor.addReader(_ExitWatcher(reactor, fd, gone))
    return gone


def _killAll(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def startCluster(
    app: str,
    workers: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    listening: int | None = None,
    timeout: float = 30.0,
    reactor: Any = None,
) -> Deferred[RunningCluster]:
    """
    Start a real cluster of C{app} and fire once C{listening} workers listen.

    @param app: a C{.tac} (run as C{twistd -n cluster --app app -w workers
        *args}) or a script (run as C{python app *args}).
    @param workers: for a C{.tac}, how many workers (default 2).
    @param env: variables to add to the cluster's environment.
    @param listening: how many workers must listen before the result fires
        (default: C{workers}, or 1 for a script); 0 to wait for nothing.
    """
    if reactor is None:
        from twisted.internet import reactor
    if app.endswith(".tac"):
        count = 2 if workers is None else workers
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        argv += ["-n", "--pidfile=", "--logfile=-", "cluster", "--app", app]
        argv += ["--workers", str(count), *args]
    else:
        count = 1 if workers is None else workers
        argv = [sys.executable, app, *args]
    environ = {**os.environ, **(env or {}), REPORT_FD_ENV: str(REPORT_FD)}
    environ.pop("TWISTED_CLUSTER_WORKER_ID", None)
    running = RunningCluster(reactor)
    reactor.spawnProcess(
        running,
        sys.executable,
        argv,
        env=environ,
        childFDs={0: "w", 1: "r", 2: "r", REPORT_FD: "r"},
    )
    wanted = count if listening is None else listening
    if wanted == 0:
        return succeed(running)

    def failed(failure: Failure) -> Deferred[RunningCluster]:
        return running.stop().addCallback(lambda _: failure)

    return running.whenListening(wanted, timeout).addErrback(failed)
