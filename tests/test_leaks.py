"""
The master after many restarts: as many descriptors, about the same
memory, and no zombies.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .support import (
    APPS,
    freePort,
    get,
    openDescriptors,
    residentKB,
    waitFor,
    zombiesOf,
)

WORKERS = 4
ROUNDS = 50  # 200 restarts


@pytest.mark.timeout(240)
def test_200RestartsLeakNothing(cluster, tmp_path: Path) -> None:
    port = freePort()
    version = tmp_path / "version.txt"
    version.write_text("v1")
    c = cluster(
        APPS / "web.tac",
        workers=WORKERS,
        env={"PORT": str(port), "VERSION_FILE": str(version)},
        args=["--restart-delay", "0", "--stable-after", "0"],
    )
    listening = [WORKERS]
    waitFor(lambda: c.log().count("is listening on") >= WORKERS, what="the workers")

    def killAll() -> None:
        pids = c.workerPids()
        assert len(pids) == WORKERS
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        listening[0] += WORKERS
        waitFor(
            lambda: c.log().count("is listening on") >= listening[0],
            timeout=30,
            what=f"{listening[0]} listens",
        )

    for _ in range(5):
        killAll()
    fds, rss = openDescriptors(c.pid), residentKB(c.pid)
    started = time.monotonic()
    for _ in range(ROUNDS - 5):
        killAll()
    print(f"{(ROUNDS - 5) * WORKERS} restarts in {time.monotonic() - started:.1f}s")
    assert get(port).split()[2] == "v1"
    waitFor(lambda: not zombiesOf(c.pid), timeout=5, what="no zombies")
    after = openDescriptors(c.pid), residentKB(c.pid)
    print(f"master descriptors {fds} -> {after[0]}, resident {rss} -> {after[1]} kB")
    assert after[0] == fds
    assert after[1] - rss < 3 * 1024
    assert "Traceback" not in c.log()
