"""GET /memqueue/metrics: Prometheus counters, histograms and gauges fed by the job signals."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_memqueue import MemQueue, job_enqueued
from flask_memqueue.extras import install_hint

prometheus_parser = pytest.importorskip("prometheus_client.parser")


def scrape(app: Flask, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of one scrape through the test client."""
    response = app.test_client().get("/memqueue/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    samples = {}
    for family in prometheus_parser.text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counters_histograms_and_gauges(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_METRICS=True)

    @mq.task(name="ok")
    def ok(x: int) -> int:
        return x

    calls: list[int] = []

    @mq.task(name="flaky", retries=1, retry_delay=0)
    def flaky() -> None:
        calls.append(1)
        raise ValueError("always")

    @mq.handler("orders")
    def on_order(message: Any) -> None:
        pass

    with app.app_context():
        for i in range(3):
            ok.delay(i)
        flaky.delay()
        mq.produce({"n": 1}, topic="orders")
        later = mq.enqueue_in(3600, ok, 99)
        assert later.cancel()  # else join would wait an hour for it
        assert mq.join(timeout=10)
    assert len(calls) == 2

    s = scrape(app)
    assert value(s, "memqueue_jobs_enqueued_total", task="ok", queue="default") == 4
    assert value(s, "memqueue_jobs_started_total", task="ok", queue="default") == 3
    assert value(s, "memqueue_jobs_succeeded_total", task="ok", queue="default") == 3
    assert value(s, "memqueue_jobs_cancelled_total", task="ok", queue="default") == 1
    assert value(s, "memqueue_jobs_enqueued_total", task="flaky", queue="default") == 1
    assert value(s, "memqueue_jobs_started_total", task="flaky", queue="default") == 2
    assert value(s, "memqueue_jobs_retried_total", task="flaky", queue="default") == 1
    assert value(s, "memqueue_jobs_failed_total", task="flaky", queue="default") == 1
    assert value(s, "memqueue_jobs_succeeded_total", task="flaky", queue="default") == 0
    assert value(s, "memqueue_jobs_succeeded_total", task="message:orders", queue="default") == 1
    # One duration per attempt, one wait per start (the retry's wait counts from its due time).
    assert value(s, "memqueue_job_duration_seconds_count", task="ok", queue="default") == 3
    assert value(s, "memqueue_job_duration_seconds_count", task="flaky", queue="default") == 2
    assert value(s, "memqueue_job_wait_seconds_count", task="ok", queue="default") == 3
    assert value(s, "memqueue_job_wait_seconds_count", task="flaky", queue="default") == 2
    assert value(s, "memqueue_job_wait_seconds_bucket", task="ok", queue="default", le="+Inf") == 3
    assert value(s, "memqueue_queue_depth", queue="default") == 0
    assert value(s, "memqueue_consumer_threads") == 1


def test_the_depth_gauge_counts_waiting_jobs(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False, MEMQUEUE_METRICS=True)  # a testing app that steps its own queue
    with app.app_context():
        mq.enqueue(print, "a")
        mq.enqueue_in(60, print, "b")
        s = scrape(app)
        assert value(s, "memqueue_queue_depth", queue="default") == 2
        assert value(s, "memqueue_consumer_threads") == 0
        assert value(s, "memqueue_jobs_started_total", task="builtins.print", queue="default") == 0


def test_workflow_jobs_held_and_released_and_the_deferred_gauge(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    import threading

    from flask_memqueue import JobFailed

    app = make_app(MEMQUEUE_METRICS=True)
    gate = threading.Event()

    @mq.task(name="first")
    def first(x: int) -> int:
        assert gate.wait(10), "the test never opened the gate"
        return x

    @mq.task(name="step")
    def step(x: int = 0) -> int:
        return x + 1

    @mq.task(name="bad")
    def bad() -> int:
        raise ValueError("no")

    with app.app_context():
        last = mq.chain(first.s(1), step.s(), step.s()).delay()
        doomed = mq.chain(bad.s(), step.s()).delay()  # queued behind the gated job (one consumer thread)
        s = scrape(app)
        assert value(s, "memqueue_jobs_held_total", task="step", queue="default") == 3
        assert value(s, "memqueue_jobs_released_total", task="step", queue="default") == 0
        assert value(s, "memqueue_jobs_deferred") == 3
        gate.set()
        assert last.wait(10) == 3
        with pytest.raises(JobFailed):
            doomed.wait(10)
    s = scrape(app)
    assert value(s, "memqueue_jobs_held_total", task="step", queue="default") == 3
    assert value(s, "memqueue_jobs_released_total", task="step", queue="default") == 2  # one was cancelled
    assert value(s, "memqueue_jobs_held_total", task="first", queue="default") == 0
    assert value(s, "memqueue_jobs_deferred") == 0


def test_two_apps_in_one_process_count_apart(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    first, second = make_app("first", MEMQUEUE_METRICS=True), make_app("second", MEMQUEUE_METRICS=True)
    with first.app_context():  # join, not wait: wait returns before the job_succeeded receivers ran
        mq.enqueue(len, "abc")
        mq.enqueue(len, "abc")
        assert mq.join(timeout=10)
    with second.app_context():
        mq.enqueue(len, "abc")
        assert mq.join(timeout=10)
    assert value(scrape(first), "memqueue_jobs_succeeded_total", task="builtins.len", queue="default") == 2
    assert value(scrape(second), "memqueue_jobs_succeeded_total", task="builtins.len", queue="default") == 1


def test_eager_jobs_are_counted(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_EAGER=True, MEMQUEUE_METRICS=True)
    with app.app_context():
        mq.enqueue(len, "abc")
    s = scrape(app)
    assert value(s, "memqueue_jobs_enqueued_total", task="builtins.len", queue="default") == 1
    assert value(s, "memqueue_jobs_succeeded_total", task="builtins.len", queue="default") == 1


def test_without_prometheus_client_the_route_says_what_to_install(
    make_app: Callable[..., Flask], mq: MemQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    app = make_app(MEMQUEUE_METRICS=True)
    assert app.extensions["memqueue"].metrics is None
    assert list(job_enqueued.receivers_for(app)) == []
    response = app.test_client().get("/memqueue/metrics")
    assert response.status_code == 501
    body = response.get_json()
    assert body["status"] == 501
    assert install_hint("metrics") in body["error"] and "[metrics]" in install_hint("metrics")
    with app.app_context():
        assert mq.enqueue(len, "ab").wait(timeout=10) == 2  # jobs run as ever


def test_metrics_off_connects_nothing_and_answers_404(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_METRICS=False)
    assert app.extensions["memqueue"].metrics is None
    assert list(job_enqueued.receivers_for(app)) == []
    response = app.test_client().get("/memqueue/metrics")
    assert response.status_code == 404
    assert response.get_json() == {
        "error": "metrics are turned off for this app (MEMQUEUE_METRICS = False); set MEMQUEUE_METRICS = True",
        "status": 404,
    }


def test_the_route_is_protected_like_every_other(make_app: Callable[..., Flask]) -> None:
    token = "metrics-token-0123456789"
    app = make_app(testing=False, MEMQUEUE_TOKEN=token, MEMQUEUE_METRICS=True)
    response = app.test_client().get("/memqueue/metrics")
    assert response.status_code == 401 and response.get_json()["status"] == 401
    assert ("memqueue_consumer_threads", frozenset()) in scrape(app, Authorization=f"Bearer {token}")
    production = make_app("production", testing=False, MEMQUEUE_METRICS=True)
    assert production.test_client().get("/memqueue/metrics").status_code == 403


def test_metrics_are_off_by_default_and_the_route_says_how_to_turn_them_on(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    assert app.extensions["memqueue"].metrics is None
    assert list(job_enqueued.receivers_for(app)) == []  # the job path pays nothing
    answer = app.test_client().get("/memqueue/metrics")
    assert answer.status_code == 404 and "set MEMQUEUE_METRICS = True" in answer.get_json()["error"]
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    answer = app.test_client().get("/memqueue/metrics")
    assert answer.status_code == 501
    assert install_hint("metrics") in answer.get_json()["error"]
    assert "MEMQUEUE_METRICS = True" in answer.get_json()["error"]
