"""Regressions of the store and consumer side of issue 9 (defects 7, 10 and 11).

Defect 8 (a journal that cannot be used) and 9 (SIGTERM to ``flask run``)
are in ``test_faults.py``, with the other faults.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.backends import STORAGE_BACKENDS, backend_params
from support.contention import switch_often
from support.harness import Env
from support.waiting import TIMEOUT, Gate, wait_until

from flask_memqueue import Job, JobStatus, MemQueue
from flask_memqueue.state import AppQueue

MakeApp = Callable[..., Flask]


# -- defect 7: concurrent enqueuers -----------------------------------------------------------
def test_jobs_of_concurrent_enqueuers_are_findable_and_cancellable_while_queued(
    mq: MemQueue, make_app: MakeApp, gate: Gate
) -> None:
    """16 threads x 2,000 enqueues while the consumer is parked: every job can be found and cancelled.

    Job numbers are taken before the memory store's lock, so enqueuers reach
    the store out of number order; the waiting deque is binary-searched, so
    it must stay sorted (it did not: thousands of queued jobs were invisible).
    """
    threads, per_thread = 16, 2000

    @mq.task
    def noop(i: int) -> int:
        return i

    app = make_app(MEMQUEUE_MAXSIZE=0)
    queue: AppQueue = app.extensions["memqueue"]
    with app.app_context():
        blocker = mq.enqueue(gate)
        gate.wait_entered()
    jobs: list[list[Job]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def produce(k: int) -> None:
        with app.app_context():
            start.wait(TIMEOUT)
            for i in range(per_thread):
                jobs[k].append(mq.enqueue(noop, i))

    workers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    with switch_often():  # the race is a few bytecodes wide
        for w in workers:
            w.start()
        for w in workers:
            w.join(TIMEOUT * 3)
    assert not any(w.is_alive() for w in workers)
    every = [job for part in jobs for job in part]
    assert len(every) == threads * per_thread
    with app.app_context():
        invisible = [job.id for job in every if mq.get_job(job.id) is not job]
        assert invisible == [], f"{len(invisible)} queued jobs not found by id, e.g. {invisible[:3]}"
        client = app.test_client()
        for job in every[::997]:  # over HTTP too, a sample
            assert client.get(f"/memqueue/jobs/{job.id}").get_json()["status"] == "queued"
        not_cancelled = [job.id for job in every if not job.cancel()]
        assert not_cancelled == [], f"{len(not_cancelled)} queued jobs could not be cancelled"
    assert all(job.status is JobStatus.CANCELLED for job in every)
    assert queue.storage.depth() == 0
    gate.release()
    assert blocker.wait(TIMEOUT) == "gate"


# -- defect 10: apps sharing a journal ---------------------------------------------------------
@pytest.mark.parametrize("backend", ["memory", "journal"])
def test_an_app_never_sees_another_apps_job_by_id(mq: MemQueue, make_app: MakeApp, tmp_path: Path,
                                                  backend: str) -> None:
    @mq.task(name="noop")
    def noop() -> str:
        return "ran"

    config: dict[str, Any] = {"MEMQUEUE_CONSUMER": False}
    if backend == "journal":
        config["MEMQUEUE_JOURNAL"] = str(tmp_path / "shared.db")
    a = make_app("app_a", **config)
    b = make_app("app_b", **config)
    with a.app_context():
        waiting = mq.enqueue(noop)
        done = mq.enqueue(noop)
    assert mq.queue_for(a).consumer.run_once(TIMEOUT) and mq.queue_for(a).consumer.run_once(TIMEOUT)
    with a.app_context():
        waiting = mq.enqueue(noop)  # queued, never run
        failed = mq.get_job(done.id)
        assert failed is not None and failed.status is JobStatus.SUCCEEDED
    store_b = mq.queue_for(b).storage
    with b.app_context():
        for job in (waiting, done):
            assert mq.get_job(job.id) is None, f"app B sees app A's {job.status.value} job"
    client = b.test_client()
    for job in (waiting, done):
        r = client.get(f"/memqueue/jobs/{job.id}")
        assert r.status_code == 404 and r.is_json, r.data
        r = client.post(f"/memqueue/jobs/{job.id}/cancel")
        assert r.status_code == 404 and r.is_json, r.data
    # The store itself, handed A's Job object by a confused caller, touches nothing of A's.
    assert store_b.cancel(waiting) is False
    assert store_b.requeue(done) is False
    with a.app_context():
        again = mq.get_job(waiting.id)
        assert again is not None and again.status is JobStatus.QUEUED
        assert mq.get_job(done.id).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]


# -- defect 11: wait() on an object the consumer did not run ----------------------------------------
def test_wait_on_a_journal_job_read_by_id_returns_the_outcome_another_object_ran(
    mq: MemQueue, make_app: MakeApp, tmp_path: Path
) -> None:
    """One process, two app instances of one name on one journal: A enqueues, B reads by id and waits.

    B's ``wait()`` starts B's consumer, which runs the job as a Job object of
    its own; the object get_job returned must still get the outcome.
    """

    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    path = str(tmp_path / "j.db")
    producer = make_app("shared", MEMQUEUE_JOURNAL=path, MEMQUEUE_CONSUMER=False)
    consumer = make_app("shared", MEMQUEUE_JOURNAL=path)
    with producer.app_context():
        ids = [mq.enqueue(double, i).id for i in range(5)]
    with consumer.app_context():
        found = [mq.get_job(jid) for jid in ids]
        assert all(job is not None and job.status is JobStatus.QUEUED for job in found)
        results = [job.wait(TIMEOUT) for job in found if job is not None]
        assert results == [0, 2, 4, 6, 8]
        assert all(job is not None and job.status is JobStatus.SUCCEEDED for job in found)


@pytest.mark.processes
def test_wait_on_a_journal_job_enqueued_by_another_process(mq: MemQueue, make_app: MakeApp,
                                                           make_env: Callable[..., Env]) -> None:
    """Two real processes: a subprocess enqueues (MEMQUEUE_CONSUMER=False there); this one waits."""

    @mq.task(name="record")
    def record(n: int, hold: int = -1) -> int:
        return n

    env = make_env("journal_app")
    journal = env.journal
    enqueue = env.main("enqueue", "enqueue", "5", JT_JOURNAL=str(journal), JT_CONSUMER="0")
    assert enqueue.wait(60) == 0, env.output("enqueue")
    app = make_app("journal_app", MEMQUEUE_JOURNAL=str(journal), MEMQUEUE_MAXSIZE=0)
    queue: AppQueue = app.extensions["memqueue"]
    with app.app_context():
        waiting = queue.storage.jobs(JobStatus.QUEUED, limit=10)
        assert len(waiting) == 5
        found = [mq.get_job(job.id) for job in waiting]
        assert sorted(job.wait(TIMEOUT) for job in found if job is not None) == [0, 1, 2, 3, 4]
        assert all(job is not None and job.status is JobStatus.SUCCEEDED for job in found)


# -- found by the soak: a reader's older row copied onto the job the consumer runs -----------------------
def test_a_readers_older_row_never_rewinds_a_job_the_consumer_holds(mq: MemQueue, make_app: MakeApp,
                                                                    tmp_path: Path) -> None:
    """A get_job()/cancel() that read the row before the claim (or before the outcome was recorded)
    copied it onto the very object the consumer runs: the job was recorded "queued" again and ran
    twice, or "running" for ever. ``_job_of(stale_row)`` is what such a reader does."""
    from flask_memqueue.storage.sqlite import SQLiteStorage

    runs: list[int] = []

    @mq.task(name="once")
    def once() -> str:
        runs.append(1)
        return "ran"

    app = make_app("japp", MEMQUEUE_JOURNAL=str(tmp_path / "j.db"), MEMQUEUE_CONSUMER=False)
    queue: AppQueue = app.extensions["memqueue"]
    store = queue.storage
    assert isinstance(store, SQLiteStorage)
    with app.app_context():
        job = mq.enqueue(once)

    def row() -> Any:
        return store._load(job.id, None)

    queued_row = row()
    assert store.take(0) is job and job.status is JobStatus.RUNNING
    running_row = row()
    store.job_of(queued_row)  # a reader whose read came before the claim
    assert job.status is JobStatus.RUNNING
    queue.consumer.execute(job)
    assert job.status is JobStatus.SUCCEEDED
    store.job_of(running_row)  # a reader whose read came before the outcome was recorded
    store._refresh(job)
    assert job.status is JobStatus.SUCCEEDED
    store.finish(job)
    assert store.take(0) is None  # recorded as succeeded: nothing to claim again
    assert row().status == "succeeded" and runs == [1]


# -- seen once in test_async's postgres row: get_job() answered "running" after the job's wait() returned --------
@pytest.mark.parametrize("backend", backend_params(["sqlite", "dict", "redis", "postgres"]))
def test_get_job_never_answers_an_older_row_than_the_object_this_process_recorded(
    mq: MemQueue, make_app: MakeApp, tmp_path: Path, backend: str
) -> None:
    """``get_job`` reads the row, then looks for this process's own object. When the consumer
    recorded the outcome in between (and forgot the object as finished), the reader built a
    fresh Job from its older row: "running", no result, although ``job.wait()`` had returned.
    The interleaving is forced here: the read pauses until the outcome is written."""
    opened = threading.Event()

    @mq.task(name="regress.gated")
    def gated() -> int:
        assert opened.wait(TIMEOUT), "the reader never let the job finish"
        return 5

    app = make_app("getapp", **STORAGE_BACKENDS[backend](tmp_path))
    store = app.extensions["memqueue"].storage
    reader = threading.current_thread()
    real_load = store._load

    def load_then_let_it_finish(job_id: str, visible_after: float | None) -> Any:
        record = real_load(job_id, visible_after)
        if threading.current_thread() is reader and not opened.is_set():
            assert record is not None and record.status == "running"
            opened.set()  # the job returns now; its outcome is written while this read is "in flight"
            wait_until(lambda: job_id not in store.codec.local, TIMEOUT, "the outcome to be recorded")
        return record

    with app.app_context():
        job = gated.delay()
        wait_until(lambda: job.status is JobStatus.RUNNING, TIMEOUT, "the job to start")
        store._load = load_then_let_it_finish
        try:
            found = mq.get_job(job.id)
        finally:
            del store._load
        assert opened.is_set()
        assert found is not None and found.status is JobStatus.SUCCEEDED and found.result == 5, found
        assert job.wait(TIMEOUT) == 5 and mq.join(TIMEOUT)


def test_shutdown_says_which_job_was_still_running_when_its_time_was_up(
    make_app: Callable[..., Flask], mq: MemQueue, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that outlives MEMQUEUE_SHUTDOWN_TIMEOUT at exit is named in the log, never silently cut off."""
    app = make_app()
    with app.app_context():
        job = mq.enqueue(gate)
        gate.wait_entered()
        with caplog.at_level(logging.WARNING, logger="flask_memqueue"):
            assert mq.shutdown(timeout=0.05) is False
    gate.release()
    assert f"while job {job.id} ({job.name}) was still running" in caplog.text
    assert "interrupted and lost" in caplog.text


# -- waits and due times beyond what a lock's timeout takes ----------------------------------------
@pytest.mark.parametrize("backend", backend_params(STORAGE_BACKENDS))
def test_timeouts_and_due_times_centuries_ahead_break_no_wait_and_no_consumer(
    backend: str, make_app: MakeApp, mq: MemQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``wait(timeout=float("inf"))``, ``join(1e12)`` and a job due 31,700 years ahead (or a
    retry ``1e308`` seconds ahead) are waits without end, not errors: a lock takes no timeout
    beyond ``threading.TIMEOUT_MAX`` (292 years). On the memory store the waits raised
    OverflowError, and its consumer, asleep until the far job was due, failed in a loop
    ("the job store fails") and left its wake-up lock so that shutdown raised."""

    @mq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @mq.task(name="flaky", retries=1, retry_delay=1e308)
    def flaky() -> None:
        raise ValueError("again, in a while")

    app = make_app(**STORAGE_BACKENDS[backend](tmp_path))
    caplog.set_level(logging.WARNING)
    with app.app_context():
        far = mq.enqueue_in(1e12, add, 1, 1)
        retried = flaky.delay()
        wait_until(lambda: (mq.get_job(retried.id) or retried).status is JobStatus.SCHEDULED)
        for timeout in (1e12, float("inf")):
            assert add.delay(2, 3).wait(timeout=timeout) == 5
        with pytest.raises(ValueError, match="nan"):
            add.delay(4, 5).wait(timeout=float("nan"))
        assert mq.get_job(far.id).status is JobStatus.SCHEDULED  # type: ignore[union-attr]
        assert far.cancel() and (mq.get_job(retried.id) or retried).cancel()
        assert mq.join(1e12) is True
    failures = [r.getMessage() for r in caplog.records if "job store" in r.getMessage()]
    assert not failures, failures
    assert app.extensions["memqueue"].shutdown(wait=True, timeout=float("inf")) is True
