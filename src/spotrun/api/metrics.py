"""``GET /metrics``: what an operator's Prometheus scrapes from every ``spotrun server``.

Each server has a registry of its own (never prometheus_client's global one, so two
servers in one process, as in the tests, do not mix their figures). What lives in the
store is read from it at scrape time by a collector, so every server of a shared database
reports the same job figures, whichever leads:

* ``spotrun_jobs{status}`` (gauge): jobs by status;
* ``spotrun_interruptions_total``: interruptions over every job;
* ``spotrun_instance_seconds_total`` and ``spotrun_billable_seconds_total``: the jobs'
  training and billable seconds, the figures DescribeTrainingJob gives
  (``TrainingTimeInSeconds``, ``BillableTimeInSeconds``) summed;
* ``spotrun_controller_leader{server}`` (gauge): 1 on the server that holds the controller
  lease, 0 on the others.

What happens in this process is counted as it happens:

* ``spotrun_controller_pass_seconds`` (histogram): one controller pass over the due jobs,
  observed by the server that runs it (the leader);
* ``spotrun_agent_report_seconds`` (histogram): how long the instance API took to apply one
  agent report batch.

The endpoint answers without a signature, like most scrape targets; see the README for why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from spotrun.spec import TrainingJobStatus
from spotrun.store import JobTotals

METRICS_PATH = "/metrics"

#: a pass over a few due jobs takes milliseconds; over a thousand, while agents report at
#: the same time, tens of seconds
PASS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: a heartbeat is a millisecond or two; a batch of thousands of lines, a good part of a second
REPORT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Source:
    """What the store-backed figures are read from at scrape time."""

    #: figures over every job, summed by the database at each scrape
    totals: Callable[[], JobTotals]
    #: this server's id
    server: Callable[[], str]
    #: whether this server holds the controller lease now
    leading: Callable[[], bool]


class _StoreCollector(Collector):
    """Reads the job figures and the lease at scrape time (nothing is cached)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        totals = self.source.totals()
        by_status = GaugeMetricFamily("spotrun_jobs", "Training jobs by status", labels=["status"])
        for status in TrainingJobStatus:
            by_status.add_metric([status.value], totals.by_status.get(status.value, 0))
        yield by_status
        yield CounterMetricFamily(
            "spotrun_interruptions",
            "Spot interruptions over every job",
            value=totals.interruptions,
        )
        yield CounterMetricFamily(
            "spotrun_instance_seconds",
            "Seconds the jobs' instances trained (TrainingTimeInSeconds, summed)",
            value=totals.training_seconds,
        )
        yield CounterMetricFamily(
            "spotrun_billable_seconds",
            "Seconds billed for the jobs (BillableTimeInSeconds, summed)",
            value=totals.billable_seconds,
        )
        leader = GaugeMetricFamily(
            "spotrun_controller_leader",
            "1 on the server that holds the controller lease, 0 on the others",
            labels=["server"],
        )
        leader.add_metric([self.source.server()], 1.0 if self.source.leading() else 0.0)
        yield leader


class ServerMetrics:
    """One server's registry: the store collector and the histograms this process feeds."""

    def __init__(self, source: Source) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(source))
        self.passes = Histogram(
            "spotrun_controller_pass_seconds",
            "Wall time of one controller pass over the due jobs",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.reports = Histogram(
            "spotrun_agent_report_seconds",
            "Time the instance API took to apply one agent report batch",
            buckets=REPORT_BUCKETS,
            registry=self.registry,
        )

    def observe_pass(self, seconds: float) -> None:
        self.passes.observe(seconds)

    def observe_report(self, seconds: float) -> None:
        self.reports.observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)


def mount(app: FastAPI, metrics: ServerMetrics) -> None:
    """Add ``GET /metrics`` to ``app`` (unsigned, left out of the OpenAPI document)."""

    @app.get(METRICS_PATH, include_in_schema=False)
    def scrape() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
