"""MEMQUEUE_EAGER: every job runs inline at enqueue, with the same Job record and signals."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any

import pytest
from flask import Flask, current_app, g
from support.threads import consumer_threads

from flask_memqueue import (
    Job,
    JobFailed,
    MemQueue,
    current_job,
    enqueue,
    job_enqueued,
    job_failed,
    job_started,
    job_succeeded,
)
from flask_memqueue.state import AppQueue

pytestmark = pytest.mark.app_config(MEMQUEUE_EAGER=True)


def test_a_job_runs_inline_in_the_callers_thread(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    @mq.task
    def where() -> threading.Thread:
        current_job.set_progress(1.0, "done")
        return threading.current_thread()

    job = where.delay()
    assert isinstance(job, Job)
    assert job.status == "succeeded" and job.finished
    assert job.result is threading.current_thread()
    assert job.wait(timeout=0) is threading.current_thread()
    assert job.attempts == 1 and job.progress == 1.0
    assert job.started_at is not None and job.finished_at is not None
    assert mq.get_job(job.id) is job
    assert consumer_threads() == [] and queue.consumer_thread is None


def test_every_enqueue_form_runs_inline(app: Flask, mq: MemQueue) -> None:
    got: list[Any] = []

    @mq.task(name="eager.add")
    def add(a: int, b: int) -> int:
        return a + b

    @mq.handler
    def on_message(message: Any) -> None:
        got.append(message)

    assert mq.enqueue(add, 1, 2).result == 3
    assert mq.enqueue("eager.add", 2, 2).result == 4
    assert enqueue(add, 3, b=3).result == 6
    assert mq.enqueue_in(3600, add, 4, 4).result == 8
    assert mq.produce({"m": 1}).status == "succeeded"
    assert got == [{"m": 1}]
    assert consumer_threads() == []


def test_a_failing_job_is_recorded_and_retries_run_inline(app: Flask, mq: MemQueue) -> None:
    attempts: list[int] = []

    @mq.task(retries=2, retry_delay=3600)
    def flaky() -> str:
        attempts.append(current_job.attempts)
        if len(attempts) < 3:
            raise RuntimeError("again")
        return "ok"

    @mq.task
    def boom() -> None:
        raise ValueError("boom")

    job = flaky.delay()  # the retry delay is not waited for
    assert job.status == "succeeded" and job.result == "ok" and attempts == [1, 2, 3]
    failed = boom.delay()  # enqueue itself does not raise
    assert failed.status == "failed" and failed.error == "ValueError: boom" and failed.traceback
    with pytest.raises(JobFailed):
        failed.wait()


def test_an_eager_job_has_its_own_app_context(app: Flask, mq: MemQueue) -> None:
    torn_down: list[Any] = []
    app.teardown_appcontext(lambda exc: torn_down.append(g.get("inside")))

    @mq.task
    def look() -> tuple[bool, str]:
        seen = "outside" in g
        g.inside = True
        return seen, current_app.name

    g.outside = True
    assert look.delay().result == (False, app.name)
    assert torn_down == [True]
    assert "inside" not in g


def test_eager_mode_sends_the_same_signals(app: Flask, mq: MemQueue) -> None:
    sent: list[tuple[str, str]] = []

    def recorder(name: str) -> Any:
        return lambda sender, job: sent.append((name, job.status.value))

    def boom() -> None:
        raise ValueError

    with ExitStack() as stack:
        for name, signal in (("enqueued", job_enqueued), ("started", job_started),
                             ("succeeded", job_succeeded), ("failed", job_failed)):
            stack.enter_context(signal.connected_to(recorder(name), app))
        mq.enqueue(lambda: None)
        mq.enqueue(boom)
    assert sent == [
        ("enqueued", "queued"), ("started", "running"), ("succeeded", "succeeded"),
        ("enqueued", "queued"), ("started", "running"), ("failed", "failed"),
    ]
