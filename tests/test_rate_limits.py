"""Issue 24, rate and concurrency limits in one process: the decorator's checks, the keys a job
counts against, the memory store and the journal holding the limits with real consumer threads,
GET /memqueue/limits and /stats, and the clear refusal of a store that cannot check a limit.
The store's side is the contract (flask_memqueue/testing/storage.py); real processes are in
test_rate_limits_processes.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.backends import STORAGE_BACKENDS, backend_params
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import LimitError, MemQueue
from flask_memqueue.joblimits import parse_rate
from flask_memqueue.storage.limits import window_of

# -- the decorator ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"concurrency": 0}, "task 'bad': concurrency must be a whole number >= 1"),
    ({"concurrency": "2"}, "concurrency must be a whole number >= 1 .*not '2'"),
    ({"concurrency": True}, "not True"),
    ({"rate_limit": "10/d"}, r"task 'bad': rate_limit: a rate limit is written 'N/s', 'N/m' or 'N/h'.*not '10/d'"),
    ({"rate_limit": "0/s"}, "not '0/s'"),
    ({"rate_limit": 10}, "not 10"),
    ({"concurrency": 1, "concurrency_key": "nope"}, "concurrency_key='nope' names no argument of the function"),
    ({"concurrency_key": "customer"}, "concurrency_key='customer' needs concurrency= too"),
    ({"rate_limit_key": "customer"}, "rate_limit_key='customer' needs rate_limit= too"),
    ({"rate_limit": "5/s", "rate_limit_key": 3}, "rate_limit_key must be an argument's name or a callable"),
])
def test_the_decorator_refuses_a_limit_that_cannot_work(mq: MemQueue, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LimitError, match=message):
        @mq.task(name="bad", **kwargs)
        def bad(customer: str) -> None: ...
    assert "bad" not in mq.registry.tasks


def test_parse_rate() -> None:
    assert parse_rate("100/m", "x") == (100, 60.0)
    assert parse_rate(" 3 / H ", "x") == (3, 3600.0)
    assert parse_rate("20/s", "x") == (20, 1.0)


def test_a_job_carries_its_limit_and_the_key_it_counts_against(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    @mq.task(name="export", concurrency=2, concurrency_key="customer", rate_limit="100/m",
             rate_limit_key=lambda customer, **_: customer.split("-")[0])
    def export(customer: str, fmt: str = "csv") -> str:
        return f"{customer}.{fmt}"

    @mq.task(name="report", concurrency=1)
    def report() -> None: ...

    app = make_app(MEMQUEUE_EAGER=False, MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = export.delay("acme-7", fmt="pdf")
        o = job.options
        assert (o.concurrency, o.concurrency_key) == (2, "export:acme-7")
        assert (o.rate_limit, o.rate_period, o.rate_key) == (100, 60.0, "export:acme")
        by_call = export.s(customer="zeta-1").delay()
        assert by_call.options.concurrency_key == "export:zeta-1"
        plain = report.delay()
        assert (plain.options.concurrency, plain.options.concurrency_key) == (1, "report")
        assert plain.options is report.job_options  # a limit per task: no per-job work
        other = export.options(queue="default", priority=5).delay("b-2")
        assert other.options.concurrency_key == "export:b-2" and other.options.priority == 5
        many = mq.enqueue_many([export.s("c-1"), export.s("c-2")])
        assert [j.options.concurrency_key for j in many] == ["export:c-1", "export:c-2"]


def test_a_periodic_task_takes_limits(mq: MemQueue) -> None:
    @mq.periodic(every=3600, name="nightly", concurrency=1, rate_limit="1/h")
    def nightly() -> None: ...

    assert nightly.job_options.concurrency == 1 and nightly.job_options.rate_key == "nightly"


# -- the limits held, with real consumer threads ----------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_at_most_n_run_per_key_and_other_tasks_pass_the_waiting_ones(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, backend: str
) -> None:
    release = threading.Event()
    lock = threading.Lock()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    @mq.task(name="work", concurrency=2, concurrency_key="key")
    def work(key: str, i: int) -> None:
        with lock:
            running[key] = running.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), running[key])
        release.wait(TIMEOUT)
        with lock:
            running[key] -= 1

    @mq.task(name="plain")
    def plain() -> str:
        return "ran"

    app = make_app(MEMQUEUE_QUEUES={"default": 6}, **STORAGE_BACKENDS[backend](tmp_path))
    queue = app.extensions["memqueue"]
    with app.app_context():
        jobs = [work.delay(f"k{i % 2}", i) for i in range(10)]
        wait_until(lambda: sum(running.values()) == 4, message="2 jobs of each key running")
        behind = plain.delay()  # queued after 6 waiting limited jobs, and threads are free: it runs
        assert behind.wait(TIMEOUT) == "ran"
        waiting = [j for j in jobs if queue.storage.get(j.id).status.value == "queued"]
        assert len(waiting) == 6  # waiting on the limit keeps the status queued
        uses = {u["key"]: u for u in queue.limit_uses()}
        assert {k: (u["in_use"], u["waiting"], u["limit"]) for k, u in uses.items()} == {
            "work:k0": (2, 3, 2), "work:k1": (2, 3, 2)}
        release.set()
        for job in jobs:
            job.wait(TIMEOUT)
    assert peak == {"k0": 2, "k1": 2}


def test_a_rate_limit_starts_its_limit_per_window_and_the_rest_wait_queued(
    make_app: Callable[..., Flask], mq: MemQueue
) -> None:
    @mq.task(name="mail", rate_limit="3/h")
    def mail(i: int) -> int:
        return i

    app = make_app()
    queue = app.extensions["memqueue"]
    with app.app_context():
        hour = time.time() // 3600
        jobs = [mail.delay(i) for i in range(5)]
        for job in jobs[:3]:
            job.wait(TIMEOUT)
        if time.time() // 3600 != hour:
            pytest.skip("an hour's window began during the test")
        client = app.test_client()
        body = client.get("/memqueue/limits").get_json()
        (use,) = body["limits"]
        assert use == {"kind": "rate", "key": "mail", "task": "mail", "limit": 3, "in_use": 3, "waiting": 2,
                       "period": 3600.0, "window": hour * 3600}
        assert [queue.storage.get(j.id).status.value for j in jobs[3:]] == ["queued", "queued"]
        assert client.get("/memqueue/stats").get_json()["limits"] == body["limits"]
        assert jobs[3].cancel() and jobs[4].cancel()


def test_the_limits_route_needs_the_token(make_app: Callable[..., Flask]) -> None:
    app = make_app(testing=False, MEMQUEUE_TOKEN="limits-token-0123456789")
    client = app.test_client()
    response = client.get("/memqueue/limits")
    assert response.status_code == 401 and response.is_json
    ok = client.get("/memqueue/limits", headers={"Authorization": "Bearer limits-token-0123456789"})
    assert ok.status_code == 200 and ok.get_json() == {"limits": []}


# -- a store that cannot check limits ---------------------------------------------------------------


def test_a_store_without_the_capability_refuses_limited_tasks_clearly(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    @mq.task(name="capped", concurrency=1)
    def capped() -> None: ...

    with pytest.raises(LimitError, match=r"task\(s\) capped have a rate or concurrency limit, which the store"):
        make_app(**STORAGE_BACKENDS["dict"](tmp_path))
    mq2 = MemQueue()
    make_app("second", mq=mq2, **STORAGE_BACKENDS["dict"](tmp_path))
    with pytest.raises(LimitError, match="does not declare capabilities.limits"):
        @mq2.task(name="late", rate_limit="1/s")
        def late() -> None: ...
    assert "late" not in mq2.registry.tasks


def test_metrics_show_each_limit_in_use_and_waiting(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    pytest.importorskip("prometheus_client")
    release = threading.Event()

    @mq.task(name="held", concurrency=1, concurrency_key="who")
    def held(who: str) -> None:
        release.wait(TIMEOUT)

    app = make_app(MEMQUEUE_METRICS=True, MEMQUEUE_QUEUES={"default": 2})
    queue = app.extensions["memqueue"]
    try:
        with app.app_context():
            jobs = [held.delay("ann") for _ in range(3)]
            wait_until(lambda: any(u["in_use"] == 1 for u in queue.limit_uses()), message="the slot taken")
            text = app.test_client().get("/memqueue/metrics").get_data(as_text=True)
            assert 'memqueue_limit_in_use{key="held:ann",kind="concurrency"} 1.0' in text
            assert 'memqueue_limit_waiting{key="held:ann",kind="concurrency"} 2.0' in text
            release.set()
            for job in jobs:
                job.wait(TIMEOUT)
            text = app.test_client().get("/memqueue/metrics").get_data(as_text=True)
            assert "held:ann" not in text  # a limit no job uses is not shown
    finally:
        release.set()


@pytest.mark.parametrize("backend", backend_params(["memory", "sqlite", "postgres"]))
def test_a_start_read_on_an_older_clock_never_reopens_an_older_rate_window(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stores that count rate windows on the claiming process's clock (Redis uses the
    server's, in its script) once let a claim whose time was read a moment before a window
    began, by a process that then waited for the journal's lock or the database, reopen the
    older window with a count of 1: the newer window's count was lost and up to another full
    window of jobs started in it (a CI run saw 42 starts in one second at 20/s over three
    workers). A key's window now never moves back: that start counts in the newer window."""

    @mq.task(name="limited.rated", rate_limit="2/s")
    def rated(i: int) -> int:
        return i

    app = make_app(MEMQUEUE_CONSUMER=False, **STORAGE_BACKENDS[backend](tmp_path))
    storage = app.extensions["memqueue"].storage
    base = window_of(time.time(), 1.0) + 10  # a window boundary ahead of every enqueue time
    clock = {"now": 0.0}
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: clock["now"] or real_time())

    def enqueue_then_take_at(moment: float, i: int) -> tuple[str, str | None]:
        clock["now"] = 0.0  # enqueued now, so due at any of the moments below
        with app.app_context():
            queued = rated.delay(i)
        clock["now"] = moment
        job = storage.take(0)
        return queued.id, None if job is None else job.id

    first, taken = enqueue_then_take_at(base + 1.5, 0)  # window base+1: 1 of 2
    assert taken == first
    second, taken = enqueue_then_take_at(base + 0.9, 1)  # read a moment before base+1 began: 2 of 2 there
    assert taken == second
    third, taken = enqueue_then_take_at(base + 1.6, 2)
    assert taken is None, "a third start in window base+1 (it had been reset to 1 of 2 in window base)"
    clock["now"] = base + 2.1  # the next window
    job = storage.take(0)
    assert job is not None and job.id == third
