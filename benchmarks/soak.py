"""
A soak: the chaos of tests/test_chaos.py (random SIGKILL / SIGSTOP to
workers, SIGHUP / SIGTTIN / SIGTTOU to the master, under fresh-connection
and keep-alive clients) for as long as asked, then what it left behind.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--scheduling reuseport]
        [--workers 2] [--spares 1] [--seed 0] [--targets any|listening] [--keep]

Prints progress every minute, then: requests served, failures by cause and
verdict, refused connections, restarts (kills + stops), reloads, scale
events, the master's descriptors and resident memory at the start and at
the end (with the workers back to --workers), zombies left, and every
defect (a failure no kill or stop explains; see tests/chaos.py).  Exits 1
if there was a defect.  Stops by itself and kills everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos import ChaosResult, runChaos, servingPids, startChaosCluster  # noqa: E402
from tests.support import (  # noqa: E402
    Cluster,
    childrenOf,
    openDescriptors,
    processExists,
    processGroup,
    residentKB,
    waitFor,
    zombiesOf,
)


def isWorker(pid: int) -> bool:
    """
    Whether C{pid} is a live twisted-cluster worker (not a reused pid).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"twisted_cluster.worker" in f.read() and processExists(pid)
    except OSError:
        return False


def snapshot(c: Cluster) -> str:
    return (
        f"{openDescriptors(c.pid)} fds, {residentKB(c.pid) / 1024:.1f} MB resident, "
        f"{len(c.workerPids())} children"
    )


def settle(c: Cluster, port: int, result: ChaosResult, workers: int) -> str:
    """
    Scale back to C{workers} (one signal at a time: the same signal twice
    at once may arrive once) and wait until that many serve and no other
    worker is left but a spare; what is not so after 60 s, or "".
    """
    log = result.log
    log.poll()
    count = workers + log.counts["scaled up"] - log.counts["scaled down"]
    while count != workers:
        up = count < workers
        phrase = "scaled up" if up else "scaled down"
        before = log.counts[phrase]
        c.signal(signal.SIGTTIN if up else signal.SIGTTOU)

        def scaled(phrase: str = phrase, before: int = before) -> bool:
            log.poll()
            return log.counts[phrase] > before

        try:
            waitFor(scaled, timeout=10, what=f"the master to have {phrase}")
        except AssertionError:
            return f"the master did not scale back to {workers} workers"
        count += 1 if up else -1
    serving: set[int] = set()

    def settled() -> bool:
        serving.clear()
        serving.update(servingPids(port, 20))
        return len(serving) == workers and len(c.workerPids()) <= workers + 1

    try:
        waitFor(settled, timeout=60, interval=0.5, what=f"{workers} serving")
    except AssertionError:
        log.poll()
        children = ", ".join(f"{p} ({log.describe(p)})" for p in c.workerPids())
        return f"serving pids {sorted(serving)}; children {children}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--scheduling",
        default="reuseport",
        choices=["reuseport", "shared", "roundrobin"],
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--spares", type=int, default=1)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--targets", default="any", choices=["any", "listening"])
    parser.add_argument("--keep", action="store_true", help="keep the log directory")
    options = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    started: list[Cluster] = []

    def start(app: str | Path, **kwargs: object) -> Cluster:
        c = Cluster(tmp, app, **kwargs)  # type: ignore[arg-type]
        started.append(c)
        return c.start()

    defects = 0
    try:
        c, port, connDir = startChaosCluster(
            start, tmp, options.scheduling, options.workers, options.spares
        )
        waitFor(
            lambda: len(c.workerPids()) >= options.workers + min(options.spares, 1),
            timeout=30,
            what="the spare",
        )
        before = snapshot(c)
        print(
            f"soak: --scheduling {options.scheduling} --workers {options.workers} "
            f"--spares {options.spares} for {options.minutes:g} min, seed "
            f"{options.seed}; master {before}",
            flush=True,
        )
        result = runChaos(
            c,
            port,
            connDir,
            options.scheduling,
            options.minutes * 60,
            options.seed,
            options.workers,
            targets=options.targets,
            progress=lambda line: print(line, flush=True),
        )
        unsettled = settle(c, port, result, options.workers)
        after = snapshot(c)
        left = zombiesOf(c.pid)
        print(result.summary(timeline=False))
        workers = (
            set(c.workerPids()) | set(result.log.byPid) | set(result.driver.stopped)
        )
        c.signal(signal.SIGTERM)
        try:
            status: int | str = c.wait(30)
        except Exception:
            status = "still running 30 s after SIGTERM"
        outliving = [p for p in sorted(workers) if isWorker(p)]
        restarts = len(result.driver.killed) + len(result.driver.stopped)
        print(f"  restarts (kills + stops): {restarts}")
        print(f"  master at the start: {before}")
        print(
            f"  master at the end:   {after}"
            + (
                f" (not back to {options.workers} serving in 60 s: {unsettled})"
                if unsettled
                else ""
            )
        )
        print(f"  zombies left: {len(left)} {left or ''}")
        print(f"  master exit status after SIGTERM: {status}")
        print(f"  workers outliving the master: {len(outliving)} {outliving or ''}")
        for pid in outliving:
            os.kill(pid, signal.SIGKILL)
        print(f"  log: {c.logPath}")
        defects = len(result.problems()) + bool(unsettled) + len(left) + len(outliving)
        defects += status != 0
        print(f"DEFECTS: {defects}")
    finally:
        for c in started:
            stray = processGroup(c.pid) + childrenOf(c.pid)
            c.kill()
            if stray:
                print(f"  killed {len(stray)} processes left: {stray}")
        if defects == 0 and not options.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
