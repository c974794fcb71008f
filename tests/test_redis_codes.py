"""The Redis store's compact job text: task names as codes, enqueued_at as a stamp.

A job's body holds its task's code (``#1``, ``#2``...: ``P:tn`` / ``P:tc`` in
``lua/prelude.lua``) in place of the name, and its enqueue time in 8 characters
(``records.stamp``). Every text a script hands to Python has the name back,
expanded by the script that reads it, so a code never reads as another task's
name, not even after a ``FLUSHALL`` under a running worker.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from support.factory import new_job
from support.harness import Env
from support.servers.redis import RedisServer, stored_jobs
from support.waiting import wait_until

from flask_memqueue import MemQueue
from flask_memqueue.jobfilter import JobFilter
from flask_memqueue.state import AppQueue
from flask_memqueue.storage.redis.records import parse, stamp, unstamp

PREFIX = "memqueue:{redisapp}"
ODD = ("#1", '"quoted', "two\nlines", '#x"\ny', "plain.task")


@pytest.fixture
def make(make_app: Callable[..., Flask], redis_server: RedisServer) -> Callable[..., AppQueue]:
    def build(name: str = "redisapp", **config: Any) -> AppQueue:
        config.setdefault("MEMQUEUE_CONSUMER", False)
        app = make_app(name, MEMQUEUE_STORAGE=redis_server.url(), MEMQUEUE_MAXSIZE=0, **config)
        return app.extensions["memqueue"]  # type: ignore[no-any-return]

    return build


@pytest.fixture
def odd_tasks(mq: MemQueue) -> None:
    """Tasks whose names look like codes, JSON strings or hold a newline."""
    for name in ODD:
        mq.task(name=name)(lambda value=None, _name=name: (_name, value))


def raw_texts(client: Any) -> dict[str, str]:
    return client.hgetall(f"{PREFIX}:j")  # type: ignore[no-any-return]


def test_odd_task_names_are_stored_as_codes_and_read_back_whole(
    make: Callable[..., AppQueue], odd_tasks: None, redis_server: RedisServer
) -> None:
    """'#1' (a literal name that looks like a code), a name starting with '"', names with a
    newline: each is stored as a code of its own and every reading path gives the name back:
    get, a claim, a listing, a filter by task name, the running jobs of an owner."""
    producer, queue = make(), make()  # (the same prefix: the second reads what Redis holds)
    jobs = {name: new_job(producer, name, i) for i, name in enumerate(ODD)}
    for job in jobs.values():
        producer.storage.put(job)
    with redis_server.client() as c:
        texts = raw_texts(c)
        codes = c.hgetall(f"{PREFIX}:tc")
    assert len(codes) == len(ODD)  # one code per name, the literal '#1' included
    for job in jobs.values():
        task_line = texts[job.id].split("\n")[2]
        assert task_line in codes, (job.task, task_line)  # a code, not the name
    for name, job in jobs.items():
        got = queue.storage.get(job.id)
        assert got is not None and got is not job and got.task.name == name
    listed = {j.id: j.task.name for j in queue.storage.jobs(limit=100)}
    assert listed == {job.id: name for name, job in jobs.items()}
    for name, job in jobs.items():
        assert [j.id for j in queue.find_jobs(JobFilter(task=name))] == [job.id]
    taken = queue.storage.take(0)
    assert taken is not None and taken.id == jobs["#1"].id and taken.task.name == "#1"
    running = queue.storage._running_of(queue.storage.owner)  # type: ignore[attr-defined]
    assert [(r.id, r.task) for r in running] == [(taken.id, "#1")]


def test_a_text_written_before_codes_and_stamps_still_reads(
    make: Callable[..., AppQueue], odd_tasks: None, redis_server: RedisServer
) -> None:
    """A text as the release before wrote it (the name in full, enqueued_at as repr) is read,
    listed and claimed as it was."""
    producer, queue = make(), make()
    job = new_job(producer, "plain.task", "old")
    producer.storage.put(job)
    with redis_server.client() as c:
        state, _, _, args = raw_texts(c)[job.id].split("\n")
        c.hset(f"{PREFIX}:j", job.id, f"{state}\n{job.enqueued_at!r}\nplain.task\n{args}")
    got = queue.storage.get(job.id)
    assert got is not None and got.task.name == "plain.task" and got.enqueued_at == job.enqueued_at
    assert [j.task.name for j in queue.storage.jobs(limit=10)] == ["plain.task"]
    taken = queue.storage.take(0)
    assert taken is not None and taken.id == job.id and taken.args == ("old",)
    assert parse(job.id, f"1\n{job.enqueued_at!r}\n\"two\\nlines\"\n[]").task == "two\nlines"


@pytest.mark.parametrize("t", [
    time.time(), 2.0**30, math.nextafter(2.0**31, 0.0), 2.0**31, 0.0, 1000.5, -3.25, 1e300, 5e-324, 12345678.0,
])
def test_a_stamp_is_exact_and_short(t: float) -> None:
    text = stamp(t)
    assert unstamp(text) == t and "\n" not in text
    if 2.0**30 <= t < 2.0**31:  # 2004 to 2038
        assert len(text) == 8 and "." not in text
    else:
        assert text == repr(t)


def test_enqueued_at_is_the_producers_float_exactly(make: Callable[..., AppQueue], odd_tasks: None) -> None:
    producer, queue = make(), make()
    for t in (time.time(), 1700000000.1234567, 999.875):
        job = new_job(producer, "plain.task", 1)
        job.enqueued_at = t
        producer.storage.put(job)
        got = queue.storage.get(job.id)
        assert got is not None and got is not job and got.enqueued_at == t


def test_a_queued_jobs_text_fits_jemallocs_128_byte_block(
    make: Callable[..., AppQueue], redis_server: RedisServer, mq: MemQueue
) -> None:
    """The peers harness' D job (a 100-character argument, a 14-character task name,
    insertion number of 6 digits) is at most 124 bytes of text: with the string's 4 bytes
    of header that is jemalloc's 128-byte block, where the full name and a float's repr
    (144 bytes) took a 160-byte one. (docs/performance.md, "Redis D")."""
    mq.task(name="bench.job_noop")(lambda value: None)
    queue = make()
    with redis_server.client() as c:
        c.set(f"{PREFIX}:seq", 199_999)
        job = new_job(queue, "bench.job_noop", "1".ljust(100, "x"))
        queue.storage.put(job)
        text = raw_texts(c)[job.id]
    assert text.split("\n")[0] == "200000"
    assert len(text.encode()) <= 124, (len(text.encode()), text)


@pytest.mark.processes
@pytest.mark.servers
def test_flushall_under_a_running_worker_never_runs_one_task_for_another(
    make_env: Callable[..., Env], redis_server: RedisServer
) -> None:
    """A worker runs jobs of two tasks (codes #1 and #2 in that order); FLUSHALL empties the
    server under it, and jobs of the same two tasks are enqueued in the other order, so
    each task's new code is the other's old one. Each job still runs its own function:
    the worker keeps no code, every claim expands them where they are."""
    env = make_env("redis_app", fields=(int, int, float), worker_env={"RT_CONSUMER": "0"},
                   RT_URL=redis_server.url())
    worker = env.worker("worker")

    def enqueue(name: str, first: str, second: str, n: int) -> None:
        code = ("import redis_app as r\napp = r.create_app()\nwith app.app_context():\n"
                f"    r.mq.enqueue(r.{first}, {n})\n    r.mq.enqueue(r.{second}, {n})\n")
        proc = env.python(name, code, RT_CONSUMER="0")
        assert proc.wait(60) == 0, env.output(name)

    def ran(n: int) -> bool:
        return any(x[0] == n for x in env.lines("run")) and any(x[0] == n for x in env.lines("member"))

    enqueue("first", "record", "member", 1)
    wait_until(lambda: ran(1), 60, "the first two jobs to run")
    with redis_server.client() as c:
        assert c.hgetall("memqueue:{redis_app}:tc") == {"#1": "record", "#2": "member"}
        c.flushall()
    enqueue("second", "member", "record", 2)
    wait_until(lambda: ran(2), 60, "the two jobs enqueued after FLUSHALL to run")
    with redis_server.client() as c:
        assert c.hgetall("memqueue:{redis_app}:tc") == {"#1": "member", "#2": "record"}
        jobs = stored_jobs(c, "memqueue:{redis_app}")
    assert sorted((j.task, json.loads(j.args)[0], j.status) for j in jobs) == [
        ("member", 2, "succeeded"), ("record", 2, "succeeded")]
    assert sorted(n for n, _, _ in env.lines("run")) == [1, 2]
    assert sorted(n for n, _, _ in env.lines("member")) == [1, 2]
    env.stop(worker, "worker")
