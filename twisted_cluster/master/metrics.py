"""
The master's Prometheus page (C{--metrics ENDPOINT}): the cluster's own
metrics, the master's process figures, and every serving worker's app
metrics, collected over its channel at scrape time and merged under a
C{worker_slot} label.

Slots are stable (1..N, reused by a replacement), so a restart does not add
series.  A worker that does not answer within C{timeout} seconds is left
out of that scrape and counted; it never holds the page up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .roster import Role, WorkerRecord
from .usage import cpuSeconds, residentBytes

if TYPE_CHECKING:
    from .supervisor import ClusterService

TIMEOUT = 1.0
"""Seconds a worker gets to hand over its metrics for one scrape."""

SLOT = "worker_slot"


class ClusterMetrics:
    """
    Builds the page of a L{ClusterService}'s master.
    """

    _log = Logger()

    def __init__(
        self, service: ClusterService, reactor: Any, timeout: float = TIMEOUT
    ) -> None:
        self._service = service
        self._reactor = reactor
        self._timeout = timeout
        self.unanswered = 0
        self._apps: list[Metric] = []
        # The master's own process figures share families with the workers':
        # merged with theirs, not a collector of the registry beside them.
        self._process = ProcessCollector(registry=None)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def page(self) -> Deferred[bytes]:
        """
        The page now, in Prometheus' text format, once every serving worker
        has answered or run out of time.
        """
        serving = self._service.roster.having(Role.serving, Role.retiring)
        asked = [r for r in serving if r.worker.slot is not None]
        answers = [
            r.worker.metrics().addTimeout(self._timeout, self._reactor) for r in asked
        ]
        d = DeferredList(answers, consumeErrors=True)

        def render(results: list[tuple[bool, Any]]) -> bytes:
            pages: list[tuple[int | None, list[Metric]]] = [
                (None, list(self._process.collect()))
            ]
            for record, (ok, text) in zip(asked, results, strict=True):
                if ok:
                    pages.append((record.worker.slot, parse(record.worker.slot, text)))
                else:
                    self.unanswered += 1
            self._apps = list(merge(pages))
            try:
                return generate_latest(self._registry)
            finally:
                self._apps = []

        return d.addCallback(render)

    def collect(self) -> Iterator[Metric]:
        """
        The cluster's metrics and the workers' merged (for the registry); an
        app's family named as one of the cluster's is left out, as the page
        may give each name once.
        """
        own = list(self._own())
        taken = set().union(*map(names, own))
        yield from own
        yield from (f for f in self._apps if not names(f) & taken)

    def _own(self) -> Iterator[Metric]:
        service = self._service
        records = list(service.roster)
        workers = GaugeMetricFamily(
            "twisted_cluster_workers", "Workers by state.", labels=["state"]
        )
        for state in ("starting", "serving", "spare", "retiring", "hung"):
            workers.add_metric([state], sum(1 for r in records if r.state == state))
        yield workers
        yield GaugeMetricFamily(
            "twisted_cluster_workers_wanted",
            "The number of workers the cluster runs.",
            value=service.count,
        )
        restarts = CounterMetricFamily(
            "twisted_cluster_worker_restarts",
            "Workers replaced, by cause.",
            labels=["cause"],
        )
        for cause, count in service.roster.restarts.items():
            restarts.add_metric([cause], count)
        yield restarts
        reloads = CounterMetricFamily(
            "twisted_cluster_reloads", "Reloads, by outcome.", labels=["outcome"]
        )
        for outcome, count in service.reloads.items():
            reloads.add_metric([outcome], count)
        yield reloads
        yield CounterMetricFamily(
            "twisted_cluster_metrics_unanswered",
            "Workers left out of a scrape: they did not answer in time.",
            value=self.unanswered,
        )
        yield from _perWorker([r for r in records if r.worker.slot is not None])


def _perWorker(records: list[WorkerRecord]) -> Iterator[Metric]:
    def family(kind: type, name: str, help: str) -> Any:
        return kind(f"twisted_cluster_worker_{name}", help, labels=[SLOT])

    cpu = family(CounterMetricFamily, "cpu_seconds", "CPU time, user and system.")
    rss = family(GaugeMetricFamily, "resident_memory_bytes", "Resident memory.")
    open_ = family(GaugeMetricFamily, "open_connections", "Connections open.")
    accepted = family(CounterMetricFamily, "accepted_connections", "Connections.")
    received = family(
        CounterMetricFamily, "messages_received", "Messages the master got from it."
    )
    sent = family(CounterMetricFamily, "messages_sent", "Messages the master sent it.")
    trip = family(
        GaugeMetricFamily, "heartbeat_seconds", "The last heartbeat's round trip."
    )
    for record in records:
        worker = record.worker
        slot = [str(worker.slot)]
        if worker.pid is not None:
            if (used := cpuSeconds(worker.pid)) is not None:
                cpu.add_metric(slot, used)
            if (resident := residentBytes(worker.pid)) is not None:
                rss.add_metric(slot, resident)
        open_.add_metric(slot, record.figures.open)
        accepted.add_metric(slot, record.figures.accepted)
        received.add_metric(slot, worker.messagesIn)
        sent.add_metric(slot, worker.messagesOut)
        if record.figures.roundTrip is not None:
            trip.add_metric(slot, record.figures.roundTrip)
    yield from (cpu, rss, open_, accepted, received, sent, trip)


def parse(slot: int | None, text: bytes) -> list[Metric]:
    """
    The metric families of a worker's page; none if it does not parse.
    """
    try:
        return list(text_string_to_metric_families(text.decode("utf-8")))
    except (ValueError, UnicodeDecodeError, IndexError, KeyError) as e:
        ClusterMetrics._log.warn(
            "The worker in slot {slot} sent metrics that do not parse: {e}",
            slot=slot,
            e=e,
        )
        return []


def names(family: Metric) -> set[str]:
    """
    The names C{family} may not share with another: its own, and the one it
    has on a page (a counter's family C{hits} is C{hits_total} there, as a
    gauge C{hits_total} would be).
    """
    exposed = f"{family.name}_total" if family.type == "counter" else family.name
    return {family.name, exposed}


def merge(pages: Iterable[tuple[int | None, list[Metric]]]) -> Iterator[Metric]:
    """
    The metric families of many pages as one, each sample labelled with its
    page's worker slot (none for the master's own); a family's name, help
    and type are those its first page gave, and a page giving it another
    type (under either of its L{names}, as a counter C{hits} and a gauge
    C{hits} or C{hits_total}) is left out of it.
    """
    merged: list[Metric] = []
    byName: dict[str, Metric] = {}
    for slot, page in pages:
        for family in page:
            taken = names(family)
            into = next((byName[n] for n in sorted(taken) if n in byName), None)
            if into is None:
                into = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                merged.append(into)
                byName.update(dict.fromkeys(taken, into))
            if into.type != family.type or into.name != family.name:
                continue
            for sample in family.samples:
                labels = dict(sample.labels)
                if slot is not None:
                    labels[SLOT] = str(slot)
                into.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp)
                )
    return iter(merged)


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text format."""


class MetricsPage(Resource):
    """
    C{/metrics}: the page of a L{ClusterMetrics}.
    """

    isLeaf = True

    def __init__(self, metrics: ClusterMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> object:
        # A scraper may hang up while the page waits for its workers (at
        # Prometheus' scrape_timeout): finishing its request then would raise.
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def write(body: bytes) -> None:
            if gone:
                return
            request.setHeader(b"content-type", CONTENT_TYPE)
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            ClusterMetrics._log.failure("Cannot build the metrics page", failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        self._metrics.page().addCallbacks(write, failed)
        return NOT_DONE_YET


def metricsRoot(metrics: ClusterMetrics) -> Resource:
    """
    The resource tree of a metrics endpoint: C{/metrics}.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metrics))
    return root
