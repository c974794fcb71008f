"""Blinker signals: sent with the app as sender and the job, from the consumer, in order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from flask import Flask, current_app
from support.threads import CONSUMER_PREFIX
from support.waiting import TIMEOUT, Gate

from flask_memqueue import (
    Job,
    JobFailed,
    MemQueue,
    job_enqueued,
    job_failed,
    job_retrying,
    job_started,
    job_succeeded,
)

SIGNALS = {
    "enqueued": job_enqueued,
    "started": job_started,
    "succeeded": job_succeeded,
    "failed": job_failed,
    "retrying": job_retrying,
}

Event = tuple[str, Any, str, str, str]


@contextmanager
def recording(sender: Any = None) -> Iterator[list[Event]]:
    """Record (signal, sender, job id, job status, thread name) for every signal."""
    events: list[Event] = []

    def recorder(name: str) -> Any:
        def receive(sender: Any, job: Job, **extra: Any) -> None:
            events.append((name, sender, job.id, job.status.value, threading.current_thread().name))

        return receive

    with ExitStack() as stack:
        for name, signal in SIGNALS.items():
            if sender is None:
                stack.enter_context(signal.connected_to(recorder(name)))
            else:
                stack.enter_context(signal.connected_to(recorder(name), sender))
        yield events


def test_signals_of_a_succeeding_and_a_failing_job(app: Flask, mq: MemQueue, gate: Gate) -> None:
    def boom() -> None:
        raise ValueError("boom")

    mq.enqueue(gate)
    gate.wait_entered()  # both jobs below are enqueued before either starts
    with recording() as events:
        ok = mq.enqueue(lambda: 1)
        bad = mq.enqueue(boom)
        gate.release()
        assert mq.join(TIMEOUT)
    consumer = f"{CONSUMER_PREFIX}{app.name}]"
    assert [e[:4] for e in events if e[2] == ok.id] == [
        ("enqueued", app, ok.id, "queued"),
        ("started", app, ok.id, "running"),
        ("succeeded", app, ok.id, "succeeded"),
    ]
    assert [e[:4] for e in events if e[2] == bad.id] == [
        ("enqueued", app, bad.id, "queued"),
        ("started", app, bad.id, "running"),
        ("failed", app, bad.id, "failed"),
    ]
    assert {e[4] for e in events if e[0] != "enqueued"} == {consumer}
    assert {e[4] for e in events if e[0] == "enqueued"} == {threading.current_thread().name}


def test_a_scheduled_job_is_enqueued_as_scheduled(app: Flask, mq: MemQueue) -> None:
    with recording() as events:
        job = mq.enqueue_in(3600, lambda: None)
    assert [e[:4] for e in events] == [("enqueued", app, job.id, "scheduled")]
    assert job.cancel()


def test_retrying_then_failed(app: Flask, mq: MemQueue) -> None:
    @mq.task(retries=2, retry_delay=0.001)
    def hopeless() -> None:
        raise RuntimeError("no")

    with recording() as events:
        job = hopeless.delay()
        with pytest.raises(JobFailed):
            job.wait(TIMEOUT)
        assert mq.join(TIMEOUT)  # wait() may return before job_failed is sent
    assert [(e[0], e[3]) for e in events] == [
        ("enqueued", "queued"),
        ("started", "running"), ("retrying", "scheduled"),
        ("started", "running"), ("retrying", "scheduled"),
        ("started", "running"), ("failed", "failed"),
    ]


def test_a_receiver_can_listen_to_one_app(make_app: Any, mq: MemQueue) -> None:
    one, two = make_app("signal_one"), make_app("signal_two")
    with recording(sender=one) as events:
        with one.app_context():
            job_one = mq.enqueue(lambda: 1)
            assert mq.join(TIMEOUT)
        with two.app_context():
            mq.enqueue(lambda: 2)
            assert mq.join(TIMEOUT)
    assert {e[2] for e in events} == {job_one.id}
    assert {e[1] for e in events} == {one}


def test_receivers_run_inside_the_jobs_app_context(app: Flask, mq: MemQueue) -> None:
    seen: list[Any] = []

    def receiver(sender: Flask, job: Job) -> None:
        seen.append(current_app._get_current_object())  # type: ignore[attr-defined]

    with job_started.connected_to(receiver, app), job_succeeded.connected_to(receiver, app):
        mq.enqueue(lambda: None).wait(TIMEOUT)
        assert mq.join(TIMEOUT)
    assert seen == [app, app]


def test_a_failing_receiver_never_fails_the_job(app: Flask, mq: MemQueue, caplog: pytest.LogCaptureFixture) -> None:
    def bad_receiver(sender: Flask, job: Job) -> None:
        raise RuntimeError("receiver bug")

    caplog.set_level(logging.ERROR, logger="flask_memqueue")
    with job_started.connected_to(bad_receiver, app), job_succeeded.connected_to(bad_receiver, app):
        job = mq.enqueue(lambda: "fine")
        assert job.wait(TIMEOUT) == "fine"
        assert mq.enqueue(lambda: "still").wait(TIMEOUT) == "still"
    assert job.status == "succeeded"
    assert any("receiver bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
