"""The enqueue and consume hot paths (issue 19): what their shortcuts must keep.

Each shortcut on the hot path (a job made without ``Job.__init__``, shared
job options, the memory store's put cache, its finished-jobs record, the
consumer's current job, the non-blocking lock acquire) is checked here
against the plain behaviour it stands in for.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import pytest
from flask import Flask
from support.waiting import TIMEOUT, Gate, wait_until

from flask_memqueue import Job, JobStatus, MemQueue, current_job
from flask_memqueue.job import DEFAULT_OPTIONS, JobOptions, job_options, queued_job
from flask_memqueue.registry import Registry
from flask_memqueue.state import AppQueue
from flask_memqueue.storage.memory import MemoryStorage, _acquire_contended, _Finished


def noop(*args: Any) -> None:
    return None


def slots_of(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in Job.__slots__}


# -- how a job is made ----------------------------------------------------------------------
def test_every_way_to_make_a_job_makes_the_same_job(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    task = mq.registry.resolve(noop)
    by_init = Job(queue.jobs, 7, task, (1,), None, 100.0)
    by_factory = queued_job(queue.jobs, 7, task, (1,), None, 100.0, task.job_options)
    assert slots_of(by_init) == slots_of(by_factory)
    with app.app_context():
        enqueued = queue.new_job(task, (1,), None)  # what AppQueue.enqueue inlines
    assert {k: v for k, v in slots_of(enqueued).items() if k not in ("key", "enqueued_at")} == {
        k: v for k, v in slots_of(by_init).items() if k not in ("key", "enqueued_at")
    }
    assert by_init.status is JobStatus.QUEUED and by_init.attempts == 0 and by_init.eta is None


def test_a_queued_job_holds_nine_references(app: Flask, mq: MemQueue) -> None:
    # the backlog is made of these: queue, priority, unique key and tick are one shared object
    with app.app_context():
        a, b = mq.enqueue(noop), mq.enqueue(noop, 2)
    assert len(Job.__slots__) == 9 and not hasattr(a, "__dict__")
    with app.app_context():
        c = mq.options(priority=5).enqueue(noop)
        d = mq.options(priority=5).enqueue(noop)
    assert a.options is b.options is mq.registry.resolve(noop).job_options
    assert c.options is d.options and c.options is not a.options
    assert (c.queue, c.priority, c.unique_key, c.tick) == ("default", 5, None, None)


def test_job_options_are_immutable_and_shared_by_value() -> None:
    assert job_options() is DEFAULT_OPTIONS is job_options("default", 0)
    assert job_options("q", 3) is job_options("q", 3)
    keyed = job_options("q", 3, "k")
    assert keyed is not job_options("q", 3, "k") and keyed.unique_key == "k"  # one per job that asks
    with pytest.raises(AttributeError):
        keyed.queue = "other"  # type: ignore[misc]
    assert keyed.replace(unique_key=None) is job_options("q", 3)
    assert keyed.replace(priority=4) == JobOptions("q", 4, "k")


def test_writing_a_job_field_gives_it_new_options(app: Flask, mq: MemQueue) -> None:
    with app.app_context():
        job, other = mq.enqueue(noop), mq.enqueue(noop)
    job.priority = 9
    assert job.priority == 9 and other.priority == 0 and job.options is job_options("default", 9)
    job.attempts = 2
    assert job.attempts == 2


def test_a_task_s_queue_and_priority_are_its_job_options(mq: MemQueue) -> None:
    @mq.task(queue="emails", priority=10)
    def send() -> None: ...

    assert send.job_options is job_options("emails", 10)
    send.priority = 20
    assert (send.queue, send.priority) == ("emails", 20) and send.job_options is job_options("emails", 20)


def test_the_registry_answers_a_function_seen_before_in_one_lookup() -> None:
    registry = Registry()

    def adhoc() -> None: ...

    task = registry.resolve(adhoc)
    assert registry.known[adhoc] is task and registry.resolve(adhoc) is task
    registered = registry.resolve(noop)
    from flask_memqueue.registry import Task

    real = Task(noop, "tests.noop")
    registry.add_task(real)  # registering a function seen ad hoc replaces its ad hoc task
    assert registry.known[noop] is real and registry.known[real] is real and registered is not real
    registry.ADHOC_CACHE = 2
    funcs = [lambda: None for _ in range(3)]
    for f in funcs:
        registry.resolve(f)
    assert funcs[0] not in registry.known and funcs[2] in registry.known  # the ad hoc cache stays bounded
    assert registry.known[noop] is real  # registered tasks are never evicted


# -- the memory store --------------------------------------------------------------------------
def make_job(store: MemoryStorage, key: int, options: JobOptions = DEFAULT_OPTIONS) -> Job:
    class Host:
        token = store.token

    return queued_job(Host(), key, _Task(), (), None, time.time(), options)  # type: ignore[arg-type]


class _Task:
    name = "t"
    topic = None
    retries = 0
    missing = False

    @staticmethod
    def func() -> None: ...

    @staticmethod
    def retry_in(attempt: int) -> float:
        return 0.0


def test_put_keeps_order_when_the_options_change_between_puts() -> None:
    # put() caches the lane and deque of the last options it saw
    store = MemoryStorage("t", maxsize=0)
    high, low = job_options("default", 5), job_options("default", -5)
    jobs = [make_job(store, k, o) for k, o in [(1, low), (2, high), (3, low), (4, high), (5, high)]]
    for job in jobs:
        store.put(job)
    assert [j.key for j in iter(lambda: store.take(0), None)] == [2, 4, 5, 1, 3]


def test_put_after_drop_waiting_does_not_use_a_dropped_deque() -> None:
    store = MemoryStorage("t", maxsize=0)
    store.put(make_job(store, 1))
    assert [j.key for j in store.drop_waiting()] == [1]
    store._closed = False  # reopened as a test would: the put cache must not hold the dropped deque
    store.put(make_job(store, 2))
    taken = store.take(0)
    assert taken is not None and taken.key == 2 and store.depth() == 0


def test_finished_record_is_bounded_and_finds_what_it_keeps() -> None:
    finished = _Finished(3)
    store = MemoryStorage("t")
    jobs = [make_job(store, k) for k in range(1, 8)]
    for job in jobs:
        job.mark_cancelled(time.time())
        finished.add(job)
    assert [j.key for j in finished] == [5, 6, 7]
    assert [finished.get(k) is not None for k in range(1, 8)] == [False] * 4 + [True] * 3
    finished.discard(jobs[5])
    assert [j.key for j in finished] == [5, 7] and finished.get(6) is None and finished.get(7) is jobs[6]
    finished.expire(time.time() + 1)
    assert len(finished) == 0 and finished.get(7) is None
    nothing = _Finished(0)
    nothing.add(jobs[0])
    assert len(nothing) == 0 and nothing.get(1) is None


def test_finished_record_indexes_on_lookup_and_stays_bounded() -> None:
    """Finishing a job stores no key (the lookups index what finished since the last one);
    lookups between finishes, and after many jobs, find exactly the jobs kept."""
    finished = _Finished(4)
    store = MemoryStorage("t")
    jobs = [make_job(store, k) for k in range(1, 60)]
    for n, job in enumerate(jobs, 1):
        job.mark_cancelled(time.time())
        finished.add(job)
        assert finished.indexed < finished.count  # nothing indexed on the way in
        if n % 3 == 0 or n > 50:
            kept = {j.key for j in jobs[max(0, n - 4):n]}
            assert [k for k in range(1, 60) if finished.get(k) is not None] == sorted(kept)
            assert len(finished.index) <= 2 * finished.limit  # rebuilt, never unbounded
    assert finished.get(59) is jobs[58] and finished.get(55) is None


def _sleeping_take(store: MemoryStorage, timeout: float = TIMEOUT) -> tuple[threading.Thread, list[Job | None]]:
    """A thread in store.take(timeout), asleep on the default lane once this returns."""
    got: list[Job | None] = []
    thread = threading.Thread(target=lambda: got.append(store.take(timeout)))
    thread.start()
    wait_until(lambda: "default" in store._lanes and len(store._lanes["default"].sleepers) == 1, TIMEOUT)
    return thread, got


def test_a_put_hands_its_job_to_a_consumer_asleep_on_an_empty_lane() -> None:
    """The job is taken for the sleeper in the put (RUNNING, counted as running, never
    waiting), and the woken take returns exactly it."""
    store = MemoryStorage("t")
    thread, got = _sleeping_take(store)
    job = make_job(store, 1)
    store.put(job)
    assert job.status is JobStatus.RUNNING and store.depth() == 0 and store.counts()["running"] == 1
    thread.join(TIMEOUT)
    assert not thread.is_alive() and got == [job]
    store.finish(job)
    assert store.counts()["running"] == 0


def test_a_put_does_not_hand_over_past_waiting_or_scheduled_jobs_or_on_a_paused_lane() -> None:
    """With a job scheduled on the lane (due or not) the put queues as before, and the
    sleeper takes by priority and due time; on a paused lane nothing is handed over."""
    store = MemoryStorage("t")
    early = make_job(store, 1)
    early.mark_scheduled(time.time() - 5)  # due already, and older than the job put below
    store.pause("default")
    store.schedule(early)
    thread, got = _sleeping_take(store)
    late = make_job(store, 2)
    store.put(late)
    assert late.status is JobStatus.QUEUED and store.depth() == 2  # paused: queued, nothing handed
    store.resume("default")
    thread.join(TIMEOUT)
    assert got == [early]  # the scheduled job came first, by due time
    assert store.take(0) is late


def test_a_contended_acquire_waits_without_holding_the_lock() -> None:
    lock = threading.Lock()
    lock.acquire()
    released = threading.Event()
    got: list[bool] = []

    def taker() -> None:
        _acquire_contended(lock)
        got.append(released.is_set())
        lock.release()

    thread = threading.Thread(target=taker)
    thread.start()
    released.set()
    lock.release()
    thread.join(TIMEOUT)
    assert not thread.is_alive() and got == [True]


# -- the consumer -------------------------------------------------------------------------------
def test_current_job_in_the_consumer_thread_and_in_run_once(make_app: Any, mq: MemQueue) -> None:
    seen: list[str] = []

    @mq.task
    def record() -> None:
        seen.append(current_job.id)

    app = make_app("current", MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = record.delay()
        assert mq.run_once() is True  # this thread, not a consumer thread
        with pytest.raises(RuntimeError, match="only available inside a running flask-memqueue job"):
            current_job.id  # noqa: B018
    assert seen == [job.id]


def test_current_job_comes_back_after_a_job_steps_its_queue(make_app: Any, mq: MemQueue) -> None:
    seen: list[str] = []

    @mq.task
    def inner() -> None:
        seen.append(current_job.id)

    @mq.task
    def outer() -> None:
        seen.append(current_job.id)
        inner.delay()
        mq.run_once()  # runs inner here, one job inside another
        seen.append(current_job.id)

    app = make_app("nested", MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = outer.delay()
        assert mq.run_once() is True
    assert seen[0] == seen[2] == job.id and seen[1] != job.id


def test_counters_and_throughput_count_each_finished_job_once(app: Flask, mq: MemQueue, queue: AppQueue,
                                                              gate: Gate) -> None:
    @mq.task(retries=1, retry_delay=0.0)
    def flaky(state: list[int]) -> None:
        state.append(1)
        if len(state) == 1:
            raise ValueError("once")

    with app.app_context():
        flaky.delay([])
        for _ in range(3):
            mq.enqueue(noop)
        assert mq.join(TIMEOUT)
    consumer = queue.consumer
    assert consumer.attempts == 5 and consumer.jobs_done == 4
    assert sum(row["jobs"] for row in consumer.throughput()) == 4


def test_enqueue_reads_flasks_own_context_variable_while_flask_has_it(app: Flask, mq: MemQueue) -> None:
    # mq.enqueue reads the app through flask.globals._cv_app (the public proxy costs 6.5% of an
    # enqueue). This fails when a Flask release moves or changes it: then decide again.
    from contextvars import ContextVar

    import flask.globals

    from flask_memqueue import extension

    assert isinstance(flask.globals._cv_app, ContextVar), "Flask moved _cv_app: extension.py falls back"
    assert extension._app_context == flask.globals._cv_app.get
    with app.app_context():
        assert extension._app_context().app is app
        assert mq.enqueue(noop, 1).status is JobStatus.QUEUED


def test_the_public_fallback_finds_the_same_app(app: Flask, mq: MemQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_memqueue import extension

    monkeypatch.setattr(extension, "_app_context", extension._public_app_context)
    outside = contextvars.Context()  # no app context in it, whatever this test's fixtures pushed
    with pytest.raises(LookupError):
        outside.run(extension._public_app_context)
    with pytest.raises(RuntimeError, match="outside of application context"):
        outside.run(mq.enqueue, noop, 1)
    with app.app_context():
        assert extension._public_app_context().app is app
        assert mq.enqueue(noop, 2).status is JobStatus.QUEUED
