"""
The supervisor's records (one per worker) and the decisions of its
reconcile step, on fakes: what each policy marks, and what the step does.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from twisted_cluster.commands import Online, Ready
from twisted_cluster.master.roster import (
    KEEP_DEAD,
    MOVES,
    IllegalTransition,
    Recycle,
    Role,
    Roster,
)
from twisted_cluster.master.supervisor import Limits, State

from .test_supervisor import Harness, bootAll, live, run


class _Worker:
    def __init__(self, id: int, slot: int = 0) -> None:
        self.id = id
        self.slots = [slot]


# Records


@pytest.mark.parametrize("source", list(Role))
def test_onlyListedMovesAreLegal(source: Role) -> None:
    roster = Roster(Clock())
    for target in Role:
        record = roster.add(_Worker(1), source)  # type: ignore[arg-type]
        if target is source or target in MOVES[source]:
            record.enter(target)
            assert record.role is target
        else:
            with pytest.raises(IllegalTransition, match=source.value):
                record.enter(target)
            assert record.role is source


def test_deadRecordsAreKeptBounded() -> None:
    roster = Roster(Clock())
    for n in range(KEEP_DEAD + 5):
        roster.died(roster.add(_Worker(n), Role.serving), "exited", crashed=False)  # type: ignore[arg-type]
    assert len(roster) == 0
    assert len(roster.dead) == KEEP_DEAD
    assert roster.dead[-1].exitReason == "exited"
    assert roster.dead[-1].role is Role.dead


def test_slotRestartsCountCrashesOnly() -> None:
    roster = Roster(Clock())
    roster.died(roster.add(_Worker(1, slot=2), Role.serving), "killed", crashed=True)  # type: ignore[arg-type]
    roster.died(roster.add(_Worker(2, slot=2), Role.retiring), "exit 0", crashed=False)  # type: ignore[arg-type]
    assert roster.restartsOf(2) == 1
    assert roster.restartsOf(0) == 0


def test_timersEndWithTheWorker() -> None:
    clock = Clock()
    roster = Roster(clock)
    fired: list[str] = []
    record = roster.add(_Worker(1), Role.starting)  # type: ignore[arg-type]
    roster.later(record, "boot", 5, fired.append, "boot")
    roster.later(record, "boot", 10, fired.append, "again")  # one per name
    roster.later(record, "age", 3, fired.append, "age")
    clock.advance(4)
    assert fired == ["age"]
    roster.died(record, "exited", crashed=True)
    clock.advance(10)
    assert fired == ["age"]
    assert not clock.getDelayedCalls()


# The reconcile step


def _roles(h: Harness) -> list[str]:
    return [r.role.value for r in h.service.roster]


def test_everyWorkerHasOneRecord() -> None:
    h = Harness(limits=Limits(timeout=0, spares=1))
    h.service.startService()
    assert _roles(h) == ["starting", "starting"]
    for process in list(h.reactor.processes):
        h.boot(process)
    assert _roles(h) == ["serving", "serving", "spare"]
    assert [r.worker for r in h.service.roster] == list(h.master.workers.values())


def test_overTheCountRetiresTheOldest() -> None:
    h = Harness(count=3)
    bootAll(h)
    h.service.count = 2
    h.service._reconcile()
    assert _roles(h) == ["retiring", "serving", "serving"]
    oldest = h.service.roster.having(Role.retiring)[0].worker
    assert not h.master.takesConnections(oldest)


def test_underTheCountStartsTheMissing() -> None:
    h = Harness(count=2)
    bootAll(h)
    h.service.count = 3
    h.service._reconcile()
    assert _roles(h) == ["serving", "serving", "starting"]
    assert len(h.reactor.processes) == 3


def test_anOwedRestartIsNotStartedTwice() -> None:
    """
    A death whose replacement waits out a backoff leaves the count short;
    the reconcile step counts the owed one and starts no other meanwhile.
    """
    h = Harness()
    bootAll(h)
    h.reactor.advance(1)
    h.reactor.live[0].exit(code=1)  # a quick death: backoff
    assert len(h.reactor.processes) == 2
    h.service._reconcile()
    assert len(h.reactor.processes) == 2
    h.reactor.advance(0.1)
    assert len(h.reactor.processes) == 3
    h.service._reconcile()
    assert len(h.reactor.processes) == 3


def test_aRecycleMarkIsActedOnOnce() -> None:
    h = Harness()
    bootAll(h)
    first = h.service.roster.serving()[0]
    first.recycle = Recycle("age", "told so")
    h.service._reconcile()
    h.service._reconcile()
    assert len(h.reactor.processes) == 3  # one replacement, not two
    assert first.replacement is not None
    h.boot(h.reactor.processes[2])
    assert first.role is Role.retiring
    assert first.replacement is None


def test_aRecycleMarkWaitsUntilRunning() -> None:
    """
    A worker marked for recycling while the cluster is still starting is
    replaced once the cluster runs.
    """
    h = Harness(count=2, limits=Limits(timeout=0, spares=0, maxMemory=50.0))
    h.service.startService()
    h.boot(h.reactor.processes[0])
    h.memory[h.reactor.processes[0].pid] = 80.0
    h.reactor.advance(5.0)  # the watchdog marks it; the cluster is starting
    first = h.service.roster.serving()[0]
    assert first.recycle is not None
    assert h.service.state is State.starting
    h.boot(h.reactor.processes[1])  # now running: the mark is acted on
    assert h.service.state is State.running
    assert len(h.reactor.processes) == 3
    assert first.recycling


def test_aHungWorkerIsOutOfServiceAtOnce() -> None:
    h = Harness(limits=Limits(timeout=3.0, killGrace=5.0, spares=0))
    bootAll(h)
    run(h, h.policy.stableAfter)
    stuck = h.reactor.processes[0]
    worker = h.master.workers[1]
    assert h.master.takesConnections(worker)
    stuck.peer.hung = True
    run(h, 5.0)
    record = h.service.roster.get(worker)
    assert record is not None and record.hung is not None and record.hung >= 3.0
    assert not h.master.takesConnections(worker)
    assert record.role is Role.serving  # still counted: replaced when it dies
    stuck.exit(signal="SIGKILL")
    assert len(live(h)) == 2
    assert h.service.roster.dead[-1].exitReason == "was killed by SIGKILL"
    assert h.service.roster.restartsOf(0) == 1


def test_aTakenSpareCarriesTheBackoff() -> None:
    h = Harness(limits=Limits(timeout=0, spares=1))
    bootAll(h)
    spare = h.service.roster.having(Role.spare)[0]
    h.reactor.processes[2].call(Online)
    h.reactor.advance(1)
    h.reactor.live[0].exit(code=1)  # quick: one failure in a row
    h.reactor.advance(0.1)
    assert spare.role is Role.starting
    assert spare.failures == 1
    h.reactor.processes[2].call(Ready)
    assert spare.role is Role.serving


def test_aDroppedSparesDeathStartsNothing() -> None:
    h = Harness(limits=Limits(timeout=0, spares=1))
    bootAll(h)
    spare = h.service.roster.having(Role.spare)[0]
    h.service._spares.drop("testing")
    assert spare.role is Role.retiring
    before = len(h.reactor.processes)
    h.reactor.processes[2].exit(code=0)
    assert len(h.reactor.processes) == before
    assert spare.role is Role.dead
    assert h.service.roster.restartsOf(-1) == 0
