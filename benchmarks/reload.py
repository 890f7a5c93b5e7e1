"""
Rolling reloads under load: wrk runs against a cluster while the master gets
SIGHUP several times.

    .venv/bin/python benchmarks/reload.py [--seconds 24] [--reloads 3] [--workers 2]

The load is cut into one-second wrk runs (keep-alive, 20 connections), so
each second's throughput and errors are seen; the reloads are sent at even
intervals.  Prints each second, requests served and failed in all, and the
dip: the slowest second during reloads against the median of the seconds
before the first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from _cluster import answers, exampleCluster, freePort


def wrk(port: int) -> tuple[int, int]:
    """One second of load: (requests served, requests failed)."""
    out = subprocess.run(
        ["wrk", "-t1", "-c20", "-d1s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
    ).stdout
    served = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    failed = 0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if errors:
        failed += sum(int(n) for n in errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        failed += int(non2xx.group(1))
    return served, failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=24)
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    port = freePort()
    with (
        tempfile.TemporaryDirectory() as tmp,
        exampleCluster(port, options.workers, tmp) as master,
    ):
        answers(port)
        step = options.seconds // (options.reloads + 1)
        reloadAt = [step * (n + 1) for n in range(options.reloads)]
        seconds = []
        for second in range(options.seconds):
            if second in reloadAt:
                threading.Timer(0.2, master.send_signal, [signal.SIGHUP]).start()
            served, failed = wrk(port)
            seconds.append((served, failed))
            mark = " <- SIGHUP" if second in reloadAt else ""
            print(
                f"second {second:2d}: {served:6d} served, {failed} failed{mark}",
                flush=True,
            )
        # twistd rotates its log every megabyte; read every piece.
        log = "".join(p.read_text() for p in Path(tmp).glob("log*"))
    served = sum(s for s, _ in seconds)
    failed = sum(f for _, f in seconds)
    hups = set(reloadAt)
    quiet = [s for n, (s, _) in enumerate(seconds) if not {n, n - 1} & hups]
    reloading = [s for n, (s, _) in enumerate(seconds) if {n, n - 1} & hups]
    baseline = statistics.median(quiet)
    during = statistics.median(reloading)
    print(f"reloads done: {log.count('Reload done')} of {options.reloads}")
    print(f"requests served: {served}, failed: {failed}")
    print(
        f"throughput: median {baseline:.0f} req/s in quiet seconds, {during:.0f} req/s "
        f"in the seconds of a reload (dip {100 * (1 - during / baseline):.0f}%); "
        f"slowest second {min(s for s, _ in seconds)}"
    )


if __name__ == "__main__":
    main()
