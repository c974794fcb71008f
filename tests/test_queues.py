"""Named queues, priorities and a pool of consumer threads per queue (issue 11).

Every test synchronises on events, barriers and joins with deadlines: none
depends on how fast a thread runs.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from support.threads import CONSUMER_PREFIX, consumer_threads
from support.waiting import TIMEOUT, Gate, wait_until

from flask_memqueue import ConfigurationError, MemQueue, UnknownQueueError
from flask_memqueue.state import AppQueue

MakeApp = Callable[..., Flask]


def pools(app: Flask) -> dict[str, int]:
    """Live consumer threads per queue, as the app's state records them."""
    queue: AppQueue = app.extensions["memqueue"]
    return {name: len(idents) for name, idents in queue.consumer_idents.items()}


# -- the API --------------------------------------------------------------------------------
def test_a_task_declares_its_queue_and_priority_and_the_job_shows_them(make_app: MakeApp, mq: MemQueue) -> None:
    @mq.task(queue="emails", priority=10)
    def send(to: str) -> str:
        return to

    app = make_app(MEMQUEUE_QUEUES={"emails": 2})
    with app.app_context():
        job = send.delay("a@example.com")
        assert job.wait(TIMEOUT) == "a@example.com"
        assert (job.queue, job.priority) == ("emails", 10)
        shown = job.to_dict()
        assert (shown["queue"], shown["priority"]) == ("emails", 10)
        plain = mq.enqueue(lambda: 1)
        assert (plain.queue, plain.priority) == ("default", 0)
        plain.wait(TIMEOUT)


def test_options_choose_queue_and_priority_per_call_and_never_reach_the_function(
    make_app: MakeApp, mq: MemQueue
) -> None:
    seen: list[tuple[Any, Any]] = []

    @mq.task
    def takes_options_named_like_ours(queue: str = "mine", priority: int = -1) -> None:
        seen.append((queue, priority))

    app = make_app(MEMQUEUE_QUEUES={"urgent": 1})
    with app.app_context():
        job = takes_options_named_like_ours.options(queue="urgent", priority=50).delay(queue="q", priority=7)
        job.wait(TIMEOUT)
        assert (job.queue, job.priority) == ("urgent", 50)
        later = takes_options_named_like_ours.options(priority=3).enqueue_in(0, "x")
        at = takes_options_named_like_ours.options(queue="urgent").enqueue_at(dt.datetime.now(dt.timezone.utc))
        by_name = mq.options(queue="urgent", priority=-5).enqueue(takes_options_named_like_ours.name, "n")
        plain = mq.options(priority=100).enqueue(lambda: None)
        in_ = mq.options(queue="urgent").enqueue_in(dt.timedelta(0), lambda: None)
        at2 = mq.options(priority=1).enqueue_at(dt.datetime.now(dt.timezone.utc), lambda: None)
        for j in (later, at, by_name, plain, in_, at2):
            j.wait(TIMEOUT)
        assert [(j.queue, j.priority) for j in (later, at, by_name, plain, in_, at2)] == [
            ("default", 3), ("urgent", 0), ("urgent", -5), ("default", 100), ("urgent", 0), ("default", 1)
        ]
    assert seen[0] == ("q", 7)  # the function got its own keyword arguments
    assert ("x", -1) in seen and ("n", -1) in seen


@pytest.mark.parametrize("bad", [101, -101, 1.5, "high", True])
def test_a_bad_priority_is_a_value_error_naming_it(make_app: MakeApp, mq: MemQueue, bad: Any) -> None:
    @mq.task
    def noop() -> None: ...

    make_app()
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        noop.options(priority=bad)
    with pytest.raises(ValueError, match="priority"):
        mq.options(priority=bad)
    with pytest.raises(ConfigurationError, match="priority"):
        mq.task(priority=bad)(lambda: None)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "slash/", 3])
def test_a_bad_queue_name_is_a_value_error_naming_it(mq: MemQueue, bad: Any) -> None:
    with pytest.raises(ValueError, match="queue name"):
        mq.options(queue=bad)
    with pytest.raises(ConfigurationError, match="queue"):
        mq.task(queue=bad)(lambda: None)


def test_enqueueing_to_an_undeclared_queue_names_it_and_the_key(make_app: MakeApp, mq: MemQueue) -> None:
    @mq.task(queue="reports")
    def report() -> None: ...

    app = make_app()
    with app.app_context(), pytest.raises(UnknownQueueError, match=r"'reports'.*MEMQUEUE_QUEUES"):
        report.delay()
    with app.app_context(), pytest.raises(UnknownQueueError, match="'nowhere'"):
        mq.options(queue="nowhere").enqueue(lambda: None)
    client = app.test_client()

    @mq.handler("orders", queue="orders")
    def on_order(message: Any) -> None: ...

    r = client.post("/memqueue/produce", json={"message": 1, "topic": "orders"})
    assert r.status_code == 500 and "MEMQUEUE_QUEUES" in r.get_json()["error"]


def test_with_a_shared_store_a_queue_a_task_names_is_declared(make_app: MakeApp, mq: MemQueue, tmp_path: Any) -> None:
    """A web tier enqueues to a queue only its workers consume: the task's queue= declares it."""

    @mq.task(queue="reports")
    def report() -> str:
        return "done"

    web = make_app("web_tier", MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'jobs.db'}", MEMQUEUE_QUEUES={"default": 0})
    with web.app_context():
        job = report.delay()
        assert job.status == "queued" and pools(web) == {"default": 0}
        with pytest.raises(UnknownQueueError, match="--queues nowhere"):
            mq.options(queue="nowhere").enqueue(report)

        @mq.task(queue="late")  # registered after the first enqueue: its queue counts from now on
        def late() -> None: ...

        assert late.delay().queue == "late"
    worker = make_app("web_tier", MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'jobs.db'}",
                      MEMQUEUE_QUEUES={"default": 0, "reports": 1})
    with worker.app_context():
        worker.extensions["memqueue"].ensure_consumer()
    with web.app_context():
        assert job.wait(TIMEOUT) == "done"


def test_the_default_queue_is_always_declared(make_app: MakeApp) -> None:
    app = make_app(MEMQUEUE_QUEUES={"emails": 2})
    assert app.extensions["memqueue"].threads == {"emails": 2, "default": 1}
    app2 = make_app("two", MEMQUEUE_QUEUES={"default": {"threads": 3}})
    assert app2.extensions["memqueue"].threads == {"default": 3}


# -- order within a queue ----------------------------------------------------------------------
def test_higher_priority_first_then_fifo_on_one_thread(app: Flask, mq: MemQueue, gate: Gate) -> None:
    ran: list[str] = []
    with app.app_context():
        mq.enqueue(gate)
        gate.wait_entered()  # the one consumer thread is busy: everything below waits
        plan = [("low-1", -10), ("mid-1", 0), ("high-1", 50), ("mid-2", 0), ("high-2", 50), ("low-2", -10),
                ("top", 100)]
        for name, prio in plan:
            mq.options(priority=prio).enqueue(ran.append, name)
        gate.release()
        assert mq.join(TIMEOUT)
    assert ran == ["top", "high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


def test_due_scheduled_jobs_take_their_place_by_priority(app: Flask, mq: MemQueue, gate: Gate) -> None:
    ran: list[str] = []
    with app.app_context():
        mq.enqueue(gate)
        gate.wait_entered()
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=60)
        mq.options(priority=0).enqueue(ran.append, "queued-0")
        mq.options(priority=10).enqueue_in(0, ran.append, "due-10")
        mq.options(priority=-10).enqueue_in(0, ran.append, "due-minus-10")
        mq.options(priority=0).enqueue_in(0, ran.append, "due-0")
        mq.options(priority=0).enqueue_at(past, ran.append, "due-0-a-minute-ago")
        mq.options(priority=5).enqueue(ran.append, "queued-5")
        gate.release()
        assert mq.join(TIMEOUT)
    # priority first, then due time: a queued job's is its enqueue time, a scheduled one's its eta
    assert ran == ["due-10", "queued-5", "due-0-a-minute-ago", "queued-0", "due-0", "due-minus-10"]


def test_per_producer_fifo_with_8_producers_on_a_one_thread_queue(app: Flask, mq: MemQueue, gate: Gate) -> None:
    ran: list[tuple[int, int]] = []
    barrier = threading.Barrier(8)

    def produce(p: int) -> None:
        with app.app_context():
            barrier.wait(TIMEOUT)
            for i in range(500):
                mq.enqueue(ran.append, (p, i))

    with app.app_context():
        mq.enqueue(gate)
        gate.wait_entered()
        producers = [threading.Thread(target=produce, args=(p,)) for p in range(8)]
        for t in producers:
            t.start()
        for t in producers:
            t.join(TIMEOUT)
        gate.release()
        assert mq.join(TIMEOUT)
    assert len(ran) == 4000
    for p in range(8):
        assert [i for q, i in ran if q == p] == list(range(500))


# -- isolation and concurrency -------------------------------------------------------------------
def test_a_blocked_queue_does_not_block_another(make_app: MakeApp, mq: MemQueue, gate: Gate) -> None:
    app = make_app(MEMQUEUE_QUEUES={"reports": 1})
    with app.app_context():
        blocker = mq.options(queue="reports").enqueue(gate)
        gate.wait_entered()
        behind = mq.options(queue="reports").enqueue(lambda: "behind")
        flood = [mq.enqueue(lambda i=i: i) for i in range(200)]
        assert [job.wait(TIMEOUT) for job in flood] == list(range(200))  # ran while reports is blocked
        assert behind.status == "queued" and blocker.status == "running"
        assert mq.join(TIMEOUT, queue="default")
        assert not mq.join(0.01, queue="reports")
        gate.release()
        assert behind.wait(TIMEOUT) == "behind"
        assert mq.join(TIMEOUT)


def test_four_threads_run_four_blocking_jobs_at_once_and_never_more(make_app: MakeApp, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_QUEUES={"io": 4})
    barrier = threading.Barrier(4)  # only passes when 4 jobs run at the same time
    release = threading.Event()
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def blocking() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            barrier.wait(TIMEOUT)
            assert release.wait(TIMEOUT)
        finally:
            with lock:
                running[0] -= 1

    with app.app_context():
        first = [mq.options(queue="io").enqueue(blocking) for _ in range(4)]
        more = [mq.options(queue="io").enqueue(blocking) for _ in range(8)]
        wait_until(lambda: all(j.status == "running" for j in first))
        assert all(j.status == "queued" for j in more)  # four threads: the fifth waits
        assert pools(app)["io"] == 4
        release.set()
        for job in first + more:
            job.wait(TIMEOUT)
        assert all(j.status == "succeeded" for j in first + more), [j.error for j in first + more]
    assert peak[0] == 4


def test_many_producers_over_three_pooled_queues_run_each_job_once(make_app: MakeApp, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_QUEUES={"a": 2, "b": 3, "c": 4}, MEMQUEUE_MAXSIZE=0)
    counts: dict[tuple[int, int], int] = {}
    lock = threading.Lock()
    names = ["a", "b", "c"]

    def job(key: tuple[int, int]) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + 1

    def produce(p: int) -> None:
        with app.app_context():
            for i in range(5000):
                mq.options(queue=names[(p + i) % 3]).enqueue(job, (p, i))

    with app.app_context():
        producers = [threading.Thread(target=produce, args=(p,)) for p in range(8)]
        for t in producers:
            t.start()
        for t in producers:
            t.join(60)
        assert mq.join(60)
        assert pools(app) == {"default": 1, "a": 2, "b": 3, "c": 4}
    assert len(counts) == 40_000 and set(counts.values()) == {1}


# -- the guard, generalised ----------------------------------------------------------------------
def test_a_pool_thread_killed_by_system_exit_is_replaced_and_nothing_is_lost(
    make_app: MakeApp, mq: MemQueue
) -> None:
    app = make_app(MEMQUEUE_QUEUES={"work": 3})
    queue: AppQueue = app.extensions["memqueue"]

    def die() -> None:
        raise SystemExit("a job that ends its thread")

    with app.app_context():
        warm = [mq.options(queue="work").enqueue(lambda: 0) for _ in range(3)]
        for job in warm:
            job.wait(TIMEOUT)
        before = set(queue.consumer_idents["work"])
        assert len(before) == 3
        starts = queue.starts
        victim = mq.options(queue="work").enqueue(die)
        after = [mq.options(queue="work").enqueue(lambda i=i: i) for i in range(50)]
        assert [job.wait(TIMEOUT) for job in after] == list(range(50))  # the other threads went on
        wait_until(lambda: victim.finished)
        assert victim.status == "failed" and "SystemExit" in (victim.error or "")
        wait_until(lambda: len(queue.consumer_idents["work"]) == 3 and queue.starts == starts + 1)
        assert len(set(queue.consumer_idents["work"]) - before) == 1  # exactly one new thread
        assert len([t for t in consumer_threads() if ":work#" in t.name]) == 3


def test_a_pool_loop_whose_ident_is_no_longer_recorded_exits(make_app: MakeApp, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_QUEUES={"work": 2})
    queue: AppQueue = app.extensions["memqueue"]
    with app.app_context():
        mq.options(queue="work").enqueue(lambda: 0).wait(TIMEOUT)
        place = queue.pools.by_queue["work"][1]
        thread = place.thread
        assert thread is not None and thread.is_alive()
        with queue.lock:
            place.ident = -1  # as if another thread were now the legitimate one
        queue.storage.wake()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        other = queue.pools.by_queue["work"][0].thread
        assert other is not None and other.is_alive()  # its sibling was not disturbed


def test_concurrent_first_requests_start_each_pool_once(make_app: MakeApp) -> None:
    app = make_app(MEMQUEUE_QUEUES={"default": 2, "emails": 3})
    client_barrier = threading.Barrier(8)
    codes: list[int] = []

    def hit() -> None:
        client_barrier.wait(TIMEOUT)
        codes.append(app.test_client().get("/ping").status_code)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert codes == [200] * 8
    assert pools(app) == {"default": 2, "emails": 3}
    assert app.extensions["memqueue"].starts == 5
    assert len([t for t in consumer_threads() if t.name.startswith(CONSUMER_PREFIX)]) == 5


def test_a_job_may_wait_for_another_queue_but_not_its_own(make_app: MakeApp, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_QUEUES={"child": 1})

    @mq.task(queue="child")
    def child() -> int:
        return 2

    @mq.task
    def parent() -> int:
        return child.delay().wait(TIMEOUT) * 2

    @mq.task(queue="child")
    def selfish() -> None:
        child.delay().wait(TIMEOUT)

    with app.app_context():
        assert parent.delay().wait(TIMEOUT) == 4
        bad = selfish.delay()
        wait_until(lambda: bad.finished)
        assert bad.status == "failed" and "could wait for itself" in (bad.error or "")


def test_shutdown_drains_every_queue(make_app: MakeApp, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_QUEUES={"a": 2, "b": 1})
    ran: list[str] = []
    with app.app_context():
        for name in ("a", "b", "default"):
            for i in range(20):
                mq.options(queue=name).enqueue(ran.append, f"{name}{i}")
        assert mq.shutdown(wait=True, timeout=TIMEOUT)
    assert sorted(ran) == sorted(f"{n}{i}" for n in ("a", "b", "default") for i in range(20))
    assert consumer_threads() == []


# -- what the routes show --------------------------------------------------------------------------
def test_stats_threads_and_jobs_show_the_queues(make_app: MakeApp, mq: MemQueue, gate: Gate) -> None:
    app = make_app(MEMQUEUE_QUEUES={"emails": 2, "reports": 0})
    client = app.test_client()
    with app.app_context():
        mq.options(queue="emails").enqueue(gate)
        gate.wait_entered()
        waiting = mq.options(queue="reports", priority=3).enqueue(lambda: None)
        stats = client.get("/memqueue/stats").get_json()
        assert stats["queues"]["emails"] == {"threads": 2, "alive": 2, "declared": True, "depth": 0, "paused": False,
                                             "queued": 0, "scheduled": 0, "running": 1,
                                             "consumed_by": "this process"}
        assert stats["queues"]["reports"]["threads"] == 0 and stats["queues"]["reports"]["queued"] == 1
        assert stats["queues"]["reports"]["consumed_by"] == "nobody"  # a memory store: no other process
        assert stats["queues"]["default"]["threads"] == 1
        threads = client.get("/memqueue/threads").get_json()
        mine = sorted((t["queue"], t["name"]) for t in threads["threads"] if t["is_consumer"])
        assert [q for q, _ in mine] == ["default", "emails", "emails"]
        listed = client.get("/memqueue/jobs?queue=reports").get_json()
        assert [j["id"] for j in listed["jobs"]] == [waiting.id] and listed["total"] == 1
        assert listed["jobs"][0]["priority"] == 3 and listed["queue"] == "reports"
        assert client.get("/memqueue/jobs?queue=emails&status=running").get_json()["total"] == 1
        bad = client.get("/memqueue/jobs?queue=no%20such")
        assert bad.status_code == 400 and "queue name" in bad.get_json()["error"]
        gate.release()
        assert mq.join(TIMEOUT, queue="emails")
        assert waiting.cancel()


def test_with_a_shared_store_a_queue_only_a_worker_declares_is_accepted(
    make_app: MakeApp, mq: MemQueue, tmp_path: Any
) -> None:
    """A worker's --queues are recorded in the store; a web process may then enqueue to them."""
    @mq.task
    def length(text: str) -> int:
        return len(text)

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    web = make_app("split_app", MEMQUEUE_STORAGE=url, MEMQUEUE_QUEUES={"default": 0})
    with web.app_context(), pytest.raises(UnknownQueueError, match="--queues adhoc"):
        mq.options(queue="adhoc").enqueue(length, "x")
    worker = make_app("split_app", MEMQUEUE_STORAGE=url, MEMQUEUE_CONSUMER=False)
    worker_queue: AppQueue = worker.extensions["memqueue"]
    worker_queue.become_worker({"adhoc": 1})
    with worker.app_context():
        assert worker_queue.ensure_consumer()
    web_queue: AppQueue = web.extensions["memqueue"]
    web_queue.producer._known_until = 0.0  # the web process asks the store again at most once a second
    with web.app_context():
        job = mq.options(queue="adhoc").enqueue(length, "xyz")
        assert job.wait(TIMEOUT) == 3
    assert worker_queue.shutdown(wait=True, timeout=TIMEOUT)
    assert "adhoc" not in web_queue.storage.known_queues()  # a worker that stopped forgets its queues


def test_shutdown_runs_what_it_can_when_one_queue_has_no_threads_here(make_app: MakeApp, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_QUEUES={"parked": 0})
    ran: list[int] = []
    with app.app_context():
        parked = mq.options(queue="parked").enqueue(ran.append, -1)
        runnable = [mq.enqueue(ran.append, i) for i in range(20)]
        assert mq.shutdown(wait=True, timeout=TIMEOUT) is False  # the parked job could not run here
    assert sorted(ran) == list(range(20)) and all(j.status == "succeeded" for j in runnable)
    assert parked.status == "cancelled"
