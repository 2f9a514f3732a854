"""``/metrics``: the master's state in the Prometheus text format, written by prometheus-client.

Every metric but the fetch latencies is read from the master's state at scrape time (so
a master restarted with its ``--state-dir`` exports the same totals); the fetch latencies
are what reducers reported to this master process since it started.

==========================================  =========  ==========================================
metric                                      type       what
==========================================  =========  ==========================================
``mapreduce_workers{state}``                gauge      workers known, ``alive`` or ``lost``
``mapreduce_jobs{state}``                   gauge      jobs: queued, running, succeeded, failed,
                                                       cancelled
``mapreduce_tasks{job,kind,state}``         gauge      tasks of each job: idle, in_progress,
                                                       completed
``mapreduce_shuffle_bytes_total``           counter    bytes of map output written for the shuffle
``mapreduce_failed_attempts_total``         counter    task attempts that failed
``mapreduce_task_duration_seconds{kind}``   histogram  seconds of the committed attempt of each
                                                       completed map or reduce task
``mapreduce_shuffle_fetch_seconds``         histogram  seconds each fetch of a map output took
==========================================  =========  ==========================================
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mapreduce.core import queries
from mapreduce.master.driver import LatencyHistogram, MasterDriver
from mapreduce.web import views

#: Upper bounds (seconds) of the task duration histogram's buckets.
TASK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Every metric /metrics exports (the README lists them; a test checks the page holds them).
METRICS = (
    "mapreduce_workers",
    "mapreduce_jobs",
    "mapreduce_tasks",
    "mapreduce_shuffle_bytes_total",
    "mapreduce_failed_attempts_total",
    "mapreduce_task_duration_seconds",
    "mapreduce_shuffle_fetch_seconds",
)


class _StateCollector(Collector):
    """The metrics read from the master's state, at each scrape."""

    def __init__(self, driver: MasterDriver) -> None:
        self.driver = driver

    def collect(self) -> Iterator[Metric]:
        cluster = views.cluster_view(self.driver)
        workers = GaugeMetricFamily(
            "mapreduce_workers", "Workers known to the master, by state.", labels=["state"]
        )
        for state in ("alive", "lost"):
            workers.add_metric([state], sum(w["state"] == state for w in cluster["workers"]))
        yield workers
        jobs = GaugeMetricFamily("mapreduce_jobs", "Jobs by state.", labels=["state"])
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            jobs.add_metric([state], sum(j["state"] == state for j in cluster["jobs"]))
        yield jobs
        tasks = GaugeMetricFamily(
            "mapreduce_tasks", "Tasks by job, kind and state.", labels=["job", "kind", "state"]
        )
        for job in cluster["jobs"]:
            for kind, counts in (("map", job["maps"]), ("reduce", job["reduces"])):
                for state in ("idle", "in_progress", "completed"):
                    tasks.add_metric([job["id"], kind, state], counts[state])
        yield tasks
        with self.driver.lock:
            totals = queries.totals(self.driver.state)
        yield CounterMetricFamily(
            "mapreduce_shuffle_bytes",
            "Bytes of map output written for the shuffle.",
            value=totals.shuffle_bytes,
        )
        yield CounterMetricFamily(
            "mapreduce_failed_attempts", "Task attempts that failed.", value=totals.failed_attempts
        )
        durations = HistogramMetricFamily(
            "mapreduce_task_duration_seconds",
            "Seconds of the committed attempt of each completed task.",
            labels=["kind"],
        )
        for kind, seconds in totals.task_seconds.items():
            buckets = [
                (str(float(bound)), sum(1 for s in seconds if s <= bound)) for bound in TASK_BUCKETS
            ]
            buckets.append(("+Inf", len(seconds)))
            durations.add_metric([kind], buckets, sum_value=sum(seconds))
        yield durations


class _HistogramCollector(Collector):
    """A :class:`LatencyHistogram`, exported as prometheus-client exports its ``Histogram``
    (buckets, count, sum, and the ``_created`` gauge)."""

    def __init__(self, histogram: LatencyHistogram) -> None:
        self.histogram = histogram

    def collect(self) -> Iterator[Metric]:
        h = self.histogram
        bounds, count, total = h.snapshot()
        buckets = [(str(float(bound)), float(n)) for bound, n in bounds]
        buckets.append(("+Inf", float(count)))
        yield HistogramMetricFamily(h.name, h.documentation, buckets=buckets, sum_value=total)
        yield GaugeMetricFamily(f"{h.name}_created", h.documentation, value=h.created)


def exposition(driver: MasterDriver) -> str:
    """The page ``/metrics`` serves."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StateCollector(driver))
    registry.register(_HistogramCollector(driver.fetch_seconds))
    return generate_latest(registry).decode("utf-8")
