"""Regressions: each test names the defect it keeps fixed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from support.waiting import wait_until

from flask_memqueue import ConfigurationError, JobStatus, MemQueue, QueueClosed
from flask_memqueue.job import _Outcome


def _app(**config: Any) -> tuple[Flask, MemQueue]:
    app = Flask(__name__)
    app.testing = True
    app.config.update(config)
    return app, MemQueue(app)


def test_success_after_retry_clears_the_earlier_error() -> None:
    app, mq = _app()
    attempts: list[int] = []

    @mq.task(retries=2, retry_delay=0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise ValueError("first attempt fails")
        return "ok"

    with app.app_context():
        job = flaky.delay()
        assert job.wait(timeout=10) == "ok"
        assert job.attempts == 2
        assert job.error is None and job.traceback is None
        assert job.to_dict()["error"] is None
        mq.shutdown(timeout=10)


def test_a_waiter_survives_the_consumer_replacing_the_outcome() -> None:
    """The consumer fills in a job without the store's lock; a waiter registered
    before it must still be woken (the event is kept by job id, not on the job)."""
    app, mq = _app(MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = mq.enqueue(lambda: 42)
        queue = app.extensions["memqueue"]
        event = queue.storage.waiter(job)
        assert event is not None and not event.is_set()
        job._out = _Outcome()  # what a racing consumer would do
        assert mq.run_once()
        assert event.is_set()
        assert job.wait(timeout=5) == 42
        mq.shutdown(timeout=5)


@pytest.mark.parametrize("call", ["join", "wait", "shutdown"])
def test_waiting_for_the_own_queue_from_inside_a_job_raises_instead_of_hanging(call: str) -> None:
    app, mq = _app()
    errors: list[BaseException] = []

    @mq.task
    def waits_for_itself() -> None:
        from flask_memqueue import current_job

        try:
            if call == "join":
                mq.join(timeout=None)
            elif call == "wait":
                current_job.wait(timeout=None)
            else:
                mq.shutdown(wait=True, timeout=None)
        except RuntimeError as exc:
            errors.append(exc)

    with app.app_context():
        waits_for_itself.delay()
        assert mq.join(timeout=10)
        assert len(errors) == 1 and "wait for itself" in str(errors[0])
        mq.shutdown(timeout=5)


def test_join_returns_false_at_once_when_no_consumer_can_run_the_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    app, mq = _app()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with app.app_context():
        monkeypatch.setattr(threading.Thread, "start", refuse)
        job = mq.enqueue(lambda: None)
        assert mq.join(timeout=None) is False  # returns instead of blocking forever
        monkeypatch.undo()
        assert mq.join(timeout=10) and job.status is JobStatus.SUCCEEDED
        mq.shutdown(timeout=5)


def test_url_prefix_root_is_refused_instead_of_silently_mounting_nothing() -> None:
    app = Flask(__name__)
    app.config["MEMQUEUE_URL_PREFIX"] = "/"
    with pytest.raises(ConfigurationError, match="MEMQUEUE_URL_PREFIX"):
        MemQueue(app)


def test_an_enqueue_after_shutdown_dropped_the_queue_is_refused_not_stranded() -> None:
    app, mq = _app()
    with app.app_context():
        queue = app.extensions["memqueue"]
        mq.shutdown(timeout=5)
        queue.supervisor.closed = False  # an enqueue that passed the closed check just before shutdown
        with pytest.raises(QueueClosed):
            mq.enqueue(lambda: None)
        queue.supervisor.closed = True


def test_a_store_that_keeps_failing_backs_off_in_its_thread_instead_of_restarting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9, defect 8: the consumer stays, backs off, logs once per outage, recovers."""
    app, mq = _app()
    with app.app_context():
        queue = app.extensions["memqueue"]
        real_take = queue.storage.take
        calls: list[int] = []
        works = threading.Event()

        def take(timeout: Any, done: Any = None, **kw: Any) -> Any:
            if works.is_set():
                return real_take(timeout, done, **kw)
            calls.append(1)
            raise OSError("disk on fire")

        monkeypatch.setattr(queue.storage, "take", take)
        job = mq.enqueue(lambda: "ran")  # starts the consumer, whose take() fails
        wait_until(lambda: len(calls) >= 3)  # tried again after 0.1 s, then after 0.2 s
        client = app.test_client()
        r = client.get("/memqueue/health")
        assert r.status_code == 503 and "disk on fire" in r.get_json()["error"]
        assert queue.starts == 1  # one thread all along: no restart loop
        works.set()
        assert job.wait(timeout=10) == "ran"  # nothing queued was lost
        assert client.get("/memqueue/health").status_code == 200
        assert queue.starts == 1
        mq.shutdown(timeout=5)
    fails = [r for r in caplog.records if "fails: OSError: disk on fire" in r.getMessage()]
    recovered = [r for r in caplog.records if "works again" in r.getMessage()]
    assert len(fails) == 1 and len(recovered) == 1, [r.getMessage() for r in caplog.records]


def test_shutdown_drains_due_jobs_and_cancels_those_scheduled_for_later() -> None:
    """shutdown(wait=True) does not wait an hour for a job due in an hour."""
    app, mq = _app()
    with app.app_context():
        later = mq.enqueue_in(3600, lambda: "later")
        now = mq.enqueue(lambda: "now")
        assert mq.shutdown(wait=True, timeout=None) is False  # something was left unrun
        assert now.status is JobStatus.SUCCEEDED
        assert later.status is JobStatus.CANCELLED
        assert later.error is not None and "shut down" in later.error


def test_get_on_the_purge_route_is_405_not_an_unknown_job() -> None:
    app, mq = _app()
    response = app.test_client().get("/memqueue/jobs/purge")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "error" in response.get_json()
    with app.app_context():
        mq.shutdown(timeout=5)


def test_shutdown_does_not_hang_when_the_last_job_goes_back_to_the_schedule_for_a_retry() -> None:
    app, mq = _app()
    started = threading.Event()
    release = threading.Event()

    @mq.task(retries=1, retry_delay=3600)
    def fails_once_later() -> None:
        started.set()
        release.wait(10)
        raise ValueError("retry me in an hour")

    with app.app_context():
        job = fails_once_later.delay()
        assert started.wait(10)
        done: list[bool] = []
        stopper = threading.Thread(target=lambda: done.append(mq.shutdown(wait=True, timeout=None)))
        stopper.start()
        release.set()  # the job fails now and is scheduled again, due in an hour
        stopper.join(10)
        assert not stopper.is_alive(), "shutdown(wait=True) waited for a retry due in an hour"
        assert done == [False]
        assert job.status is JobStatus.CANCELLED
