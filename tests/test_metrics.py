"""
The master's Prometheus page (C{--metrics}): merging and parsing workers'
pages, the cluster's metrics on a fake reactor, and real clusters scraped
over HTTP.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_cluster.commands import Online, Ready
from twisted_cluster.master.master import Master
from twisted_cluster.master.metrics import ClusterMetrics, MetricsPage, merge, parse
from twisted_cluster.master.restart import RestartPolicy
from twisted_cluster.master.supervisor import ClusterService, Limits

from .fakes import FakeProcessReactor
from .support import APPS, Cluster, freePort, get, waitFor

APP = APPS / "metrics.tac"
Start = Callable[..., Cluster]


# merge and parse


def samples(families: list[Metric]) -> dict[str, list[tuple[str, dict, float]]]:
    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples] for f in families
    }


def test_parseReadsAPage() -> None:
    text = b"# HELP hits_total Hits.\n# TYPE hits_total counter\nhits_total 3.0\n"
    (family,) = parse(1, text)
    assert (family.name, family.type, family.documentation) == (
        "hits",
        "counter",
        "Hits.",
    )
    assert [(s.name, s.value) for s in family.samples] == [("hits_total", 3.0)]


def test_parseEmptyPage() -> None:
    """
    A worker whose app does not use prometheus_client sends nothing.
    """
    assert parse(1, b"") == []


@pytest.mark.parametrize(
    "text",
    [
        b"hits{ 3\n",
        b"\xff\xfe not utf-8\n",
        b"# TYPE hits_total counter\nhits_total x\n",
    ],
)
def test_parseIgnoresAnUnparseablePageWithAWarning(text: bytes) -> None:
    with capturedLogs() as events:
        assert parse(2, text) == []
    (event,) = [e for e in events if e.get("log_level").name == "warn"]
    assert event["slot"] == 2
    assert "do not parse" in event["log_format"]


def counter(name: str, value: float, **labels: str) -> Metric:
    family = CounterMetricFamily(name, f"{name} help", labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def gauge(name: str, value: float) -> Metric:
    return GaugeMetricFamily(name, f"{name} help", value=value)


def test_mergeLabelsEachWorkersSamplesWithItsSlot() -> None:
    merged = list(
        merge(
            [
                (1, [counter("hits", 2, path="/")]),
                (2, [counter("hits", 5, path="/"), gauge("queue", 7)]),
            ]
        )
    )
    assert samples(merged) == {
        "hits": [
            ("hits_total", {"path": "/", "worker_slot": "1"}, 2),
            ("hits_total", {"path": "/", "worker_slot": "2"}, 5),
        ],
        "queue": [("queue", {"worker_slot": "2"}, 7)],
    }


def test_mergeLeavesTheMastersPageUnlabelled() -> None:
    merged = list(
        merge([(None, [gauge("open_fds", 30)]), (1, [gauge("open_fds", 14)])])
    )
    assert samples(merged) == {
        "open_fds": [("open_fds", {}, 30), ("open_fds", {"worker_slot": "1"}, 14)]
    }


def test_mergeLeavesOutAFamilyOfAnotherType() -> None:
    """
    The first page to give a family decides its type (and help); a later
    page giving it as another type is left out of it, not mixed in.
    """
    merged = list(
        merge(
            [
                (1, [gauge("jobs", 1)]),
                (2, [counter("jobs", 9)]),
                (3, [gauge("jobs", 3)]),
            ]
        )
    )
    (family,) = merged
    assert (family.type, family.documentation) == ("gauge", "jobs help")
    assert samples(merged) == {
        "jobs": [
            ("jobs", {"worker_slot": "1"}, 1),
            ("jobs", {"worker_slot": "3"}, 3),
        ]
    }


def test_mergeLeavesOutAFamilyOfAnotherTypeUnderItsPageName() -> None:
    """
    A counter C{hits} is C{hits_total} on a page: a gauge C{hits_total}
    from another worker is the same name with another type, left out, not
    a second C{# TYPE hits_total} line that would break the page.
    """
    merged = list(merge([(1, [counter("hits", 1)]), (2, [gauge("hits_total", 2)])]))
    assert samples(merged) == {"hits": [("hits_total", {"worker_slot": "1"}, 1)]}
    text = generate_latest(Registry(merged)).decode()
    assert text.count("# TYPE hits_total") == 1


class Registry:
    """
    What C{generate_latest} needs of a registry: its families.
    """

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def test_mergeOfNothing() -> None:
    assert list(merge([])) == []
    assert list(merge([(1, []), (None, [])])) == []


# ClusterMetrics on a fake reactor


class Harness:
    def __init__(self, count: int = 2) -> None:
        self.reactor = FakeProcessReactor()
        self.master = Master(self.reactor, environ={})
        self.fatal: list[str] = []
        self.policy = RestartPolicy(random=lambda: 0.5)
        self.service = ClusterService(
            self.master,
            count,
            self.reactor,
            onFatal=self.fatal.append,
            policy=self.policy,
            limits=Limits(gracefulTimeout=5.0, timeout=0, spares=0),
            memoryOf=lambda pid: None,
        )
        self.metrics = ClusterMetrics(self.service, self.reactor)

    def boot(self) -> None:
        for p in self.reactor.live:
            if p.peer is not None and "Online" not in p.peer.received:
                p.call(Online)
                p.call(Ready)

    def collected(self) -> dict[str, list[tuple[str, dict, float]]]:
        return samples(list(self.metrics.collect()))

    def page(self) -> dict[str, Metric]:
        results: list[bytes] = []
        self.metrics.page().addCallback(results.append)
        for p in self.reactor.live:
            assert p.pump is not None
            p.pump.flush()
        (text,) = results
        return parsePage(text.decode())


def value(
    found: dict[str, list[tuple[str, dict, float]]], name: str, **labels: str
) -> float:
    (v,) = [v for _, ls, v in found[name] if ls == labels]
    return v


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.service.startService()
    h.boot()
    h.reactor.advance(h.policy.stableAfter)
    return h


def test_collectCountsWorkersByState(h: Harness) -> None:
    found = h.collected()
    assert {ls["state"]: v for _, ls, v in found["twisted_cluster_workers"]} == {
        "starting": 0,
        "serving": 2,
        "spare": 0,
        "retiring": 0,
        "hung": 0,
    }
    assert value(found, "twisted_cluster_workers_wanted") == 2
    slots = {
        ls["worker_slot"]
        for _, ls, _ in found["twisted_cluster_worker_open_connections"]
    }
    assert slots == {"1", "2"}


def test_collectCountsRestartsByCause(h: Harness) -> None:
    """
    A worker killed by a signal and one that exits with an error count as
    restarts of different causes; their replacements take the same slots.
    """
    h.reactor.live[0].exit(signal="SIGKILL")
    h.boot()
    h.reactor.advance(h.policy.stableAfter)
    h.reactor.live[0].exit(code=1)
    h.boot()
    found = h.collected()
    restarts = {ls["cause"]: v for _, ls, v in found["twisted_cluster_worker_restarts"]}
    assert restarts == {
        "crash": 1,
        "signal": 1,
        "hang": 0,
        "memory": 0,
        "age": 0,
        "reload": 0,
    }
    assert value(found, "twisted_cluster_workers", state="serving") == 2
    slots = {
        ls["worker_slot"] for _, ls, _ in found["twisted_cluster_worker_messages_sent"]
    }
    assert slots == {"1", "2"}


HITS = "# HELP hits_total Hits.\n# TYPE hits_total counter\nhits_total {n}.0\n"


def test_pageMergesTheWorkersPages(h: Harness) -> None:
    for n, p in enumerate(h.reactor.live, 1):
        assert p.peer is not None
        p.peer.metrics = HITS.format(n=n).encode()
    families = h.page()
    hits = families["hits"]
    assert sorted((s.labels["worker_slot"], s.value) for s in hits.samples) == [
        ("1", 1.0),
        ("2", 2.0),
    ]
    assert "twisted_cluster_workers" in families
    assert h.metrics.unanswered == 0


def test_pageLeavesOutAWorkerThatDoesNotAnswer(h: Harness) -> None:
    """
    The page waits for a silent worker only C{timeout} seconds, leaves it
    out and counts it.
    """
    quiet, talking = h.reactor.live
    assert quiet.peer is not None and talking.peer is not None
    quiet.peer.metrics = None
    talking.peer.metrics = b"# TYPE hits_total counter\nhits_total 4.0\n"
    results: list[bytes] = []
    h.metrics.page().addCallback(results.append)
    for p in (quiet, talking):
        assert p.pump is not None
        p.pump.flush()
    assert results == []
    h.reactor.advance(0.99)
    assert results == []
    h.reactor.advance(0.01)
    (text,) = results
    families = parsePage(text.decode())
    assert [s.labels["worker_slot"] for s in families["hits"].samples] == ["2"]
    unanswered = families["twisted_cluster_metrics_unanswered"]
    assert [s.value for s in unanswered.samples] == [1.0]


def request(metrics: ClusterMetrics) -> tuple[Any, StringTransport]:
    """
    A GET of C{/metrics} on a real L{Site} over a string transport.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metrics))
    channel = Site(root).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    return channel, transport


def test_pageOverHTTP(h: Harness) -> None:
    channel, transport = request(h.metrics)
    for p in h.reactor.live:
        assert p.pump is not None
        p.pump.flush()
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower()
    assert "twisted_cluster_workers" in parsePage(body.decode())


def test_scraperGoneBeforeThePage(h: Harness) -> None:
    """
    A scraper that hangs up while the page waits for a silent worker (as
    Prometheus does at its scrape_timeout) costs no error when the page is
    ready.
    """
    quiet = h.reactor.live[0]
    assert quiet.peer is not None
    quiet.peer.metrics = None
    channel, transport = request(h.metrics)
    for p in h.reactor.live:
        assert p.pump is not None
        p.pump.flush()
    with capturedLogs() as events:
        channel.connectionLost(Failure(ConnectionDone()))
        h.reactor.advance(1.0)
        gc.collect()
    assert h.metrics.unanswered == 1
    assert [e for e in events if "log_failure" in e] == []
    assert transport.value() == b""


def test_pageLeavesOutAnAppFamilyNamedAsTheClusters(h: Harness) -> None:
    """
    An app that registers a metric of the cluster's own name does not give
    the page that name twice: the cluster's stays, the app's is left out.
    """
    for p in h.reactor.live:
        assert p.peer is not None
        p.peer.metrics = (
            b"# TYPE twisted_cluster_workers gauge\ntwisted_cluster_workers 5.0\n"
            b"# TYPE twisted_cluster_reloads_total counter\n"
            b"twisted_cluster_reloads_total 7.0\n" + HITS.format(n=1).encode()
        )
    families = h.page()  # parsePage: each family name once
    workers = families["twisted_cluster_workers"].samples
    assert all("worker_slot" not in s.labels for s in workers)
    reloads = families["twisted_cluster_reloads"].samples
    assert all("worker_slot" not in s.labels for s in reloads)
    assert len(families["hits"].samples) == 2


def test_pageWithoutWorkers() -> None:
    h = Harness()
    families = h.page()
    (serving,) = [
        s
        for s in families["twisted_cluster_workers"].samples
        if s.labels == {"state": "serving"}
    ]
    assert serving.value == 0
    assert "process_cpu_seconds" in families


# Real clusters


def parsePage(text: str) -> dict[str, Metric]:
    """
    The families of a page in Prometheus' text format, by name; each name,
    and each sample's name and labels, appears once.
    """
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), f"a family appears twice: {names}"
    seen = [
        (s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples
    ]
    assert len(seen) == len(set(seen)), "a sample appears twice"
    return {f.name: f for f in families}


def scrape(port: int, timeout: float = 10.0) -> dict[str, Metric]:
    return parsePage(get(port, "/metrics", timeout=timeout))


def sampleValue(families: dict[str, Metric], name: str, **labels: str) -> float:
    """
    The value of the one sample called C{name} with C{labels} (a counter's
    sample name ends in C{_total}, its family's does not).
    """
    (found,) = [
        s.value
        for f in families.values()
        for s in f.samples
        if s.name == name and s.labels == labels
    ]
    return found


def appRequests(families: dict[str, Metric]) -> dict[str, float]:
    """
    The app's request counter by worker slot.
    """
    return {
        s.labels["worker_slot"]: s.value
        for s in families["app_requests"].samples
        if s.name == "app_requests_total"
    }


def startMetrics(
    cluster: Start, workers: int = 2, env: dict[str, str] | None = None
) -> tuple[Cluster, int, int]:
    port, metricsPort = freePort(), freePort()
    c = cluster(
        APP,
        workers=workers,
        env={"PORT": str(port), **(env or {})},
        args=["--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"],
    )
    waitFor(
        lambda: serving(metricsPort) == workers,
        what=f"{workers} workers serving on the metrics page",
    )
    return c, port, metricsPort


def serving(metricsPort: int) -> float | None:
    try:
        families = scrape(metricsPort)
    except OSError:
        return None
    return sampleValue(families, "twisted_cluster_workers", state="serving")


@pytest.mark.timeout(60)
def test_pageOfARealCluster(cluster: Start) -> None:
    """
    The page parses as Prometheus text with no family twice; it counts the
    serving workers, a SIGKILLed worker as a restart by signal, and the
    app's counter of each worker under its slot, the same N slots after a
    worker was replaced.
    """
    workers, requests = 3, 12
    c, port, metricsPort = startMetrics(cluster, workers)
    for _ in range(requests):
        get(port)
    families = scrape(metricsPort)
    assert sampleValue(families, "twisted_cluster_workers", state="serving") == workers
    assert sampleValue(families, "twisted_cluster_workers_wanted") == workers
    counts = appRequests(families)
    assert set(counts) == {"1", "2", "3"}
    assert sum(counts.values()) == requests
    assert (
        sampleValue(families, "twisted_cluster_worker_restarts_total", cause="signal")
        == 0
    )
    # The master's own process figures, unlabelled, beside the workers'.
    slots = {
        s.labels.get("worker_slot") for s in families["process_cpu_seconds"].samples
    }
    assert slots == {None, "1", "2", "3"}

    victim = c.workerPids()[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> dict[str, Metric] | None:
        families = scrape(metricsPort)
        restarts = sampleValue(
            families, "twisted_cluster_worker_restarts_total", cause="signal"
        )
        up = sampleValue(families, "twisted_cluster_workers", state="serving")
        # The replacement serves; its first answer may miss a scrape's 1 s
        # while it finishes starting on a loaded machine.
        answered = set(appRequests(families)) == {"1", "2", "3"}
        return families if restarts == 1 and up == workers and answered else None

    families = waitFor(replaced, what="the killed worker replaced")
    assert victim not in c.workerPids()
    counts = appRequests(families)
    assert set(counts) == {"1", "2", "3"}
    assert sum(counts.values()) <= requests
    for _ in range(requests):
        get(port)
    after = appRequests(scrape(metricsPort))
    assert set(after) == {"1", "2", "3"}
    assert sum(after.values()) == sum(counts.values()) + requests
    for name in ("crash", "hang", "memory", "age", "reload"):
        assert (
            sampleValue(families, "twisted_cluster_worker_restarts_total", cause=name)
            == 0
        )


def blockOne(port: int, seconds: float) -> threading.Thread:
    """
    Block one worker's reactor for C{seconds}, from a thread.
    """

    def block() -> None:
        try:
            get(port, f"/block?s={seconds}", timeout=seconds + 10)
        except OSError:
            pass

    thread = threading.Thread(target=block, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_blockedWorkerIsLeftOut(cluster: Start) -> None:
    """
    A worker whose reactor is blocked is left out of the scrape, which
    still answers in about a second, and counted as unanswered; once it
    answers again, it is back on the page.
    """
    c, port, metricsPort = startMetrics(cluster, 2)
    for _ in range(4):
        get(port)
    before = sampleValue(
        scrape(metricsPort), "twisted_cluster_metrics_unanswered_total"
    )
    blocked = blockOne(port, 6)
    times: list[float] = []

    def leftOut() -> dict[str, Metric] | None:
        began = time.monotonic()
        families = scrape(metricsPort)
        times.append(time.monotonic() - began)
        return families if len(appRequests(families)) == 1 else None

    families = waitFor(leftOut, timeout=5, what="a scrape without the blocked worker")
    assert times[-1] < 1.5, times
    assert max(times) < 1.5, times
    assert sampleValue(families, "twisted_cluster_metrics_unanswered_total") > before
    # The cluster's own figures still list both slots.
    rss = families["twisted_cluster_worker_resident_memory_bytes"].samples
    assert {s.labels["worker_slot"] for s in rss} == {"1", "2"}
    blocked.join(20)
    waitFor(
        lambda: set(appRequests(scrape(metricsPort))) == {"1", "2"},
        what="the unblocked worker back on the page",
    )
    assert "Unhandled error" not in c.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("endpoint", ["bogus:9100", "tcp:notaport"])
def test_badEndpoint(cluster: Start, endpoint: str) -> None:
    c = cluster(APP, env={"PORT": str(freePort())}, args=["--metrics", endpoint])
    assert c.wait(20) != 0
    lines = c.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert "--metrics" in lines[0] and endpoint in lines[0]


@pytest.mark.timeout(30)
def test_metricsPortInUse(cluster: Start, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        metricsPort = taken.getsockname()[1]
        c = cluster(
            APP,
            env={"PORT": str(freePort())},
            args=["--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"],
        )
        assert c.wait(20) == 1
    lines = c.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert "cannot serve metrics" in lines[0]
    assert str(metricsPort) in lines[0]
