"""
Throughput and balance: one plain Twisted process against our cluster with 1
and N workers under each scheduling policy, and Node's cluster when node is
installed, interleaved over several rounds on the same hello world.  The
same pair, plain twistd and a 1-worker cluster, also runs an app whose
access log is off (benchmarks/quiet.tac): a worker's log path is cheaper
than twistd's, so only there does the CPU per request show what the
cluster itself costs on the data path.

    .venv/bin/python benchmarks/throughput.py [--rounds 3] [--seconds 5] [--json F]

Prints each run, then per setup the median req/s, its ratio to the plain
Twisted process of the same rounds, the per-worker split (max/min requests,
median and worst round), the server's CPU time per request (all its
processes, user and system, and of the serving processes alone: the
workers, or the one twistd), and memory (resident MiB of the largest worker
and of the master, read at the end of a run).  --json writes the same
summary as data.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _cluster import APP, TWISTD, freePort

HERE = Path(__file__).resolve().parent
QUIET = HERE / "quiet.tac"


@dataclass
class Setup:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    runs: list[tuple[float, float]] = field(default_factory=list)  # req/s, max/min
    cpu: list[float] = field(default_factory=list)  # microseconds per request
    servingCpu: list[float] = field(default_factory=list)  # the same, workers only
    memory: list[tuple[float, list[float]]] = field(default_factory=list)


def setups(workers: int) -> list[Setup]:
    twistd = [TWISTD, "-n", "--pidfile=", "--logfile={log}"]
    cluster = [*twistd, "cluster", "--app", str(APP)]
    found = [
        Setup("twistd -ny (one process)", [*twistd, "-y", str(APP)]),
        Setup("cluster, 1 worker", [*cluster, "-w", "1"]),
        Setup("twistd -ny, access log off", [*twistd, "-y", str(QUIET)]),
        Setup(
            "cluster, 1 worker, access log off",
            [*twistd, "cluster", "--app", str(QUIET), "-w", "1"],
        ),
        # What the heartbeats (and the figures they carry) cost.
        Setup(
            "cluster, 1 worker, no log, no heartbeat",
            [*twistd, "cluster", "--app", str(QUIET), "-w", "1", "--timeout", "0"],
        ),
    ]
    for policy in ("reuseport", "shared", "roundrobin"):
        found.append(
            Setup(
                f"cluster, {workers} workers, {policy}",
                [*cluster, "-w", str(workers), "--scheduling", policy],
                workers=workers,
            )
        )
    if shutil.which("node"):
        script = str(HERE / "node_server.js")
        found.append(Setup("node, one process", ["node", script], {"WORKERS": "0"}))
        found.append(
            Setup(
                f"node cluster, {workers} workers",
                ["node", script],
                {"WORKERS": str(workers)},
                workers=workers,
            )
        )
    return found


def resident(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpuSeconds(pids: list[int]) -> float:
    """User and system time of C{pids} so far."""
    ticks = 0
    for pid in pids:
        fields = stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def isSpare(pid: int) -> bool:
    """Whether process C{pid} was started as a warm spare."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"TWISTED_CLUSTER_STANDBY=1" in f.read().split(b"\0")
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


@contextmanager
def running(setup: Setup, port: int, tmp: str) -> Iterator[subprocess.Popen[bytes]]:
    argv = [a.replace("{log}", f"{tmp}/log") for a in setup.argv]
    process = subprocess.Popen(
        argv,
        env={**os.environ, **setup.env, "PORT": str(port)},
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{setup.name} did not start") from None
                time.sleep(0.05)
        yield process
    finally:
        children = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            pass
        for pid in [process.pid, *children]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()


def wrk(
    port: int, seconds: int, connections: int, threads: int
) -> tuple[float, dict[str, int]]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(HERE / "count.lua"),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    counts = {w: int(n) for w, n in re.findall(r"COUNT (\S+) (\d+)", out)}
    return rate, counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--threads", type=int, default=2, help="wrk's threads (its own default: 2)"
    )
    parser.add_argument(
        "--only", default="", help="run only the setups whose name contains this"
    )
    parser.add_argument("--json", help="also write the summary to this file")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    all_ = [
        s
        for n, s in enumerate(setups(options.workers))
        if n == 0 or options.only in s.name
    ]
    for n in range(options.rounds):
        for setup in all_:
            port = freePort()
            with (
                tempfile.TemporaryDirectory() as tmp,
                running(setup, port, tmp) as process,
            ):
                wrk(port, 1, options.connections, options.threads)  # warm up
                tree = [process.pid, *descendants(process.pid)]
                before = cpuSeconds(tree)
                workers = (
                    tree[1:] if setup.workers > 1 or "cluster" in setup.name else []
                )
                # A warm spare serves nothing: its start-up is the cluster's
                # cost, not the data path's.
                served = [p for p in workers if not isSpare(p)] or tree
                servingBefore = cpuSeconds(served)
                rate, counts = wrk(
                    port, options.seconds, options.connections, options.threads
                )
                requests = rate * options.seconds
                used = cpuSeconds(tree) - before
                serving = cpuSeconds(served) - servingBefore
                setup.cpu.append(used / requests * 1e6)
                setup.servingCpu.append(serving / requests * 1e6)
                if workers:
                    setup.memory.append(
                        (resident(process.pid), [resident(p) for p in workers])
                    )
                else:
                    setup.memory.append((0.0, [resident(process.pid)]))
            split = (
                max(counts.values()) / max(1, min(counts.values()))
                if len(counts) >= setup.workers
                else float("inf")
            )
            setup.runs.append((rate, split))
            print(
                f"round {n + 1}: {setup.name:34s} {rate:9.0f} req/s  split {counts}",
                flush=True,
            )
    summary = summarise(all_)
    print()
    print(
        f"{'setup':34s} {'req/s':>9s} {'vs twistd':>9s}"
        f" {'max/min (median, worst)':>24s} {'us CPU/req':>10s} {'serving':>8s}"
        f" {'RSS MiB worker / master':>24s}"
    )
    for row in summary:
        split = (
            f"{row['splitMedian']:.2f}, {row['splitWorst']:.2f}"
            if row["workers"] > 1
            else "-"
        )
        memory = f"{row['workerMiB']:.1f}" + (
            f" / {row['masterMiB']:.1f}" if row["masterMiB"] else ""
        )
        print(
            f"{row['setup']:34s} {row['rate']:9.0f} {row['ratio']:9.2f} {split:>24s}"
            f" {row['cpuPerRequest']:10.1f} {row['servingCpuPerRequest']:8.1f}"
            f" {memory:>24s}"
        )
    if options.json:
        with open(options.json, "w") as f:
            json.dump(summary, f, indent=1)


def summarise(all_: list[Setup]) -> list[dict[str, object]]:
    """Medians per setup, ratios against the first (the plain process)."""
    base = statistics.median(r for r, _ in all_[0].runs)
    summary: list[dict[str, object]] = []
    for setup in all_:
        rate = statistics.median(r for r, _ in setup.runs)
        splits = [s for _, s in setup.runs]
        master, workers = setup.memory[-1]
        summary.append(
            {
                "setup": setup.name,
                "workers": setup.workers,
                "rate": rate,
                "ratio": rate / base,
                "splitMedian": statistics.median(splits),
                "splitWorst": max(splits),
                "cpuPerRequest": statistics.median(setup.cpu),
                "servingCpuPerRequest": statistics.median(setup.servingCpu),
                "cpuRounds": setup.cpu,
                "workerMiB": max(workers),
                "masterMiB": master,
            }
        )
    return summary


if __name__ == "__main__":
    main()
