"""
Process titles: C{ps} shows the master, each worker (id and slot) and each
spare, with the app's name.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from twisted_cluster.titles import masterTitle, workerTitle

from .support import APPS, Cluster, waitFor

CHATTY = APPS / "chatty.tac"


def test_titles() -> None:
    assert masterTitle("/srv/app/server.tac") == "twisted-cluster master [server.tac]"
    assert workerTitle(3, 1, "/srv/server.tac") == (
        "twisted-cluster worker 3 slot 1 [server.tac]"
    )
    assert workerTitle(4, None, "server.tac", spare=True) == (
        "twisted-cluster spare [server.tac]"
    )
    assert workerTitle(2, None, "web") == "twisted-cluster worker 2 [web]"


def title(pid: int) -> str:
    """
    What C{ps} shows for process C{pid}: its command line.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return " ".join(part for part in raw.decode().split("\0") if part).strip()


def startedWorkers(report: Path) -> dict[int, tuple[int, int]]:
    """
    The workers whose app has started: pid to (id, slot).
    """
    found = {}
    for path in report.glob("started-*"):
        if path.suffix == ".tmp":
            continue
        workerId, slot, pid = map(int, path.read_text().split())
        found[pid] = (workerId, slot)
    return found


@pytest.mark.timeout(60)
def test_psShowsTitles(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    The master, two workers and a spare have their titles; when a worker
    dies, the spare that takes its place takes its slot's title too.
    """
    report = tmp_path / "report"
    report.mkdir()
    c = cluster(
        CHATTY, workers=2, args=["--spares", "1"], env={"REPORT_DIR": str(report)}
    )
    waitFor(lambda: len(startedWorkers(report)) == 2, what="two workers")
    waitFor(lambda: len(c.workerPids()) == 3, what="the spare")
    waitFor(lambda: title(c.pid) == "twisted-cluster master [chatty.tac]")
    workers = startedWorkers(report)
    for pid, (workerId, slot) in workers.items():
        expected = f"twisted-cluster worker {workerId} slot {slot} [chatty.tac]"
        waitFor(lambda pid=pid, e=expected: title(pid) == e, what=expected)
    (spare,) = set(c.workerPids()) - set(workers)
    waitFor(
        lambda: title(spare) == "twisted-cluster spare [chatty.tac]",
        what=f"the spare's title, not {title(spare)!r}",
    )

    victim, (_, slot) = next(iter(workers.items()))
    os.kill(victim, signal.SIGKILL)
    waitFor(lambda: spare in startedWorkers(report), what="the spare to start")
    sparesId, sparesSlot = startedWorkers(report)[spare]
    assert sparesSlot == slot
    expected = f"twisted-cluster worker {sparesId} slot {slot} [chatty.tac]"
    waitFor(lambda: title(spare) == expected, what=expected)
