"""
Message throughput between the master and a worker, against Node's cluster.

    .venv/bin/python benchmarks/messages.py [--count 20000] [--rounds 5] [--json F]

Each round forks a fresh worker and measures, with small messages
({"n": i}) master to worker:

- pipelined until received: all sent in one go, until the worker says it has
  them all (the same measure as Node's below);
- pipelined until acknowledged: all sent, until every send() Deferred has
  fired;
- one at a time: each send awaited before the next;
- one 16 MiB message.

When node is installed, benchmarks/node_messages.js measures Node's
process.send the same way, interleaved, in each round.  Prints every round,
then medians and the ratio ours / Node's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, reactor

from twisted_cluster import cluster

BIG = 16 * 1024 * 1024


@defer.inlineCallbacks
def measure(count: int):
    worker = cluster.fork()
    online = defer.Deferred()
    worker.once("online", lambda: online.callback(None))
    yield online
    results = {}

    start = time.perf_counter()
    everything = defer.Deferred()
    worker.once("message", everything.callback)
    for n in range(count):
        worker.send({"n": n, "of": count})
    yield everything
    results["pipelinedReceived"] = count / (time.perf_counter() - start)

    start = time.perf_counter()
    yield defer.gatherResults([worker.send({"n": n}) for n in range(count)])
    results["pipelined"] = count / (time.perf_counter() - start)

    few = max(1, count // 4)
    start = time.perf_counter()
    for n in range(few):
        yield worker.send({"n": n})
    results["oneAtATime"] = few / (time.perf_counter() - start)

    big = "x" * BIG
    start = time.perf_counter()
    yield worker.send(big)
    results["big16MiB"] = time.perf_counter() - start
    yield worker.disconnect()
    return results


def node(count: int) -> dict | None:
    if shutil.which("node") is None:
        return None
    script = Path(__file__).with_name("node_messages.js")
    out = subprocess.run(
        ["node", str(script), str(count)], capture_output=True, text=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(who: str, r: dict) -> str:
    return (
        f"{who:16s} {r['pipelinedReceived']:9,.0f} {r['pipelined']:9,.0f} "
        f"{r['oneAtATime']:9,.0f} {r['big16MiB'] * 1000:9.0f}"
    )


HEADER = f"{'msg/s':16s} {'received':>9s} {'acked':>9s} {'1 by 1':>9s} {'16MiB ms':>9s}"


@defer.inlineCallbacks
def main(count: int, rounds: int, jsonPath: str | None):
    ours, theirs = [], []
    print(HEADER)
    for n in range(rounds):
        ours.append((yield measure(count)))
        print(line(f"round {n + 1} ours", ours[-1]), flush=True)
        other = node(count)
        if other:
            theirs.append(other)
            print(line(f"round {n + 1} node", other), flush=True)

    def median(results: list[dict]) -> dict:
        return {k: statistics.median(r[k] for r in results) for k in results[0]}

    print("\nmedians")
    print(HEADER)
    print(line("twisted-cluster", median(ours)))
    ratios: list[float] = []
    if theirs:
        print(line("node cluster", median(theirs)))
        ratios = [
            o["pipelinedReceived"] / t["pipelinedReceived"]
            for o, t in zip(ours, theirs, strict=True)
        ]
        print(
            "ours / node, pipelined until received: median "
            f"{statistics.median(ratios):.2f}, per round "
            + " ".join(f"{r:.2f}" for r in ratios)
        )
        print(
            "(node's acked column is its send callback, which runs once the "
            "message is written; ours once the worker has it)"
        )
    if jsonPath:
        with open(jsonPath, "w") as f:
            json.dump(
                {
                    "ours": median(ours),
                    "node": median(theirs) if theirs else None,
                    "ratios": ratios,
                },
                f,
            )


def counting() -> None:
    """
    In the worker: say "all" once every message of a burst has arrived.
    """
    seen = 0

    def received(message: object) -> None:
        nonlocal seen
        if isinstance(message, dict) and "of" in message:
            seen += 1
            if seen == message["of"]:
                seen = 0
                cluster.worker.send("all")

    cluster.worker.on("message", received)


if cluster.isMaster:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the medians to this file")
    options = parser.parse_args()

    def run() -> None:
        d = main(options.count, options.rounds, options.json)
        d.addErrback(lambda f: print(f.getTraceback(), file=sys.stderr))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
else:
    counting()
reactor.run()
