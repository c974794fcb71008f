"""Time limits and aborts of jobs in this process (issue 22): every store of the contract's rows
runs the in-process cases; the cross-process ones (a worker process) are in test_limits_processes.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import (
    ConfigurationError,
    JobAborted,
    JobFailed,
    JobStatus,
    MemQueue,
    TimeLimitExceeded,
    current_job,
)

GRACE = 0.3


def busy(stop: threading.Event | None = None) -> int:
    """A pure-Python loop: the async exception interrupts it at its next bytecode."""
    n = 0
    while stop is None or not stop.is_set():
        n += 1
    return n


@pytest.fixture
def limited(make_app: Callable[..., Flask], mq: MemQueue) -> Flask:
    return make_app(MEMQUEUE_GRACE_PERIOD=GRACE)


def test_time_limit_exceeded_is_a_base_exception_importable_from_the_package() -> None:
    assert issubclass(TimeLimitExceeded, BaseException) and not issubclass(TimeLimitExceeded, Exception)
    assert issubclass(JobAborted, TimeLimitExceeded)


@pytest.mark.parametrize(("key", "value"), [
    ("MEMQUEUE_GRACE_PERIOD", -1), ("MEMQUEUE_GRACE_PERIOD", "soon"), ("MEMQUEUE_TIME_LIMIT", 0),
    ("MEMQUEUE_TIME_LIMIT", float("nan")), ("MEMQUEUE_TIME_LIMIT", True),
])
def test_bad_limits_are_refused_at_init_app_naming_the_key(key: str, value: Any) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        MemQueue(app)


def test_bad_time_limits_of_a_task_or_a_call_are_refused(mq: MemQueue, limited: Flask) -> None:
    with pytest.raises(ConfigurationError, match="time_limit"):
        mq.task(time_limit=0)(busy)
    task = mq.task(busy)
    with pytest.raises(ValueError, match=r"time_limit=\.\.\.\) must be a number of seconds > 0"):
        task.options(time_limit=-1)


@pytest.mark.parametrize("how", ["busy", "sleep"])
def test_a_job_past_its_limit_fails_and_the_one_thread_runs_the_next(mq: MemQueue, limited: Flask, how: str) -> None:
    @mq.task(time_limit=0.3)
    def stuck() -> None:
        if how == "busy":
            busy()
        else:
            time.sleep(100)  # a blocking C call: no async exception gets in; the thread is given up

    @mq.task
    def after() -> str:
        return "ran"

    with limited.app_context():
        job = stuck.delay()
        nxt = after.delay()
        assert nxt.wait(TIMEOUT) == "ran"
        with pytest.raises(JobFailed):
            job.wait(TIMEOUT)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and "time limit of 0.3 s exceeded" in job.error
    assert job.error.startswith("TimeLimitExceeded")
    queue = limited.extensions["memqueue"]
    assert queue.limits.abandoned == (1 if how == "sleep" else 0)
    assert len(queue.pools.by_queue["default"]) == 1 and queue.pools.consumer.alive


def test_the_limit_of_a_call_and_of_the_app(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_TIME_LIMIT=0.2, MEMQUEUE_GRACE_PERIOD=GRACE)

    @mq.task
    def loop() -> None:
        busy()

    @mq.task(time_limit=60)
    def quick(x: int) -> int:
        return x

    with app.app_context():
        by_app = loop.delay()
        with pytest.raises(JobFailed, match="time limit of 0.2 s"):
            by_app.wait(TIMEOUT)
        by_call = mq.options(time_limit=0.25).enqueue(loop)
        with pytest.raises(JobFailed, match="time limit of 0.25 s"):
            by_call.wait(TIMEOUT)
        assert quick.delay(3).wait(TIMEOUT) == 3


def test_a_time_limit_is_retried_by_the_tasks_policy(mq: MemQueue, limited: Flask) -> None:
    @mq.task(time_limit=0.2, retries=1, retry_delay=0)
    def loop() -> None:
        busy()

    with limited.app_context():
        job = loop.delay()
        with pytest.raises(JobFailed):
            job.wait(TIMEOUT)
    assert job.attempts == 2 and "time limit of 0.2 s exceeded" in (job.error or "")


def test_a_job_that_swallows_the_exception_loses_its_thread_and_its_late_return_changes_nothing(
    mq: MemQueue, limited: Flask,
) -> None:
    release = threading.Event()
    returned = threading.Event()

    @mq.task(time_limit=0.2)
    def stubborn() -> str:
        try:
            while not release.is_set():
                try:
                    busy(release)
                except TimeLimitExceeded:
                    pass  # what a job must not do: keep running
            return "late"
        finally:
            returned.set()

    @mq.task
    def after() -> str:
        return "ran"

    queue = limited.extensions["memqueue"]
    with limited.app_context():
        job = stubborn.delay()
        nxt = after.delay()
        assert nxt.wait(TIMEOUT) == "ran"  # the replacement thread ran it
        with pytest.raises(JobFailed, match="time limit of 0.2 s exceeded"):
            job.wait(TIMEOUT)
        assert "its thread was given up" in (job.error or "")
        threads = [t for t in threading.enumerate() if t.name.startswith("memqueue-consumer[testapp")]
        assert len(threads) == 1, [t.name for t in threads]
        client = limited.test_client()
        listing = client.get("/memqueue/threads").get_json()["threads"]
        assert sum(1 for t in listing if t["is_consumer"]) == 1  # as declared
        abandoned = [t for t in threading.enumerate() if t.name.startswith("memqueue-abandoned[")]
        assert abandoned
        release.set()  # the abandoned thread now returns "late"
        assert returned.wait(TIMEOUT)
        for t in abandoned:
            t.join(TIMEOUT)
        assert job.status is JobStatus.FAILED and job.result is None  # recorded once; the late return ignored
        stored = queue.storage.get(job.id)
        assert stored is not None and stored.status is JobStatus.FAILED
        counts = queue.storage.counts()
        assert counts["failed"] == 1 and counts["succeeded"] == 1 and counts["running"] == 0
    assert queue.limits.abandoned == 1


def test_abort_of_a_waiting_job_cancels_it(mq: MemQueue, limited: Flask, gate: Any) -> None:
    blocker = mq.task(gate)

    @mq.task
    def later() -> None:
        pass

    with limited.app_context():
        first = blocker.delay()
        gate.wait_entered()
        job = later.delay()
        assert job.abort() is True
        assert job.status is JobStatus.CANCELLED
        gate.release()
        first.wait(TIMEOUT)


def test_abort_of_a_running_job_cooperative(mq: MemQueue, limited: Flask) -> None:
    seen = threading.Event()
    started = threading.Event()

    @mq.task
    def polite() -> str:
        started.set()
        deadline = time.monotonic() + TIMEOUT
        while not current_job.abort_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.set()
        return "stopped cleanly"

    with limited.app_context():
        job = polite.delay()
        assert started.wait(TIMEOUT)
        assert mq.abort(job.id, by="the test") is True
        with pytest.raises(JobFailed):
            job.wait(TIMEOUT)
    assert seen.is_set()
    assert job.status is JobStatus.ABORTED and job.result is None
    assert job.error is not None and job.error.startswith("aborted by the test at ")


def test_abort_of_a_running_job_forced_after_the_grace_period(mq: MemQueue, limited: Flask) -> None:
    started = threading.Event()
    caught: list[BaseException] = []

    @mq.task(retries=3)
    def deaf() -> None:
        started.set()
        try:
            busy()
        except BaseException as exc:
            caught.append(exc)
            raise

    with limited.app_context():
        job = deaf.delay()
        assert started.wait(TIMEOUT)
        assert job.abort() is True
        with pytest.raises(JobFailed):
            job.wait(TIMEOUT)
    assert job.status is JobStatus.ABORTED and job.attempts == 1  # no retry after an abort
    assert caught and isinstance(caught[0], JobAborted)
    assert (job.error or "").startswith("aborted by pid ")


def test_abort_of_a_finished_job_is_false_and_of_an_unknown_one_raises(mq: MemQueue, limited: Flask) -> None:
    @mq.task
    def quick() -> int:
        return 1

    with limited.app_context():
        job = quick.delay()
        job.wait(TIMEOUT)
        assert job.abort() is False and job.status is JobStatus.SUCCEEDED
        with pytest.raises(LookupError, match="no job"):
            mq.abort("nope-1")


def test_an_aborted_job_can_be_retried(mq: MemQueue, limited: Flask) -> None:
    runs: list[int] = []
    started = threading.Event()

    @mq.task
    def twice() -> str:
        runs.append(1)
        if len(runs) == 1:
            started.set()
            wait_until(lambda: current_job.abort_requested)
        return "done"

    with limited.app_context():
        job = twice.delay()
        assert started.wait(TIMEOUT)
        job.abort()
        with pytest.raises(JobFailed):
            job.wait(TIMEOUT)
        queue = limited.extensions["memqueue"]
        assert queue.requeue(job) is True
        assert job.wait(TIMEOUT) == "done"
    assert job.status is JobStatus.SUCCEEDED and not job.abort_requested
