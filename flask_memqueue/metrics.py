"""Prometheus metrics for ``GET <prefix>/metrics``, fed by the job signals.

Everything about metrics is in this module. ``init_app`` calls
:func:`install` when ``MEMQUEUE_METRICS`` is on (off by default: counting
costs each job a few signal sends, several microseconds) and
``prometheus_client`` is importable (the ``metrics`` extra; :func:`~flask_memqueue.extras.install_hint`);
otherwise no receiver is connected, so the job path pays nothing, and the
route answers 501 (extra missing) or 404 (turned off) saying why.

Each app gets its own :class:`~prometheus_client.CollectorRegistry`, so
several apps in one process keep their numbers apart. Under gunicorn with
several workers each worker counts its own jobs; set ``PROMETHEUS_MULTIPROC_DIR``
and prometheus_client's multiprocess mode adds up the workers' numbers at
every scrape, whichever worker serves it (see docs/metrics.rst).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .extras import install_hint

if TYPE_CHECKING:
    from flask import Response

    from .job import Job
    from .state import AppQueue

#: The only queue so far; the label is there for the queues to come.
DEFAULT_QUEUE = "default"
#: Histogram buckets in seconds, from a fast job to a slow report.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))


def available() -> bool:
    """True if prometheus_client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, if it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class Metrics:
    """The counters, histograms and gauges of one app in one process."""

    def __init__(self, queue: AppQueue) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.queue = queue
        #: This app's registry (what a scrape renders outside multiprocess mode).
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        labels = ("task", "queue")

        def counter(name: str, doc: str) -> Any:
            return Counter(f"memqueue_jobs_{name}", doc, labels, registry=self.registry)

        self.enqueued = counter("enqueued", "Jobs queued or scheduled (messages included).")
        self.started = counter("started", "Attempts started (a retried job counts once per attempt).")
        self.succeeded = counter("succeeded", "Jobs that returned.")
        self.failed = counter("failed", "Jobs that raised with no retries left.")
        self.retried = counter("retried", "Failed attempts scheduled to run again.")
        self.cancelled = counter("cancelled", "Waiting jobs cancelled (by hand, or by a shutdown without journal).")
        # Workflows: a job with parents is held (deferred) until they succeed, then released by the
        # store in the parent's outcome step, in whichever process records it; the release is
        # counted where the job then starts (its first attempt), so the two add up across workers.
        self.held = counter("held", "Jobs enqueued waiting on other jobs (a chain's link, a chord's callback,"
                                    " depends_on=): deferred until every parent succeeded.")
        self.released = counter("released", "Held jobs released by their parents' success, counted at their"
                                            " first attempt's start.")
        self.duration = Histogram(
            "memqueue_job_duration_seconds", "Seconds one attempt ran, until it returned or raised.",
            labels, registry=self.registry, buckets=BUCKETS,
        )
        self.waiting = Histogram(
            "memqueue_job_wait_seconds",
            "Seconds an attempt waited from when it was due (enqueue, eta, retry time) to its start.",
            labels, registry=self.registry, buckets=BUCKETS,
        )
        # Gauges: read at scrape time; in multiprocess mode also written on
        # every job event, so a worker that is not scraped still reports.
        # The journal's depth is the same for every process (the most recent
        # reading wins); an in-memory queue belongs to one process (summed).
        durable = queue.storage.capabilities.shared
        self.depth = Gauge(
            "memqueue_queue_depth", "Jobs waiting (queued + scheduled).", ("queue",), registry=self.registry,
            multiprocess_mode="livemostrecent" if durable else "livesum",
        )
        self.deferred = Gauge(
            "memqueue_jobs_deferred", "Jobs held by a dependency now (every queue).", registry=self.registry,
            multiprocess_mode="livemostrecent" if durable else "livesum",
        )
        self._workflows = queue.storage.capabilities.workflows
        self.consumers = Gauge(
            "memqueue_consumer_threads", "Live consumer threads.", registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.limit_in_use, self.limit_waiting = self._limit_gauges(Gauge, durable)
        self._update_depth_on_events = self.multiprocess and not durable  # a len(), not an SQL count
        # When each waiting attempt became due, if not at enqueue (scheduled jobs, retries).
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    def _limit_gauges(self, gauge: Any, durable: bool) -> tuple[Any, Any]:
        """The gauges of the rate and concurrency limits in use, per kind and key (read at scrape time)."""
        mode = "livemostrecent" if durable else "livesum"
        in_use = gauge("memqueue_limit_in_use", "Jobs running (concurrency) or started in the current window"
                       " (rate), per limit.", ("kind", "key"), registry=self.registry, multiprocess_mode=mode)
        waiting = gauge("memqueue_limit_waiting", "Queued jobs that count against a limit.", ("kind", "key"),
                        registry=self.registry, multiprocess_mode=mode)
        return in_use, waiting

    # -- receivers (connected by install, for this app only) --------------------------
    def on_enqueued(self, sender: Any, job: Job[Any], **extra: Any) -> None:
        self.enqueued.labels(job.name, job.queue).inc()
        if job.options.after:
            self.held.labels(job.name, job.queue).inc()
        eta = job.eta
        if eta is not None:
            with self._lock:
                self._due[job.id] = eta
        self._gauges()

    def on_started(self, sender: Any, job: Job[Any], **extra: Any) -> None:
        self.started.labels(job.name, job.queue).inc()
        if job.options.after and job.attempts == 1:
            self.released.labels(job.name, job.queue).inc()
        started = job.started_at or time.time()
        with self._lock:
            due = self._due.pop(job.id, None)
        if due is None and job.attempts == 1:
            due = job.enqueued_at
        if due is not None:
            self.waiting.labels(job.name, job.queue).observe(max(0.0, started - due))
        self._gauges()

    def _ran(self, job: Job[Any]) -> None:
        started = job.started_at
        if started is not None:
            self.duration.labels(job.name, job.queue).observe(max(0.0, time.time() - started))

    def on_succeeded(self, sender: Any, job: Job[Any], **extra: Any) -> None:
        self.succeeded.labels(job.name, job.queue).inc()
        self._ran(job)

    def on_failed(self, sender: Any, job: Job[Any], **extra: Any) -> None:
        self.failed.labels(job.name, job.queue).inc()
        self._ran(job)

    def on_retrying(self, sender: Any, job: Job[Any], **extra: Any) -> None:
        self.retried.labels(job.name, job.queue).inc()
        self._ran(job)
        eta = job.eta
        if eta is not None:
            with self._lock:
                self._due[job.id] = eta

    def on_cancelled(self, sender: Any, job: Job[Any], **extra: Any) -> None:
        self.cancelled.labels(job.name, job.queue).inc()
        with self._lock:
            self._due.pop(job.id, None)
        self._gauges()

    def _gauges(self) -> None:
        if self._update_depth_on_events:
            self.read_gauges()

    def read_gauges(self) -> None:
        """Set the gauges from the queue as it is now."""
        queue = self.queue
        if queue.closed:
            self.depth.labels(DEFAULT_QUEUE).set(0)
            self.deferred.set(0)
        else:
            for name, row in queue.queues_info().items():
                self.depth.labels(name).set(row["depth"])
            if self._workflows:
                self.deferred.set(queue.storage.counts().get("deferred", 0))
        self.consumers.set(len(queue.live_threads()))
        if not queue.closed and queue.storage.capabilities.limits:
            self.limit_in_use.clear()  # a limit no job uses any more is not shown
            self.limit_waiting.clear()
            for use in queue.limit_uses():
                self.limit_in_use.labels(use["kind"], use["key"]).set(use["in_use"])
                self.limit_waiting.labels(use["kind"], use["key"]).set(use["waiting"])

    # -- the scrape -----------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The Prometheus text format: this app's numbers, or every worker's in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        self.read_gauges()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def install(queue: AppQueue) -> Metrics | None:
    """Make the app's metrics and connect them to its job signals; None without prometheus_client."""
    if not available():
        return None
    from .signals import job_cancelled, job_enqueued, job_failed, job_retrying, job_started, job_succeeded

    metrics = Metrics(queue)
    app = queue.app
    # Weak references to bound methods: the receivers live as long as the
    # queue holds the Metrics object, which lives as long as the app.
    job_enqueued.connect(metrics.on_enqueued, app)
    job_started.connect(metrics.on_started, app)
    job_succeeded.connect(metrics.on_succeeded, app)
    job_failed.connect(metrics.on_failed, app)
    job_retrying.connect(metrics.on_retrying, app)
    job_cancelled.connect(metrics.on_cancelled, app)
    return metrics


def response(queue: AppQueue) -> Response:
    """What ``GET <prefix>/metrics`` answers."""
    from flask import Response

    from .routes import APIError

    if not queue.config.metrics:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise APIError(
                501,
                f"metrics need the prometheus_client package, which is not installed: {install_hint('metrics')},"
                " then set MEMQUEUE_METRICS = True (and restart the app)",
            ) from None
        raise APIError(
            404, "metrics are turned off for this app (MEMQUEUE_METRICS = False); set MEMQUEUE_METRICS = True"
        )
    metrics = queue.metrics
    if metrics is None:
        raise APIError(
            501,
            f"metrics need the prometheus_client package, which is not installed: {install_hint('metrics')}"
            " (then restart the app)",
        )
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
