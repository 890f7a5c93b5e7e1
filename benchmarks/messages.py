"""
Message throughput between the master and a worker.

    .venv/bin/python benchmarks/messages.py [--count 20000]

Small messages ({"n": i}) master to worker, pipelined (all sent, then all
acknowledged) and one at a time (each awaited); then one 16 MiB message.
A send counts once the worker has it (its Deferred has fired).  When node is
installed, benchmarks/node_messages.js measures Node's process.send the same
way in the same run, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    options = parser.parse_args()

    def report(ours: dict) -> None:
        print(
            f"twisted-cluster: {ours['pipelined']:,.0f} msg/s pipelined, "
            f"{ours['oneAtATime']:,.0f} msg/s one at a time, "
            f"16 MiB message in {ours['big16MiB'] * 1000:.0f} ms"
        )
        theirs = node(options.count)
        if theirs:
            print(
                f"node cluster:    {theirs['pipelinedReceived']:,.0f} msg/s pipelined "
                "until the worker has them all"
            )
            print(
                f"node cluster:    {theirs['pipelined']:,.0f} msg/s pipelined, "
                f"{theirs['oneAtATime']:,.0f} msg/s one at a time, "
                f"16 MiB message in {theirs['big16MiB'] * 1000:.0f} ms"
            )
            print(
                "  (node's send callback runs once the message is written, ours "
                "once the worker has it)"
            )
            print(
                f"ratio (ours / node, pipelined until received): "
                f"{ours['pipelined'] / theirs['pipelinedReceived']:.2f}"
            )

    d = measure(options.count)
    d.addCallback(report)
    d.addErrback(lambda f: print(f.getTraceback(), file=sys.stderr))
    d.addBoth(lambda _: reactor.stop())


if cluster.isMaster:
    reactor.callWhenRunning(main)
reactor.run()
