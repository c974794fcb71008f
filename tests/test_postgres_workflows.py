"""Workflows on PostgreSQL with a real server: what the trigger of
``storage/postgres/workflow_sql.py`` promises beyond the storage contract.

- a chord's callback is released exactly once when its members finish at the same
  instant on several stores (each its own pool of connections: processes);
- a take-over that fails a parent for good cancels its dependents (the trigger fires
  on every statement that records an outcome);
- a released job is announced by NOTIFY (an idle worker elsewhere takes it at once),
  a cancelled one to whoever waits on it;
- a failure cancels a chain of 1,000 links in the one statement of its outcome;
- retention forgets a finished workflow's links, counters and group rows, by key;
- ``flask memqueue db sql`` prints the workflow DDL.

The chord of 2,000 members with a worker SIGKILLed is in test_postgres_processes.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from support.servers.postgres import PostgresServer, fresh_schema
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import MemQueue
from flask_memqueue.cli import memqueue_cli
from flask_memqueue.state import AppQueue

pytestmark = pytest.mark.servers


@pytest.fixture
def schema() -> str:
    return fresh_schema()


@pytest.fixture
def make(make_app: Callable[..., Flask], postgres: PostgresServer, schema: str) -> Callable[..., AppQueue]:
    """``make()``: one more "process" on the test's schema (the same app name, its own pool)."""
    url = str(postgres.url(schema=schema))

    def build(**config: Any) -> AppQueue:
        app = make_app("pgwf", **{"MEMQUEUE_STORAGE": url, "MEMQUEUE_CONSUMER": False, **config})
        return app.extensions["memqueue"]  # type: ignore[no-any-return]

    return build


@pytest.fixture
def tasks(mq: MemQueue) -> dict[str, Any]:
    @mq.task(name="pgwf.value")
    def value(x: int) -> int:
        return x

    @mq.task(name="pgwf.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @mq.task(name="pgwf.boom")
    def boom() -> None:
        raise ValueError("boom")

    return {"value": value, "total": total, "boom": boom}


def run_here(queue: AppQueue, job: Any) -> Any:
    """Run a claimed job as this "process"'s consumer does (its outcome recorded by the caller)."""
    queue.consumer.execute(job)
    return job


def test_members_finishing_at_once_on_four_stores_release_the_callback_once(
    make: Callable[..., AppQueue], mq: MemQueue, tasks: dict[str, Any], postgres: PostgresServer, schema: str
) -> None:
    stores = [make() for _ in range(4)]
    for round_ in range(3):
        with stores[0].app.app_context():
            callback = mq.chord(mq.group(*(tasks["value"].s(i) for i in range(24))), tasks["total"].s()).delay()
        claimed: list[tuple[AppQueue, Any]] = []
        for k in range(24):
            queue = stores[k % 4]
            job = queue.storage.take(0)
            assert job is not None
            claimed.append((queue, run_here(queue, job)))
        start = threading.Barrier(len(claimed))

        def finish(queue: AppQueue, job: Any, start: threading.Barrier = start) -> None:
            start.wait(TIMEOUT)
            queue.storage.finish(job)

        threads = [threading.Thread(target=finish, args=pair) for pair in claimed]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        released = [job for queue in stores if (job := queue.storage.take(0)) is not None]
        assert [job.id for job in released] == [callback.id], f"round {round_}"
        assert released[0].args == (list(range(24)),)
        stores[0].storage.finish(run_here(stores[0], released[0]))
    assert postgres.execute(f"SELECT count(*) FROM {schema}.memqueue_waits") == [(0,)]


def test_a_released_link_wakes_an_idle_worker_elsewhere_by_notify(
    make: Callable[..., AppQueue], mq: MemQueue, tasks: dict[str, Any]
) -> None:
    web, first, idle = make(), make(), make()
    storage: Any = idle.storage
    storage.idle_wait = 3600.0  # no poll: only the trigger's NOTIFY can wake it in time
    with web.app.app_context():
        last = mq.chain(tasks["value"].s(5), tasks["value"].si(6)).delay()
    parent = first.storage.take(0)
    assert parent is not None and last.status == "deferred"
    assert storage.take(0) is None
    wait_until(lambda: storage.session.listening.is_set())
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(storage.take(TIMEOUT)))
    thread.start()
    first.storage.finish(run_here(first, parent))
    thread.join(TIMEOUT)
    assert got and got[0] is not None and got[0].id == last.id
    idle.storage.finish(run_here(idle, got[0]))


def test_a_waiter_on_a_job_cancelled_by_its_parents_failure_is_woken_by_notify(
    make: Callable[..., AppQueue], mq: MemQueue, tasks: dict[str, Any]
) -> None:
    web, worker = make(), make()
    web.storage.waiter_poll_interval = 3600.0  # type: ignore[attr-defined]
    with web.app.app_context():
        last = mq.chain(tasks["boom"].s(), tasks["value"].s(), tasks["value"].s()).delay()
    event = web.storage.waiter(last)
    assert event is not None
    failing = worker.storage.take(0)
    assert failing is not None
    worker.storage.finish(run_here(worker, failing))
    assert event.wait(TIMEOUT)
    assert last.status == "cancelled" and last.error == f"dependency {failing.id} (pgwf.boom) failed: ValueError: boom"


def test_a_take_over_that_fails_the_parent_for_good_cancels_what_waits_on_it(
    make: Callable[..., AppQueue], mq: MemQueue, tasks: dict[str, Any]
) -> None:
    """The take-over statement (a dead worker's job, out of retries) fires the release trigger too."""
    web, dead, rescuer = make(), make(), make()
    with web.app.app_context():
        last = mq.chain(tasks["value"].s(1), tasks["value"].s()).delay()
    running = dead.storage.take(0)
    assert running is not None
    storage: Any = rescuer.storage
    (record,) = storage._running_of(dead.storage.owner)
    job = storage.codec.detached(record)
    job.interrupt(time.time())  # retries=0: failed for good, "interrupted"
    assert storage._take_over_one(record.id, dead.storage.owner, storage.codec.record_of(job))
    found = storage.get(last.id)
    assert found is not None and found.status == "cancelled"
    assert found.error == f"dependency {running.id} (pgwf.value) failed: interrupted"


def test_a_failure_cancels_a_chain_of_1000_links_in_its_outcomes_statement(
    make: Callable[..., AppQueue], mq: MemQueue, tasks: dict[str, Any], postgres: PostgresServer, schema: str
) -> None:
    queue = make()
    with queue.app.app_context():
        last = mq.chain(tasks["boom"].s(), *(tasks["value"].s() for _ in range(999))).delay()
    assert queue.storage.counts()["deferred"] == 999
    failing = queue.storage.take(0)
    assert failing is not None
    queue.storage.finish(run_here(queue, failing))
    counts = queue.storage.counts()
    assert counts["deferred"] == 0 and counts["cancelled"] == 999
    found = queue.storage.get(last.id)
    assert found is not None and found.error is not None and found.error.startswith(f"dependency {failing.id} ")


def test_retention_forgets_a_finished_workflows_rows_and_plain_jobs_never_touch_them(
    make: Callable[..., AppQueue], mq: MemQueue, tasks: dict[str, Any], postgres: PostgresServer, schema: str
) -> None:
    queue = make()
    with queue.app.app_context():
        plain = mq.enqueue(tasks["value"], 1)
        callback = mq.chord(mq.group(tasks["value"].s(1), tasks["value"].s(2)), tasks["total"].s()).delay()
    while (job := queue.storage.take(0)) is not None:
        queue.storage.finish(run_here(queue, job))
    assert queue.storage.get(callback.id).result == 3  # type: ignore[union-attr]
    flags = dict(postgres.execute(f"SELECT id, workflow FROM {schema}.memqueue_jobs"))
    assert flags.pop(plain.id) is False and all(flags.values()) and len(flags) == 3
    tables = ("memqueue_links", "memqueue_waits", "memqueue_groups")
    assert [postgres.execute(f"SELECT count(*) FROM {schema}.{t}")[0][0] for t in tables] == [2, 0, 2]
    assert queue.storage.purge_finished() == 4
    assert [postgres.execute(f"SELECT count(*) FROM {schema}.{t}")[0][0] for t in tables] == [0, 0, 0]


def test_db_sql_prints_the_workflow_tables_and_trigger(make: Callable[..., AppQueue]) -> None:
    queue = make(testing=False)
    result = queue.app.test_cli_runner().invoke(memqueue_cli, ["db", "sql"])
    assert result.exit_code == 0
    for words in ("-- version 5: workflows", "CREATE TABLE \"", ".memqueue_links (", ".memqueue_waits (",
                  ".memqueue_groups (", "FUNCTION", ".memqueue_release(", "CREATE TRIGGER memqueue_settled"):
        assert words in result.output, words
