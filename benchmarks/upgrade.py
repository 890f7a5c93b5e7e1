"""
Upgrading the master in place under load: wrk runs against a cluster while
`twisted-cluster upgrade` replaces the master's code several times.

    .venv/bin/python benchmarks/upgrade.py [--seconds 20] [--upgrades 4]
        [--workers 2] [--scheduling reuseport]

The load is cut into one-second wrk runs (keep-alive, 20 connections), as in
reload.py.  Per upgrade it prints the command's wall time and the master's
own figure, from the signal to supervising again (its log line); then the
requests served and failed in all, the master's pid and worker pids before
and after, and the dip: the median second with an upgrade in it against the
median of the others.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _cluster import answers, exampleCluster, freePort
from reload import wrk

CLI = [sys.executable, "-m", "twisted_cluster"]


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--upgrades", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduling", default="reuseport")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    port = freePort()
    walls: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        exampleCluster(
            port,
            options.workers,
            tmp,
            args=("--spares", "0", "--scheduling", options.scheduling),
        ) as master,
    ):
        answers(port)
        time.sleep(1)  # every worker up, not only the first
        control = str(Path(tmp) / "twistd.ctl")
        workersBefore = children(master.pid)

        def upgrade() -> None:
            began = time.monotonic()
            done = subprocess.run(
                [*CLI, "--control", control, "upgrade"], capture_output=True, text=True
            )
            if done.returncode:
                print(f"upgrade failed: {done.stderr.strip()}", flush=True)
            walls.append(time.monotonic() - began)

        step = options.seconds // (options.upgrades + 1)
        upgradeAt = [step * (n + 1) for n in range(options.upgrades)]
        seconds = []
        for second in range(options.seconds):
            if second in upgradeAt:
                threading.Timer(0.2, upgrade).start()
            served, failed = wrk(port)
            seconds.append((served, failed))
            mark = " <- upgrade" if second in upgradeAt else ""
            print(
                f"second {second:2d}: {served:6d} served, {failed} failed{mark}",
                flush=True,
            )
        workersAfter = children(master.pid)
        log = "".join(p.read_text() for p in Path(tmp).glob("log*"))
    figures = [float(s) for s in re.findall(r"([\d.]+)s from the signal", log)]
    served = sum(s for s, _ in seconds)
    failed = sum(f for _, f in seconds)
    marks = set(upgradeAt)
    quiet = [s for n, (s, _) in enumerate(seconds) if not {n, n - 1} & marks]
    during = [s for n, (s, _) in enumerate(seconds) if {n, n - 1} & marks]
    baseline, dip = statistics.median(quiet), statistics.median(during)
    print(f"scheduling {options.scheduling}, {options.workers} workers")
    print(f"upgrades done: {len(figures)} of {options.upgrades}")
    print(
        "signal to supervising again (the master's figure): "
        + ", ".join(f"{f:.2f}s" for f in figures)
        + (f"; median {statistics.median(figures):.2f}s" if figures else "")
    )
    print(
        "`twisted-cluster upgrade` wall time: "
        + ", ".join(f"{w:.2f}s" for w in walls)
        + (f"; median {statistics.median(walls):.2f}s" if walls else "")
    )
    print(f"requests served: {served}, failed: {failed}")
    print(f"worker pids unchanged: {workersBefore == workersAfter}")
    print(
        f"throughput: median {baseline:.0f} req/s in quiet seconds, {dip:.0f} req/s "
        f"in the seconds of an upgrade (dip {100 * (1 - dip / baseline):.0f}%)"
    )


if __name__ == "__main__":
    main()
