"""
The master's supervision logic, against a fake process reactor and clock.
"""

from __future__ import annotations

import pytest

from twisted_cluster.commands import BootFailed, Listen, Online, Ready
from twisted_cluster.master.master import Master
from twisted_cluster.master.restart import RestartPolicy
from twisted_cluster.master.supervisor import ClusterService

from .fakes import FakeProcessReactor


class Harness:
    def __init__(self, count: int = 2, **policy: float) -> None:
        self.reactor = FakeProcessReactor()
        self.master = Master(self.reactor, environ={})
        self.fatal: list[str] = []
        self.policy = RestartPolicy(random=lambda: 0.5, **policy)  # type: ignore[arg-type]
        self.service = ClusterService(
            self.master,
            count,
            self.reactor,
            onFatal=self.fatal.append,
            policy=self.policy,
            killTimeout=5.0,
        )

    def boot(self, process) -> None:
        process.call(Online)
        process.call(Ready)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_startsTheCount(h: Harness) -> None:
    h.service.startService()
    assert len(h.reactor.live) == 2
    assert sorted(h.master.workers) == [1, 2]
    assert h.reactor.processes[0].env["TWISTED_CLUSTER_WORKER_ID"] == "1"


def test_stableWorkerReplacedAtOnce(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    h.reactor.advance(h.policy.stableAfter)
    h.reactor.processes[0].exit(signal="SIGKILL")
    assert sorted(h.master.workers) == [2, 3]
    assert len(h.reactor.live) == 2
    assert not h.fatal


def test_quickDeathsBackOff(h: Harness) -> None:
    """
    Each quick death of a replacement doubles the delay before the next.
    """
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    delays = []
    for _ in range(4):
        h.reactor.advance(1)
        victim = h.reactor.live[-1]
        victim.exit(code=1)
        (restart,) = h.reactor.getDelayedCalls()
        delays.append(round(restart.getTime() - h.reactor.seconds(), 6))
        before = len(h.reactor.processes)
        h.reactor.advance(restart.getTime() - h.reactor.seconds())
        assert len(h.reactor.processes) == before + 1
        h.boot(h.reactor.processes[-1])
    assert delays == [0.1, 0.2, 0.4, 0.8]


def test_backoffResetsAfterStableUptime(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    h.reactor.advance(1)
    h.reactor.live[0].exit(code=1)
    h.reactor.advance(0.1)
    h.boot(h.reactor.processes[-1])
    h.reactor.advance(h.policy.stableAfter)
    count = len(h.reactor.processes)
    h.reactor.processes[-1].exit(code=1)
    assert len(h.reactor.processes) == count + 1


def test_firstBootFailureIsFatal(h: Harness) -> None:
    h.service.startService()
    first = h.reactor.processes[0]
    first.call(Online)
    first.call(BootFailed, reason="cannot load app.tac: SyntaxError: bad")
    first.exit(code=1)
    assert h.fatal == ["cannot load app.tac: SyntaxError: bad"]
    assert len(h.reactor.processes) == 2  # no restart


def test_deathBeforeBootWithoutReason(h: Harness) -> None:
    h.service.startService()
    h.reactor.processes[1].exit(signal="SIGSEGV")
    assert h.fatal == ["worker 2 was killed by SIGSEGV before it started"]


def test_repeatedBootFailuresAfterUpAreFatal(h: Harness) -> None:
    """
    Once the app has run, a replacement that cannot start is retried with
    backoff, up to maxBootFailures times in a row.
    """
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    h.reactor.advance(h.policy.stableAfter)
    h.reactor.processes[0].exit(code=1)
    for _attempt in range(h.policy.maxBootFailures):
        assert not h.fatal
        h.reactor.advance(h.policy.maxDelay)
        replacement = h.reactor.processes[-1]
        replacement.call(BootFailed, reason="broken")
        replacement.exit(code=1)
    assert h.fatal == ["broken"]
    assert len(h.reactor.processes) == 2 + h.policy.maxBootFailures


def test_bindFailureIsFatal(h: Harness, tmp_path) -> None:
    h.service.startService()
    p = h.reactor.processes[0]
    p.call(Online)
    with pytest.raises(Exception, match="cannot listen on UNIX socket"):
        p.call(
            Listen,
            kind="unix",
            interface="",
            port=0,
            path=str(tmp_path / "missing" / "s.sock"),
            backlog=5,
            mode=0o600,
            occurrence=0,
        )
    assert len(h.fatal) == 1
    assert "No such file or directory" in h.fatal[0]


def test_stopTermsThenKills(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    stopped = h.service.stopService()
    assert [p.signals for p in h.reactor.processes] == [["TERM"], ["TERM"]]
    h.reactor.processes[0].exit(code=0)
    assert not stopped.called
    h.reactor.advance(5.0)
    assert h.reactor.processes[1].signals == ["TERM", "KILL"]
    h.reactor.processes[1].exit(signal="SIGKILL")
    assert stopped.called
    assert len(h.reactor.processes) == 2  # no replacements while stopping
    assert not h.fatal


def test_noRestartAfterStop(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    h.reactor.advance(1)
    h.reactor.processes[0].exit(code=1)  # a restart is scheduled...
    h.service.stopService()
    h.reactor.advance(60)
    assert len(h.reactor.processes) == 2  # ...and cancelled
