"""
Cold start and death-to-replacement times of a real cluster.

    .venv/bin/python benchmarks/startup.py [--rounds 5] [--workers 2]

Cold start: from launching `twistd cluster` until every worker has answered
on a new connection.  Replacement: from SIGKILL of a worker that has been up
past the restart policy's stableAfter (so it is replaced at once) until its
replacement answers, while --clients threads each send one request per
connection; a request that fails was lost with the killed worker, which can
have had at most one per client in hand.  Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from _cluster import exampleCluster, freePort


def who(port: int) -> tuple[str, int] | None:
    """The worker id and pid that answer a new connection, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    words = data.split(b"\r\n\r\n", 1)[-1].split()
    if len(words) < 6:
        return None  # Closed before a whole answer: lost.
    return words[3].decode(), int(words[5].rstrip(b")"))


def until(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.002)
    raise SystemExit("timed out")


@contextmanager
def load(port: int, clients: int) -> Iterator[list[int]]:
    """
    Requests from C{clients} threads, one per connection, until the block
    ends; yields [answered, failed].
    """
    counts = [0, 0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            counts[who(port) is None] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join()


def oneRound(
    port: int, workers: int, stableAfter: float, clients: int, spares: int
) -> tuple[float, float, list[int]]:
    """Start a cluster, time its cold start, then one replacement under load."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        spare = ("--spares", str(spares))
        with exampleCluster(port, workers, tmp, stopTimeout=0.0, args=spare):
            pids: dict[str, int] = {}
            while len(pids) < workers:
                answer = until(lambda: who(port))
                pids[answer[0]] = answer[1]
            cold = time.monotonic() - start
            # Past stableAfter, the first death is replaced without delay.
            time.sleep(max(0.0, stableAfter - cold) + 0.2)
            with load(port, clients) as counts:
                time.sleep(0.5)
                killed = time.monotonic()
                os.kill(pids[min(pids)], signal.SIGKILL)

                def replaced() -> bool:
                    answer = who(port)
                    return answer is not None and answer[0] not in pids

                until(replaced)
                replacement = time.monotonic() - killed
                time.sleep(0.5)
            return cold, replacement, counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stable-after", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--spares", type=int, default=1)
    parser.add_argument("--json", help="also write the medians to this file")
    options = parser.parse_args()
    colds, replacements, lost = [], [], []
    for n in range(options.rounds):
        cold, replaced, (answered, failed) = oneRound(
            freePort(),
            options.workers,
            options.stable_after,
            options.clients,
            options.spares,
        )
        colds.append(cold)
        replacements.append(replaced)
        lost.append(failed)
        print(
            f"round {n + 1}: cold start {cold * 1000:.0f} ms, "
            f"SIGKILL to replacement serving {replaced * 1000:.0f} ms, "
            f"{failed} of {answered + failed} requests lost "
            f"(at most {options.clients} in the killed worker's hands)",
            flush=True,
        )
    print(
        f"median cold start of {options.workers} workers: "
        f"{statistics.median(colds) * 1000:.0f} ms"
    )
    print(
        f"median SIGKILL to replacement serving: "
        f"{statistics.median(replacements) * 1000:.0f} ms"
    )
    print(f"requests lost per kill: {lost} (at most {options.clients} each)")
    if options.json:
        with open(options.json, "w") as f:
            json.dump(
                {
                    "coldStartMs": statistics.median(colds) * 1000,
                    "replacementMs": statistics.median(replacements) * 1000,
                    "lostPerKill": lost,
                    "inHandsAtMost": options.clients,
                },
                f,
            )


if __name__ == "__main__":
    main()
