"""The public Python API: MemQueue, tasks, enqueue*, produce, Job, join, shutdown."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any

import pytest
from flask import Flask, current_app, g
from support.factory import build_app
from support.threads import CONSUMER_PREFIX, consumer_threads
from support.waiting import TIMEOUT, Gate

import flask_memqueue
from flask_memqueue import (
    Job,
    JobFailed,
    JobStatus,
    MemQueue,
    MemQueueError,
    QueueClosed,
    QueueFull,
    Task,
    UnknownTaskError,
    UnknownTopicError,
    current_job,
    enqueue,
    job_failed,
    job_retrying,
)
from flask_memqueue.state import AppQueue


def noop(*args: Any, **kwargs: Any) -> None:
    return None


# -- names and binding -------------------------------------------------------------------
def test_public_names_are_importable() -> None:
    from flask_memqueue import Job, JobFailed, MemQueue, QueueFull, current_job, enqueue  # noqa: F401

    for name in ("MemQueue", "enqueue", "current_job", "Job", "JobFailed", "QueueFull"):
        assert name in flask_memqueue.__all__
    for name in flask_memqueue.__all__:
        assert hasattr(flask_memqueue, name), name


def test_exceptions_form_one_tree() -> None:
    for exc in (JobFailed, QueueFull, QueueClosed, UnknownTaskError, UnknownTopicError,
                flask_memqueue.ConfigurationError):
        assert issubclass(exc, MemQueueError)


def test_memqueue_app_argument_binds_the_app() -> None:
    app = Flask("direct")
    app.config["TESTING"] = True
    mq = MemQueue(app)
    queue = app.extensions["memqueue"]
    try:
        assert isinstance(queue, AppQueue)
        assert queue.mq is mq and queue.app is app
        assert not hasattr(mq, "app"), "the extension must not hold an app"
    finally:
        queue.shutdown()


def test_init_app_twice_raises(app: Flask, mq: MemQueue) -> None:
    with pytest.raises(RuntimeError, match="already been registered"):
        mq.init_app(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        MemQueue().init_app(app)


def test_several_apps_each_get_their_own_queue_and_consumer(make_app: Any, mq: MemQueue) -> None:
    first, second = make_app("app_one"), make_app("app_two")

    @mq.task
    def where() -> tuple[str, str]:
        return current_app.name, threading.current_thread().name

    with first.app_context():
        job_one = where.delay()
    with second.app_context():
        job_two = where.delay()
        assert mq.get_job(job_one.id) is None  # not this app's job
    assert job_one.wait(TIMEOUT) == ("app_one", "memqueue-consumer[app_one]")
    assert job_two.wait(TIMEOUT) == ("app_two", "memqueue-consumer[app_two]")
    q1, q2 = first.extensions["memqueue"], second.extensions["memqueue"]
    assert q1 is not q2 and q1.storage is not q2.storage
    assert job_one.id != job_two.id
    names = sorted(t.name for t in consumer_threads())
    assert names == ["memqueue-consumer[app_one]", "memqueue-consumer[app_two]"]


def test_outside_an_app_context_says_how_to_fix_it(mq: MemQueue) -> None:
    with pytest.raises(RuntimeError, match="app_context"):
        enqueue(noop)
    with pytest.raises(RuntimeError, match="app_context"):
        mq.enqueue(noop)


def test_app_without_init_app_says_so(mq: MemQueue) -> None:
    with Flask("bare").app_context():
        with pytest.raises(RuntimeError, match="init_app"):
            mq.enqueue(noop)
        with pytest.raises(RuntimeError, match="init_app"):
            enqueue(noop)


# -- tasks ------------------------------------------------------------------------------
def test_task_decorator_with_and_without_options(mq: MemQueue) -> None:
    @mq.task
    def plain(x: int) -> int:
        return x * 2

    @mq.task(name="custom.name", retries=2, retry_delay=0.5, retry_backoff=3.0)
    def configured(x: int) -> int:
        return x

    assert isinstance(plain, Task) and isinstance(configured, Task)
    assert plain.name == f"{__name__}.test_task_decorator_with_and_without_options.<locals>.plain"
    assert plain.retries == 0
    assert configured.name == "custom.name"
    assert (configured.retries, configured.retry_delay, configured.retry_backoff) == (2, 0.5, 3.0)
    assert mq.registry.tasks["custom.name"] is configured
    assert getattr(plain, "__name__", None) == "plain"  # functools.update_wrapper


def test_calling_a_task_runs_it_synchronously(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    @mq.task
    def which_thread() -> threading.Thread:
        return threading.current_thread()

    assert which_thread() is threading.current_thread()
    assert queue.storage.counts() == dict.fromkeys((s.value for s in JobStatus), 0)
    assert consumer_threads() == []


def test_enqueue_a_function_a_task_or_a_registered_name(app: Flask, mq: MemQueue) -> None:
    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    def unregistered(x: int, *, plus: int = 0) -> int:
        return x + plus

    jobs = [
        mq.enqueue(double, 1),
        mq.enqueue("double", 2),
        double.delay(3),
        enqueue(double, 4),
        enqueue("double", 5),
        mq.enqueue(unregistered, 6, plus=1),
        # keywords are the function's own, even ones that look like options
        mq.enqueue(lambda timeout, delay: (timeout, delay), timeout=1, delay=2),
    ]
    assert all(isinstance(job, Job) for job in jobs)
    assert [job.wait(TIMEOUT) for job in jobs] == [2, 4, 6, 8, 10, 7, (1, 2)]
    assert jobs[1].name == "double"


def test_enqueue_an_unknown_name_raises(app: Flask, mq: MemQueue) -> None:
    with pytest.raises(UnknownTaskError, match="nope"):
        mq.enqueue("nope")
    with pytest.raises(UnknownTaskError):
        enqueue("nope")
    assert isinstance(UnknownTaskError("x"), LookupError)


def test_module_enqueue_uses_the_current_apps_queue(make_app: Any) -> None:
    mq_a, mq_b = MemQueue(), MemQueue()
    app_a = make_app("mod_a", mq=mq_a)
    app_b = make_app("mod_b", mq=mq_b)
    with app_b.app_context():
        job = enqueue(lambda: current_app.name)
        assert job.wait(TIMEOUT) == "mod_b"
        assert mq_b.get_job(job.id) is job
    with app_a.app_context():
        assert mq_a.get_job(job.id) is None


# -- delays ------------------------------------------------------------------------------
def test_enqueue_in_seconds_runs_when_due(app: Flask, mq: MemQueue) -> None:
    job = mq.enqueue_in(0.05, time.time)
    assert job.status == "scheduled"
    assert job.eta is not None and job.eta == pytest.approx(job.enqueued_at + 0.05, abs=1.0)
    eta = job.eta
    ran_at = job.wait(TIMEOUT)
    assert ran_at >= eta
    assert job.status == "succeeded"


def test_enqueue_in_timedelta_is_not_run_before_due(app: Flask, mq: MemQueue) -> None:
    later = mq.enqueue_in(dt.timedelta(hours=1), noop)
    assert later.status == "scheduled"
    assert later.eta == pytest.approx(time.time() + 3600, abs=60)
    now = mq.enqueue(noop)
    now.wait(TIMEOUT)
    assert later.status == "scheduled" and later.attempts == 0
    assert later.cancel()


@pytest.mark.parametrize("delay", [-1, -0.001, dt.timedelta(seconds=-1)])
def test_enqueue_in_negative_raises(app: Flask, mq: MemQueue, delay: Any) -> None:
    with pytest.raises(ValueError, match="negative"):
        mq.enqueue_in(delay, noop)


@pytest.mark.parametrize("delay", ["5", None, float("nan"), True])
def test_enqueue_in_not_a_delay_raises(app: Flask, mq: MemQueue, delay: Any) -> None:
    with pytest.raises(TypeError):
        mq.enqueue_in(delay, noop)


def test_enqueue_at_aware_datetime(app: Flask, mq: MemQueue) -> None:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=50)
    job = mq.enqueue_at(when, time.time)
    assert job.status == "scheduled"
    assert job.wait(TIMEOUT) >= when.timestamp()
    past = mq.enqueue_at(dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))), lambda: "late")
    assert past.wait(TIMEOUT) == "late"


def test_enqueue_at_naive_datetime_raises(app: Flask, mq: MemQueue) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        mq.enqueue_at(dt.datetime.now(), noop)
    with pytest.raises(TypeError):
        mq.enqueue_at(time.time(), noop)  # type: ignore[arg-type]


# -- messages ----------------------------------------------------------------------------
def test_produce_goes_to_the_handler_of_its_topic(app: Flask, mq: MemQueue) -> None:
    got: list[tuple[str, Any]] = []

    @mq.handler
    def on_message(message: Any) -> str:
        got.append(("default", message))
        return "default"

    @mq.handler("orders")
    def on_order(message: Any) -> str:
        got.append(("orders", message))
        return "orders"

    first = mq.produce({"any": ["json", 1]})
    second = mq.produce([1, 2], topic="orders")
    assert first.wait(TIMEOUT) == "default" and second.wait(TIMEOUT) == "orders"
    assert got == [("default", {"any": ["json", 1]}), ("orders", [1, 2])]
    assert first.topic is None and second.topic == "orders"
    assert on_message("direct") == "default"  # a handler is callable too


def test_produce_without_a_handler_raises(app: Flask, mq: MemQueue) -> None:
    with pytest.raises(UnknownTopicError, match="@mq.handler"):
        mq.produce("hi")

    @mq.handler("known")
    def known(message: Any) -> None: ...

    with pytest.raises(UnknownTopicError, match="'unknown'"):
        mq.produce("hi", topic="unknown")
    with pytest.raises(TypeError):
        mq.handler("")


# -- the job record ------------------------------------------------------------------------
def test_status_values() -> None:
    assert {s.value for s in JobStatus} == {
        "queued", "scheduled", "deferred", "running", "succeeded", "failed", "cancelled", "aborted"}
    assert JobStatus.QUEUED == "queued"  # type: ignore[comparison-overlap]  # a str enum


def test_job_fields_through_its_life(app: Flask, mq: MemQueue, gate: Gate) -> None:
    blocker = mq.enqueue(gate)
    gate.wait_entered()
    assert blocker.status == "running" and blocker.started_at is not None and blocker.attempts == 1
    job = mq.enqueue(lambda a, b: a + b, 1, 2)
    assert isinstance(job.id, str) and job.id
    assert job.status == "queued"
    assert (job.result, job.error, job.traceback, job.progress) == (None, None, None, None)
    assert (job.attempts, job.started_at, job.finished_at) == (0, None, None)
    assert isinstance(job.enqueued_at, float)
    gate.release()
    assert job.wait(TIMEOUT) == 3
    assert job.status == "succeeded" and job.result == 3 and job.attempts == 1 and job.error is None
    assert job.started_at is not None and job.finished_at is not None
    assert job.enqueued_at <= job.started_at <= job.finished_at


def test_failed_job_records_one_line_error_traceback_and_logs_once(
    app: Flask, mq: MemQueue, caplog: pytest.LogCaptureFixture
) -> None:
    @mq.task
    def boom() -> None:
        raise ValueError("bad thing\nsecond line")

    caplog.set_level(logging.ERROR, logger="flask_memqueue")
    job = boom.delay()
    with pytest.raises(JobFailed) as info:
        job.wait(TIMEOUT)
    assert mq.join(TIMEOUT)  # wait() may return before the consumer has logged
    assert info.value.job is job
    assert job.status == "failed" and job.attempts == 1 and job.result is None
    assert job.error == "ValueError: bad thing"
    assert job.traceback is not None and "Traceback" in job.traceback and "second line" in job.traceback
    logged = [r for r in caplog.records if r.name == "flask_memqueue" and r.exc_info]
    assert len(logged) == 1 and job.id in logged[0].getMessage()


def test_wait_timeout_raises_timeouterror(app: Flask, mq: MemQueue, gate: Gate) -> None:
    job = mq.enqueue(gate)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.01)
    gate.release()
    assert job.wait(TIMEOUT) == "gate"


def test_cancel_only_while_waiting(app: Flask, mq: MemQueue, gate: Gate) -> None:
    ran: list[str] = []
    running = mq.enqueue(gate)
    gate.wait_entered()
    waiting = mq.enqueue(ran.append, "waiting")
    scheduled = mq.enqueue_in(3600, ran.append, "scheduled")
    assert waiting.cancel() is True
    assert waiting.status == "cancelled" and waiting.finished_at is not None
    assert waiting.cancel() is False
    assert scheduled.cancel() is True and scheduled.status == "cancelled"
    assert running.cancel() is False and running.status == "running"
    gate.release()
    running.wait(TIMEOUT)
    assert running.cancel() is False and running.status == "succeeded"
    with pytest.raises(JobFailed):
        waiting.wait(TIMEOUT)
    assert mq.join(TIMEOUT)
    assert ran == []


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


def test_to_dict_is_json_serialisable_with_any_arguments(app: Flask, mq: MemQueue) -> None:
    @mq.task
    def echo(*args: Any, **kwargs: Any) -> Any:
        return {1, 2}, Opaque()

    job = echo.delay(Opaque(), dt.datetime(2024, 1, 1), b"\x00bytes", "x" * 100_000, when=dt.date(2024, 1, 1))
    queued = json.loads(json.dumps(job.to_dict()))
    assert queued["id"] == job.id and queued["status"] == "queued"
    job.wait(TIMEOUT)
    data = json.loads(json.dumps(job.to_dict()))
    assert data["status"] == "succeeded" and data["attempts"] == 1
    assert "<Opaque>" in json.dumps(data["args"]) and "<Opaque>" in json.dumps(data["result"])
    assert len(json.dumps(data)) < 50_000  # the long argument is cut
    for key in ("id", "status", "result", "error", "traceback", "attempts", "progress",
                "enqueued_at", "started_at", "finished_at"):
        assert key in data


def test_get_job(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    job = mq.enqueue(noop)
    assert mq.get_job(job.id) is job
    job.wait(TIMEOUT)
    assert mq.get_job(job.id) is job
    assert mq.get_job("nope") is None
    assert mq.get_job("ffffffff-1") is None
    assert mq.get_job(f"{queue.token}-99999") is None


def test_current_job_set_progress(app: Flask, mq: MemQueue) -> None:
    seen: dict[str, Any] = {}

    @mq.task
    def work() -> None:
        seen["id"] = current_job.id
        current_job.set_progress(0.5, "half way")
        seen["half"] = (current_job.progress, current_job.progress_message)
        for bad in (7, 2.0, -0.1, float("nan")):
            with pytest.raises(ValueError, match="between 0 and 1"):
                current_job.set_progress(bad)
        with pytest.raises(TypeError, match="between 0 and 1, not 'half'"):
            current_job.set_progress("half")  # type: ignore[arg-type]
        seen["kept"] = current_job.progress  # a refused value changes nothing
        current_job.set_progress(0.75, "nearly")

    job = work.delay()
    job.wait(TIMEOUT)
    assert seen == {"id": job.id, "half": (0.5, "half way"), "kept": 0.5}
    assert job.progress == 0.75 and job.progress_message == "nearly"
    assert job.to_dict()["progress"] == 0.75


def test_current_job_outside_a_job_raises() -> None:
    with pytest.raises(RuntimeError, match="inside a running"):
        current_job.set_progress(0.5)


# -- the app context of a job ----------------------------------------------------------------
def test_every_job_runs_in_a_fresh_app_context_of_its_app(app: Flask, mq: MemQueue) -> None:
    app.config["GREETING"] = "hello"
    teardowns: list[tuple[Any, Any]] = []

    @app.teardown_appcontext
    def record_teardown(exc: BaseException | None) -> None:
        if threading.current_thread().name.startswith(CONSUMER_PREFIX):
            teardowns.append((g.get("marker"), exc))

    @mq.task
    def look(marker: int) -> tuple[bool, str, bool]:
        had_marker = "marker" in g
        g.marker = marker
        if marker == 3:
            raise KeyError("failing job")
        return had_marker, current_app.config["GREETING"], current_app._get_current_object() is app  # type: ignore[attr-defined]

    g.marker = "test's own g"
    jobs = [look.delay(i) for i in range(4)]
    assert mq.join(TIMEOUT)
    assert [job.result for job in jobs[:3]] == [(False, "hello", True)] * 3
    assert jobs[3].status == "failed"
    assert [marker for marker, _ in teardowns] == [0, 1, 2, 3]
    assert [exc for _, exc in teardowns[:3]] == [None] * 3
    assert isinstance(teardowns[3][1], KeyError)
    assert g.marker == "test's own g"


# -- join and shutdown ---------------------------------------------------------------------
def test_join_waits_until_nothing_queued_or_running(app: Flask, mq: MemQueue, gate: Gate) -> None:
    assert mq.join(timeout=TIMEOUT) is True  # nothing to wait for
    blocker = mq.enqueue(gate)
    rest = [mq.enqueue(noop) for _ in range(5)]
    assert mq.join(timeout=0.01) is False
    gate.release()
    assert mq.join(timeout=TIMEOUT) is True
    assert blocker.status == "succeeded" and all(job.status == "succeeded" for job in rest)


def test_join_waits_for_pending_retries(app: Flask, mq: MemQueue) -> None:
    @mq.task(retries=2, retry_delay=0.01)
    def always_fails() -> None:
        raise RuntimeError("no")

    job = always_fails.delay()
    assert mq.join(TIMEOUT)
    assert job.status == "failed" and job.attempts == 3


def test_shutdown_wait_drains_then_refuses_new_jobs(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    jobs = [mq.enqueue(time.sleep, 0) for _ in range(20)]
    assert mq.shutdown(wait=True, timeout=TIMEOUT) is True
    assert all(job.status == "succeeded" for job in jobs)
    assert queue.consumer_thread is None and consumer_threads() == []
    with pytest.raises(QueueClosed):
        mq.enqueue(noop)
    with pytest.raises(QueueClosed):
        mq.enqueue_in(1, noop)
    assert issubclass(QueueClosed, RuntimeError)


def test_shutdown_without_wait_cancels_what_waits(app: Flask, mq: MemQueue, queue: AppQueue, gate: Gate) -> None:
    ran: list[int] = []
    running = mq.enqueue(gate)
    gate.wait_entered()
    waiting = [mq.enqueue(ran.append, i) for i in range(3)]
    assert mq.shutdown(wait=False) is False
    assert [job.status for job in waiting] == ["cancelled"] * 3
    gate.release()
    assert running.wait(TIMEOUT) == "gate"  # the job in hand still finishes
    thread = queue.consumer.thread
    assert thread is not None
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert ran == []


# -- retries -----------------------------------------------------------------------------
def test_retries_with_backoff(app: Flask, mq: MemQueue) -> None:
    starts: list[float] = []
    etas: list[tuple[int, float]] = []

    @mq.task(retries=3, retry_delay=0.01, retry_backoff=2.0)
    def flaky() -> str:
        starts.append(time.time())
        if len(starts) < 3:
            raise RuntimeError("try again")
        return "ok"

    def on_retry(sender: Flask, job: Job) -> None:
        assert sender is app and job.status == "scheduled" and job.eta is not None
        etas.append((job.attempts, job.eta))

    assert [flaky.retry_in(n) for n in (1, 2, 3)] == [0.01, 0.02, 0.04]
    with job_retrying.connected_to(on_retry, app):
        job = flaky.delay()
        assert job.wait(TIMEOUT) == "ok"
    assert job.attempts == 3 and job.status == "succeeded"
    assert [attempt for attempt, _ in etas] == [1, 2]
    for n, (_, eta) in enumerate(etas, 1):
        assert eta >= starts[n - 1] + flaky.retry_in(n)  # waited retry_delay * backoff ** (n - 1)
        assert starts[n] >= eta  # and did not run before it was due


def test_retries_exhausted_fail_once(app: Flask, mq: MemQueue) -> None:
    failed: list[Job] = []

    @mq.task(retries=2, retry_delay=0.001)
    def hopeless() -> None:
        raise RuntimeError("never")

    with job_failed.connected_to(lambda sender, job: failed.append(job), app):
        job = hopeless.delay()
        with pytest.raises(JobFailed, match="never"):
            job.wait(TIMEOUT)
        assert mq.join(TIMEOUT)  # wait() may return before the signal is sent
    assert job.attempts == 3 and job.status == "failed"
    assert failed == [job]


# -- bounds ------------------------------------------------------------------------------
@pytest.mark.app_config(MEMQUEUE_MAXSIZE=2)
def test_queue_full_at_maxsize(app: Flask, mq: MemQueue, gate: Gate) -> None:
    running = mq.enqueue(gate)
    gate.wait_entered()  # a running job does not count: only waiting ones do
    mq.enqueue(noop)
    later = mq.enqueue_in(3600, noop)
    with pytest.raises(QueueFull, match="MEMQUEUE_MAXSIZE"):
        mq.enqueue(noop)
    with pytest.raises(QueueFull):
        mq.enqueue_in(1, noop)
    assert later.cancel()
    mq.enqueue(noop)  # room again
    gate.release()
    assert running.wait(TIMEOUT) == "gate"
    assert mq.join(TIMEOUT)


@pytest.mark.app_config(MEMQUEUE_MAXSIZE=0)
def test_maxsize_zero_is_unbounded(app: Flask, mq: MemQueue, gate: Gate) -> None:
    mq.enqueue(gate)
    for _ in range(20_000):
        mq.enqueue(noop)
    gate.release()
    assert mq.join(TIMEOUT)


@pytest.mark.app_config(MEMQUEUE_MAX_FINISHED=3)
def test_finished_jobs_bounded_by_max_finished(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    jobs = [mq.enqueue(noop) for _ in range(10)]
    assert mq.join(TIMEOUT)
    assert [mq.get_job(job.id) is not None for job in jobs] == [False] * 7 + [True] * 3
    assert queue.storage.counts()["succeeded"] == 3


@pytest.mark.app_config(MEMQUEUE_RESULT_TTL=0)
def test_finished_jobs_forgotten_after_result_ttl(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    job = mq.enqueue(lambda: 42)
    assert job.wait(TIMEOUT) == 42
    assert mq.join(TIMEOUT)  # recorded as finished, not only marked so
    assert mq.get_job(job.id) is None
    assert queue.storage.counts()["succeeded"] == 0
    assert job.result == 42  # the caller's handle keeps its result


def test_finished_jobs_kept_within_result_ttl(app: Flask, mq: MemQueue) -> None:
    job = mq.enqueue(lambda: 42)
    job.wait(TIMEOUT)
    assert mq.get_job(job.id) is job


# -- stepping without a consumer ---------------------------------------------------------
def test_run_once_steps_a_testing_app_without_consumer(make_app: Any, mq: MemQueue) -> None:
    app = make_app("stepper", MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = mq.enqueue(lambda: current_app.name)
        assert consumer_threads() == []
        assert job.status == "queued"
        assert mq.run_once() is True
        assert job.status == "succeeded" and job.result == "stepper"
        assert mq.run_once() is False


def test_build_app_helper_is_what_a_factory_does() -> None:
    mq = MemQueue()
    app = build_app(mq, "factory")
    try:
        assert app.extensions["memqueue"].mq is mq
        assert app.config["MEMQUEUE_MAXSIZE"] == 10_000  # defaults are set in the config
    finally:
        app.extensions["memqueue"].shutdown()


def test_shutdown_twice_is_harmless(app: Flask, mq: MemQueue) -> None:
    mq.enqueue(noop)
    assert mq.shutdown(timeout=TIMEOUT) is True
    assert mq.shutdown(timeout=TIMEOUT) is True
    assert consumer_threads() == []


def test_shutdown_outside_an_app_context_stops_every_app_it_bound(make_app: Any, mq: MemQueue) -> None:
    apps = [make_app("stop_one"), make_app("stop_two")]
    jobs = []
    for each in apps:
        with each.app_context():
            jobs.append(mq.enqueue(noop))
    assert mq.shutdown(timeout=TIMEOUT) is True
    assert all(job.status == "succeeded" for job in jobs)
    assert all(each.extensions["memqueue"].closed for each in apps)
    assert consumer_threads() == []


def test_a_job_can_enqueue_the_next_one(app: Flask, mq: MemQueue) -> None:
    order: list[str] = []

    @mq.task
    def second() -> None:
        order.append("second")

    @mq.task
    def first() -> str:
        job = enqueue(second)  # the job's own app context names the queue
        order.append("first")
        return job.id

    next_id = first.delay().wait(TIMEOUT)
    assert mq.join(TIMEOUT)
    assert order == ["first", "second"]
    found = mq.get_job(next_id)
    assert found is not None and found.status == "succeeded"
