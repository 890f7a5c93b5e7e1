"""
Every benchmark in one run, then the performance goals against what it
measured.

    .venv/bin/python benchmarks/all.py [--quick]

Runs throughput.py (wrk against plain twistd, the cluster with 1 and N
workers under each policy, and Node's cluster where installed), startup.py
(cold start, SIGKILL to replacement), messages.py (against Node's
process.send), scrape.py (the --metrics page of 2 workers x 200 app series)
reload.py (rolling reloads under load) and upgrade.py (upgrading the master
in place under load, reuseport and round robin), one after the other so that no
two share the cores, then prints the machine, the versions
and one line per goal.  --quick runs fewer and shorter rounds, to try the
harness.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> None:
    print(f"\n$ {Path(sys.executable).name} benchmarks/{script} {' '.join(args)}")
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)


def machine() -> str:
    def first(argv: list[str]) -> str:
        if shutil.which(argv[0]) is None:
            return "not installed"
        out = subprocess.run(argv, capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0]

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}; "
        f"Python {platform.python_version()}, Twisted {version('Twisted')}, "
        f"Node {first(['node', '--version'])}, "
        f"{' '.join(first(['wrk', '--version']).split()[:2])}"
    )


def goals(
    throughput: list[dict], startup: dict, messages: dict, scrape: dict
) -> list[str]:
    by = {row["setup"]: row for row in throughput}
    twistd = by["twistd -ny (one process)"]
    one = by["cluster, 1 worker"]
    two = next(r for r in throughput if r["setup"].endswith("reuseport"))
    quietTwistd = by["twistd -ny, access log off"]
    quietOne = by["cluster, 1 worker, access log off"]
    rows = [
        ("2 workers, default policy, vs one twistd", two["ratio"], ">=", 1.75),
        ("  per-worker max/min, median of rounds", two["splitMedian"], "<=", 1.10),
        ("  per-worker max/min, worst round", two["splitWorst"], "<=", 1.25),
        ("1 worker vs one twistd", one["ratio"], ">=", 0.97),
        (
            "CPU/request, 1 worker / twistd, no access log",
            quietOne["cpuPerRequest"] / quietTwistd["cpuPerRequest"],
            "<=",
            1.03,
        ),
        (
            "  the same, the worker alone / twistd",
            quietOne["servingCpuPerRequest"] / quietTwistd["cpuPerRequest"],
            "<=",
            1.03,
        ),
        ("SIGKILL to replacement serving, ms", startup["replacementMs"], "<", 150),
        ("cold start of 2 workers, ms", startup["coldStartMs"], "<", 500),
        (
            "worker RSS above plain twistd, MiB",
            two["workerMiB"] - twistd["workerMiB"],
            "<=",
            5,
        ),
        ("master RSS, MiB", two["masterMiB"], "<", 50),
        ("metrics scrape, 2 workers x 200 series, ms", scrape["medianMs"], "<", 50),
    ]
    if messages.get("node"):
        rows.append(
            (
                "pipelined messages, median ours / Node's",
                messages["ours"]["pipelinedReceived"]
                / messages["node"]["pipelinedReceived"],
                ">=",
                1.0,
            )
        )
    lines = []
    for name, value, op, goal in rows:
        met = {"<": value < goal, "<=": value <= goal, ">=": value >= goal}[op]
        verdict = "met" if met else "MISSED"
        lines.append(f"{name:42s} {value:9.2f}   goal {op} {goal:<6} {verdict}")
    lost = startup["lostPerKill"]
    lines.append(
        f"{'requests lost per SIGKILL':42s} {max(lost):9d}   "
        f"at most {startup['inHandsAtMost']} in the killed worker's hands: {lost}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk (make bench does)")
    quick = options.quick
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run(
            "throughput.py",
            *("--rounds", "1" if quick else "5", "--seconds", "2" if quick else "5"),
            *("--json", str(out / "throughput.json")),
        )
        run(
            "startup.py",
            *("--rounds", "2" if quick else "7", "--json", str(out / "startup.json")),
        )
        run(
            "messages.py",
            *("--rounds", "2" if quick else "5", "--json", str(out / "messages.json")),
        )
        run(
            "scrape.py",
            *("--rounds", "1" if quick else "3", "--json", str(out / "scrape.json")),
        )
        if not quick:
            run("reload.py", "--seconds", "30", "--reloads", "4")
            for scheduling in ("reuseport", "roundrobin"):
                run("upgrade.py", "--upgrades", "4", "--scheduling", scheduling)
        results = [
            json.loads((out / f"{name}.json").read_text())
            for name in ("throughput", "startup", "messages", "scrape")
        ]
    print(f"\nmachine: {machine()}")
    print("\ngoals (issue 5), from the runs above:")
    for line in goals(*results):
        print(line)


if __name__ == "__main__":
    main()
