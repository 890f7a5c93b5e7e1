"""
The time of a full scrape of the master's /metrics page, from the client's
side: a cluster of --workers workers (2) whose app registers --series
series (200: a Counter with that many label values, benchmarks/series.tac),
so each scrape asks every worker for its page over its channel, parses and
merges them.

    .venv/bin/python benchmarks/scrape.py [--rounds 3] [--scrapes 50] [--json F]

Each round starts a cluster, waits until its page shows every worker's
series, scrapes --warmup times, then --scrapes times on a new connection
each (as Prometheus does after an idle interval), timing each from connect
to the last byte.  Prints each round's median and p90 and the page's size,
then the median and p90 over all rounds' scrapes; --json writes the same.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

from _cluster import exampleCluster, freePort
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
APP = HERE / "series.tac"


def scrape(port: int) -> bytes:
    """One GET of /metrics on a new connection; the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError(f"bad answer: {head[:40]!r}")
    return body


def ready(port: int, workers: int, series: int) -> bool:
    """Whether the page shows C{series} app series from each of C{workers}."""
    try:
        page = scrape(port).decode()
    except OSError:
        return False
    found = sum(
        1
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "bench_series_total" and "worker_slot" in sample.labels
    )
    return found == workers * series


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--json", help="also write the summary to this file")
    options = parser.parse_args()
    times: list[float] = []
    size = 0
    for n in range(options.rounds):
        port, metricsPort = freePort(), freePort()
        with (
            tempfile.TemporaryDirectory() as tmp,
            exampleCluster(
                port,
                options.workers,
                tmp,
                args=("--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"),
                app=APP,
                env={"SERIES": str(options.series)},
            ),
        ):
            deadline = time.monotonic() + 30
            while not ready(metricsPort, options.workers, options.series):
                if time.monotonic() > deadline:
                    raise SystemExit("the cluster's page never showed every series")
                time.sleep(0.05)
            for _ in range(options.warmup):
                scrape(metricsPort)
            these = []
            for _ in range(options.scrapes):
                began = time.perf_counter()
                size = len(scrape(metricsPort))
                these.append((time.perf_counter() - began) * 1000)
        times += these
        print(
            f"round {n + 1}: median {statistics.median(these):6.2f} ms"
            f"  p90 {percentile(these, 0.9):6.2f} ms  max {max(these):6.2f} ms"
            f"  page {size / 1024:.0f} KiB",
            flush=True,
        )
    summary = {
        "workers": options.workers,
        "series": options.series,
        "scrapes": len(times),
        "medianMs": statistics.median(times),
        "p90Ms": percentile(times, 0.9),
        "maxMs": max(times),
        "pageBytes": size,
    }
    print(
        f"\nmetrics scrape, {options.workers} workers x {options.series} series:"
        f" median {summary['medianMs']:.2f} ms, p90 {summary['p90Ms']:.2f} ms"
        f" over {len(times)} scrapes (goal: median < 50 ms)"
    )
    if options.json:
        with open(options.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
