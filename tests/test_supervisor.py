"""
The master's supervision logic, against a fake process reactor and clock.
"""

from __future__ import annotations

import pytest

from twisted_cluster.commands import BootFailed, Listen, Online, Ready
from twisted_cluster.master.master import Master
from twisted_cluster.master.restart import RestartPolicy
from twisted_cluster.master.supervisor import ClusterService, Limits
from twisted_cluster.request import ListenRequest

from .fakes import FakeProcessReactor


class Harness:
    def __init__(
        self, count: int = 2, limits: Limits | None = None, **policy: float
    ) -> None:
        self.reactor = FakeProcessReactor()
        self.master = Master(self.reactor, environ={})
        self.fatal: list[str] = []
        self.memory: dict[int, float] = {}
        self.policy = RestartPolicy(random=lambda: 0.5, **policy)  # type: ignore[arg-type]
        self.service = ClusterService(
            self.master,
            count,
            self.reactor,
            onFatal=self.fatal.append,
            policy=self.policy,
            limits=limits or Limits(gracefulTimeout=5.0, timeout=0, spares=0),
            memoryOf=self.memory.get,
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
            request=ListenRequest(
                "unix", path=str(tmp_path / "missing" / "s.sock"), backlog=5, mode=0o600
            ),
            slot=-1,
        )
    assert len(h.fatal) == 1
    assert "No such file or directory" in h.fatal[0]


def test_stopDrainsThenKills(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    stopped = h.service.stopService()
    for p in h.reactor.processes:
        p.pump.flush()
        assert p.peer.received[-1] == "Disconnect"
    h.reactor.processes[0].exit(code=0)
    assert not stopped.called
    h.reactor.advance(5.0)
    assert h.reactor.processes[1].signals == ["KILL"]
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


def live(h: Harness) -> list:
    return [p for p in h.reactor.processes if not p.exited]


def test_stopNowTermsThenKills(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)
    h.service.stopNow()
    stopped = h.service.stopService()
    assert [p.signals for p in h.reactor.processes] == [["TERM"], ["TERM"]]
    h.reactor.advance(h.service.limits.killGrace)
    assert [p.signals for p in h.reactor.processes] == [["TERM", "KILL"]] * 2
    for p in h.reactor.processes:
        p.exit(signal="SIGKILL")
    assert stopped.called


def bootAll(h: Harness) -> None:
    h.service.startService()
    for p in h.reactor.processes:
        h.boot(p)


def test_reloadReplacesOneAtATime(h: Harness) -> None:
    bootAll(h)
    old = list(h.reactor.processes)
    done = h.service.reload()
    assert h.service.state.value == "reloading"
    h.reactor.advance(0)
    assert len(h.reactor.processes) == 3  # one new worker, no old one gone yet
    assert "Disconnect" not in old[0].peer.received
    h.boot(h.reactor.processes[2])
    old[0].pump.flush()
    assert old[0].peer.received[-1] == "Disconnect"
    assert len(h.reactor.processes) == 4  # the second replacement is starting
    old[0].exit(code=0)
    h.boot(h.reactor.processes[3])
    old[1].pump.flush()
    assert old[1].peer.received[-1] == "Disconnect"
    old[1].exit(code=0)
    assert done.result is True
    assert sorted(h.master.workers) == [3, 4]
    assert h.service.state.value == "running"
    assert not h.fatal


def test_reloadAbortsWhenNewWorkerCannotStart(h: Harness) -> None:
    bootAll(h)
    done = h.service.reload()
    h.reactor.advance(0)
    new = h.reactor.processes[2]
    new.call(Online)
    new.call(BootFailed, reason="SyntaxError in the new code")
    new.exit(code=1)
    assert done.result is False
    assert sorted(h.master.workers) == [1, 2]  # the old ones serve on
    assert all("Disconnect" not in p.peer.received for p in h.reactor.processes[:2])
    assert not h.fatal
    assert h.service.state.value == "running"
    assert len(h.reactor.processes) == 3  # and the failed one is not restarted


def test_scaleUpAndDown(h: Harness) -> None:
    bootAll(h)
    h.service.scaleUp()
    assert len(live(h)) == 3 and h.service.count == 3
    h.boot(h.reactor.processes[2])
    h.service.scaleDown()
    # The oldest goes, as gunicorn and circus retire theirs.
    h.reactor.processes[0].pump.flush()
    assert h.reactor.processes[0].peer.received[-1] == "Disconnect"
    assert "Disconnect" not in h.reactor.processes[2].peer.received
    h.reactor.processes[0].exit(code=0)
    assert len(live(h)) == 2 and len(h.reactor.processes) == 3
    h.service.scaleDown()
    h.service.scaleDown()
    assert h.service.count == 1  # never below one


def run(h: Harness, seconds: float) -> None:
    """
    Let time pass, the channels carrying what is sent as it is sent.
    """
    for _ in range(int(seconds * 10)):
        h.reactor.advance(0.1)
        for p in live(h):
            p.pump.flush()


def test_hungWorkerKilledAndReplaced() -> None:
    h = Harness(limits=Limits(timeout=3.0, killGrace=5.0, spares=0))
    bootAll(h)
    run(h, h.policy.stableAfter)
    assert all(p.signals == [] for p in h.reactor.processes)
    stuck = h.reactor.processes[0]
    stuck.peer.hung = True
    run(h, 5.0)
    assert stuck.signals[0] == "ABRT"
    assert h.reactor.processes[1].signals == []  # the healthy one answers
    run(h, 5.0)
    assert stuck.signals == ["ABRT", "KILL"]
    stuck.exit(signal="SIGKILL")
    assert len(live(h)) == 2


def test_maxAgeRecyclesWithJitter() -> None:
    h = Harness(
        limits=Limits(maxAge=100.0, jitter=0.1, timeout=0, random=lambda: 0.5, spares=0)
    )
    bootAll(h)
    h.reactor.advance(99.0)  # random() == 0.5: no jitter either way
    assert len(h.reactor.processes) == 2
    h.reactor.advance(1.0)
    assert len(h.reactor.processes) == 4  # each gets a replacement first
    for p in h.reactor.processes[2:]:
        h.boot(p)
    for p in h.reactor.processes[:2]:
        p.pump.flush()
        assert p.peer.received[-1] == "Disconnect"


def test_maxMemoryRecycles() -> None:
    h = Harness(limits=Limits(maxMemory=50.0, timeout=0, spares=0))
    bootAll(h)
    h.memory[h.reactor.processes[0].pid] = 80.0
    h.memory[h.reactor.processes[1].pid] = 20.0
    h.reactor.advance(5.0)
    assert len(h.reactor.processes) == 3
    h.boot(h.reactor.processes[2])
    h.reactor.processes[0].pump.flush()
    assert h.reactor.processes[0].peer.received[-1] == "Disconnect"
    assert "Disconnect" not in h.reactor.processes[1].peer.received


def test_flappingIsLogged(h: Harness) -> None:
    from twisted.logger import globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        bootAll(h)
        for _ in range(5):
            h.reactor.live[0].exit(code=1)
            h.reactor.advance(1.0)
            h.boot(h.reactor.processes[-1])
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert any("flapping" in e.get("log_format", "") for e in seen)


def test_spareTakesOverAtOnce() -> None:
    """
    Once the cluster runs, a spare loads the app and waits; a dead worker's
    slot goes to it, and a new spare follows.
    """
    h = Harness(limits=Limits(timeout=0, spares=1))
    bootAll(h)
    assert len(h.reactor.processes) == 3
    spare = h.reactor.processes[2]
    assert spare.env["TWISTED_CLUSTER_STANDBY"] == "1"
    spare.call(Online)
    h.reactor.advance(h.policy.stableAfter)
    h.reactor.processes[0].exit(signal="SIGKILL")
    spare.pump.flush()
    assert spare.peer.received[-1] == "Start"
    assert len(h.reactor.processes) == 3  # no cold start
    spare.call(Ready)
    h.reactor.advance(1.0)
    assert len(h.reactor.processes) == 4  # the next spare
    assert h.reactor.processes[3].env["TWISTED_CLUSTER_STANDBY"] == "1"


def test_reloadReplacesSpares() -> None:
    h = Harness(limits=Limits(timeout=0, spares=1))
    bootAll(h)
    spare = h.reactor.processes[2]
    h.service.reload()
    assert spare.signals == ["TERM"]
    spare.exit(code=0)
    assert not h.fatal


def test_sparesDyingTurnSparesOff() -> None:
    h = Harness(limits=Limits(timeout=0, spares=1))
    bootAll(h)
    for _ in range(3):
        spare = h.reactor.processes[-1]
        spare.call(Online)
        spare.call(BootFailed, reason="broken")
        spare.exit(code=1)
        h.reactor.advance(60)
    assert len(h.reactor.processes) == 5  # 2 workers, 3 spares, no more
    assert not h.fatal


def test_workerThatNeverStartsIsKilled() -> None:
    """
    A worker whose app does not start within --boot-timeout (a .tac that never
    returns) is killed; as the first worker, the app cannot run.
    """
    h = Harness(count=1, limits=Limits(bootTimeout=3.0, spares=0))
    h.service.startService()
    process = h.reactor.processes[0]
    process.call(Online)
    h.reactor.advance(2.9)
    assert process.signals == []
    h.reactor.advance(0.2)
    assert process.signals == ["KILL"]
    process.exit(signal="SIGKILL")
    assert h.fatal == ["worker 1 did not start within 3s (--boot-timeout)"]


def test_startedWorkerIsNotKilledForBooting() -> None:
    h = Harness(count=1, limits=Limits(bootTimeout=3.0, spares=0))
    h.service.startService()
    process = h.reactor.processes[0]
    h.boot(process)
    h.reactor.advance(3.5)
    assert "KILL" not in process.signals


def test_droppedSpareThatIgnoresSIGTERMIsKilled() -> None:
    """
    A spare a reload drops gets SIGTERM, and SIGKILL 5 s later if it is
    still there (a stopped process does not act on SIGTERM).
    """
    h = Harness(limits=Limits(timeout=0, spares=1))
    bootAll(h)
    spare = h.reactor.processes[2]
    h.service.reload()
    assert spare.signals == ["TERM"]
    h.reactor.advance(5.0)
    assert spare.signals == ["TERM", "KILL"]


def test_reloadDoesNotSpareAHungWorker() -> None:
    """
    A reload neither picks a hung worker to replace nor cancels the kill
    that is coming to it.
    """
    h = Harness(limits=Limits(timeout=3.0, killGrace=5.0, spares=0))
    bootAll(h)
    run(h, h.policy.stableAfter)
    stuck = h.reactor.processes[0]
    stuck.peer.hung = True
    run(h, 5.0)
    assert stuck.signals == ["ABRT"]
    h.service.reload()
    run(h, 5.0)
    assert stuck.signals == ["ABRT", "KILL"]
    assert "Disconnect" not in stuck.peer.received


def test_workerDyingDuringItsReplacementIsNotReplacedTwice() -> None:
    """
    A worker that dies while a reload's replacement for it is starting is
    replaced by that one alone: the cluster keeps its count.
    """
    h = Harness(limits=Limits(timeout=0, spares=0))
    bootAll(h)
    run(h, h.policy.stableAfter)
    h.service.reload()
    h.reactor.advance(0)
    first, candidate = h.reactor.processes[0], h.reactor.processes[2]
    first.exit(signal="SIGKILL")
    run(h, 1.0)
    assert len(h.reactor.processes) == 3  # no crash replacement besides
    h.boot(candidate)
    run(h, 1.0)
    second = h.reactor.processes[3]  # the reload goes on with the other one
    h.boot(second)
    run(h, 1.0)
    old = h.reactor.processes[1]
    assert "Disconnect" in old.peer.received
    old.exit(code=0)
    run(h, 1.0)
    assert len(h.reactor.processes) == 4
    assert h.reactor.live == [candidate, second]


def test_retiringWorkerThatHangsIsKilledAtTimeout() -> None:
    """
    A worker that hangs while it drains is killed after --timeout (and the
    kill grace), not left until --graceful-timeout.
    """
    h = Harness(
        count=2,
        limits=Limits(timeout=3.0, killGrace=5.0, gracefulTimeout=60.0, spares=0),
    )
    bootAll(h)
    run(h, h.policy.stableAfter)
    h.service.scaleDown()
    run(h, 0.1)
    leaving = [p for p in h.reactor.processes if "Disconnect" in p.peer.received]
    assert len(leaving) == 1
    leaving[0].peer.hung = True
    run(h, 5.0)
    assert leaving[0].signals[:1] == ["ABRT"]
    run(h, 5.0)
    assert leaving[0].signals == ["ABRT", "KILL"]


def test_scaleDownWhileReplacingReachesTheCount() -> None:
    """
    A scale-down while no worker is up (both are being replaced) still ends
    at the new count once they come up: the step after each event retires
    the one too many.
    """
    h = Harness(limits=Limits(timeout=0, spares=0))
    bootAll(h)
    run(h, h.policy.stableAfter)
    for p in list(h.reactor.live):
        p.exit(signal="SIGKILL")
    h.reactor.advance(1.0)
    replacements = list(h.reactor.live)
    assert len(replacements) == 2
    h.service.scaleDown()
    assert h.service.count == 1
    for p in replacements:
        h.boot(p)
    run(h, 1.0)
    leaving = [p for p in replacements if "Disconnect" in p.peer.received]
    assert len(leaving) == 1
    leaving[0].exit(code=0)
    run(h, 1.0)
    assert len(h.reactor.live) == 1 and len(h.reactor.processes) == 4


def test_illegalTransitionsRaise(h: Harness) -> None:
    from twisted_cluster.master.supervisor import IllegalTransition, State

    bootAll(h)
    assert h.service.state is State.running
    h.service.stopService()
    assert h.service.state is State.stopping
    with pytest.raises(IllegalTransition):
        h.service._enter(State.running)
    assert h.service.reload().result is False  # refused, not an error
    h.service._fatal("late")  # on the way out already: logged, not failed
    assert h.service.state is State.stopping and h.fatal == []
