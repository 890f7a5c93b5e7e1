"""
Chaos under load, for each scheduling policy: SIGKILL and SIGSTOP to random
workers, SIGHUP, SIGTTIN and SIGTTOU to the master, while fresh-connection
and keep-alive clients run.  Connections fail only where a killed or
stopped worker held them; none is refused, none fails on a retired or
untouched worker, and every failure is traced to a worker.  Afterwards every
stopped worker has been killed by the cluster and the port is served.
(tests/chaos.py has the rules; a run takes about 35 s.)

CHAOS_SEED and CHAOS_SECONDS override the seed and the length of a run;
CHAOS_TARGETS=listening aims SIGKILL and SIGSTOP only at workers that
listen (not at starting workers or spares), to look past what those find.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .chaos import runChaos, startChaosCluster

SECONDS = float(os.environ.get("CHAOS_SECONDS", "22"))
TARGETS = os.environ.get("CHAOS_TARGETS", "any")
SEEDS = {"reuseport": 1, "shared": 2, "roundrobin": 3}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scheduling", ["reuseport", "shared", "roundrobin"])
def test_chaosUnderLoad(cluster, tmp_path: Path, scheduling: str) -> None:
    seed = int(os.environ.get("CHAOS_SEED", SEEDS[scheduling]))
    c, port, connDir = startChaosCluster(cluster, tmp_path, scheduling, workers=2)
    result = runChaos(
        c, port, connDir, scheduling, SECONDS, seed, workers=2, targets=TARGETS
    )
    print(result.summary())
    print(f"  log: {c.logPath}")
    assert result.clients.requests > 1000, "too little load to mean anything"
    assert result.driver.countOf("kill") and result.driver.countOf("stop")
    assert result.problems() == [], result.summary()


def test_attribution() -> None:
    """
    The rules by which tests/chaos.py judges a failed connection, on made-up
    records: allowed only if the worker that accepted it was killed or
    stopped before it failed.
    """
    from .chaos import Action, Driver, Failure, LogWatch, Records, WorkerSeen, attribute

    log = LogWatch(None)  # type: ignore[arg-type]
    log.workers[9] = log.byPid[900] = WorkerSeen(9, 900, retired="reload")
    log.workers[5] = log.byPid[500] = WorkerSeen(5, 500, dead="killed", deadAt=1020.0)
    driver = Driver(None, log, 0.0, 0, 2)  # type: ignore[arg-type]
    driver.killed = {200: 10.2, 300: 10.6}
    driver.actions = [Action(10.2, "kill", 200), Action(20.01, "stop", 500)]
    driver.stopped = {500: 20.01}
    records = Records(
        accepts={
            1: [(5.0, 100), (10.01, 200)],  # an earlier user of port 1, then ours
            2: [(10.01, 300)],
            3: [(10.01, 900)],
            4: [(12.0, 400)],  # the port's next user's
            5: [(26.0, 400)],
        },
        closes={},
    )

    def failure(port, kind="reset", started=10.0, at=10.5, **kw):
        return Failure(kind, "fresh", port, None, started, at, "", **kw)

    failures = [
        failure(1),  # its worker was killed before it failed
        failure(2),  # its worker was killed only after it failed
        failure(3),  # its worker was retired
        failure(4, nextUse=11.0),  # no record of its own
        failure(5, kind="timeout", at=25.0),  # accepted after the client gave up
        failure(6, kind="refused"),
        failure(7, started=20.0, at=20.6),  # its worker stopped 10 ms after
    ]
    verdicts = attribute(failures, records, driver, log, clock=1000.0)
    assert [(v.why, v.pids, v.late, v.inferred) for v in verdicts] == [
        ("killed", [200], False, False),
        ("untouched", [300], False, False),
        ("retired", [900], False, False),
        ("unattributed", [], False, False),
        ("untouched", [400], True, False),
        ("refused", [], False, False),
        ("stopped", [500], False, True),
    ]
    allowed = [True, False, False, False, False, False, True]
    assert [v.allowed for v in verdicts] == allowed
