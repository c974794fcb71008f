"""Periodic tasks with real processes and real signals: exactly one run per tick.

Each test copies ``tests/apps/periodic_app.py`` into a temporary directory and
runs it from there: gunicorn with 3 workers (memory store, one process holds
the schedule through the host lock), ``flask run --debug`` (the reloader),
three processes sharing a SQLite journal, and a restart after every process
was down (one catch-up run). The periodic job writes the tick it was queued
for to ``ticks.log`` (one ``O_APPEND`` write per line), the ground truth of
which tick ran how often and where. Intervals are 1 s; every wait polls with a
deadline; no assertion is about how long something took.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest
from support.backends import backend_params
from support.harness import RELOADER_EXCLUDE, Env, edit_source
from support.net import http
from support.processes import Server
from support.waiting import wait_until

DEADLINE = 30.0

pytestmark = [
    pytest.mark.processes,
    pytest.mark.slow,  # ticks are 1 s apart: every test here waits for several
    pytest.mark.skipif(not Path("/proc/self/stat").exists() or not hasattr(os, "fork"),
                       reason="real processes, flock and /proc (Linux)"),
]


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env("periodic_app", fields=(float, int), log="ticks.log")


def tick_lines(env: Env) -> list[tuple[Any, ...]]:
    """``(tick, pid)`` of every run of the periodic job."""
    return env.lines("tick")


def wait_ticks(env: Env, count: int, since: int = 0, describe: Any = "") -> list[tuple[float, int]]:
    """Wait until ``count`` tick lines were written after the first ``since`` ones; all the lines."""
    return wait_until(lambda: t if len(t := tick_lines(env)) >= since + count else None, DEADLINE,
                      lambda: f"{count} ticks after the first {since} (have {len(tick_lines(env))}): "
                              f"{describe() if callable(describe) else describe}")


def assert_once_each_and_consecutive(ticks: list[float]) -> None:
    """No tick ran twice, and from the first to the last none is missing."""
    counts = Counter(ticks)
    assert [t for t, n in counts.items() if n > 1] == [], f"ticks that ran twice: {ticks}"
    ordered = sorted(counts)
    assert [round(b - a) for a, b in zip(ordered, ordered[1:], strict=False)] == [1] * (len(ordered) - 1), ordered


def assert_no_gap_but_one(ticks: list[float]) -> None:
    """As :func:`assert_once_each_and_consecutive`, but one tick may be missing between two runs:
    a holder killed after it recorded a tick and before it ran the tick's job loses that one
    (at most once, never twice: memory mode's promise)."""
    counts = Counter(ticks)
    assert [t for t, n in counts.items() if n > 1] == [], f"ticks that ran twice: {ticks}"
    ordered = sorted(counts)
    steps = [round(b - a) for a, b in zip(ordered, ordered[1:], strict=False)]
    assert all(step in (1, 2) for step in steps) and steps.count(2) <= 1, ordered


# -- gunicorn, memory store ----------------------------------------------------------------------
def test_gunicorn_three_workers_one_run_per_tick_and_a_killed_holder_is_replaced(env: Env) -> None:
    with env.gunicorn(app="periodic_app:create_app()", workers=3, env={"PT_AUTOSTART": "1"},
                      ready_path="/pid") as server:
        wait_until(lambda: len([p for p in server.processes() if p != server.pid]) == 3, DEADLINE,
                   lambda: f"3 workers: {server.describe()}")
        before = wait_ticks(env, 5, describe=server.describe)
        holders = {pid for _, pid in before}
        assert len(holders) == 1, f"several processes ran the schedule: {before}"
        (holder,) = holders
        assert holder != server.pid and holder in server.processes()
        info = http("GET", server.url + "/memqueue/periodic").json()  # whichever worker answers knows the holder
        assert info["mode"] == "host lock" and info["scheduler"]["holder_pid"] == holder
        os.kill(holder, signal.SIGKILL)
        wait_until(lambda: holder not in server.processes(), DEADLINE, "the holder to die")
        seen = len(tick_lines(env))
        after = wait_ticks(env, 4, since=seen, describe=server.describe)
    ticks = [t for t, _ in after]
    by_holder = [t for t, pid in after if pid == holder]
    successors = {pid for t, pid in after if pid != holder}
    assert len(successors) == 1 and holder not in successors, after
    first_after = min(t for t, pid in after if pid != holder)
    assert first_after - max(by_holder) in (1, 2), "another process took over within a tick"
    assert_no_gap_but_one(ticks)
    assert_once_each_and_consecutive([t for t, pid in after if pid != holder])


# -- the reloader, memory store ----------------------------------------------------------------
def serving_pid(server: Server) -> int | None:
    try:
        r = http("GET", server.url + "/pid", timeout=5)
    except (OSError, HTTPException):  # the old child went away mid-request
        return None
    return int(r.json()["pid"]) if r.status == 200 else None


def test_flask_run_debug_runs_the_schedule_in_the_serving_child_once_per_tick(env: Env) -> None:
    with env.flask_run(args=["--exclude-patterns", RELOADER_EXCLUDE], env={"PT_AUTOSTART": "1"}) as server:
        first = serving_pid(server)
        assert first is not None and first != server.pid
        wait_ticks(env, 3, describe=server.describe)
        edit_source(env.src / "periodic_app.py")
        second = wait_until(lambda: p if (p := serving_pid(server)) not in (None, first) else None, DEADLINE,
                            lambda: f"the reload: {server.describe()}")
        seen = len([1 for _, pid in tick_lines(env) if pid == second])
        wait_until(lambda: len([1 for _, pid in tick_lines(env) if pid == second]) >= seen + 3, DEADLINE,
                   lambda: f"3 ticks in the new child: {server.describe()}")
        watcher = server.pid
    ticks = tick_lines(env)
    pids = {pid for _, pid in ticks}
    assert watcher not in pids, "the reloader's watcher ran the schedule"
    assert pids == {first, second}
    assert_once_each_and_consecutive([t for t, pid in ticks if pid == second])
    assert_no_gap_but_one([t for t, _ in ticks])


def store_url(store: str, env: Env) -> str:
    """``MEMQUEUE_STORAGE`` for a store kind: a journal in the test's folder, or the session's
    redis-server, emptied (without redis-server the test skips; under CI it fails)."""
    if store == "memory":
        return "memory://"
    if store == "sqlite":
        return f"sqlite:///{env.dir / 'jobs.db'}"
    if store == "postgres":
        from support.servers.postgres import fresh_schema, shared_postgres

        return str(shared_postgres().url(schema=fresh_schema()))
    from support.servers.redis import shared_redis

    server = shared_redis()
    server.flush()
    return server.url()


# -- three processes on one shared store ------------------------------------------------------------
def _jobs_per_tick(store: str, url: str, journal: Path) -> list[tuple[float, int, int]]:
    """``(tick, jobs, most attempts)`` per tick, read from the store itself."""
    if store == "sqlite":
        conn = sqlite3.connect(journal, timeout=10)
        try:
            rows = conn.execute("SELECT tick, count(*), max(attempts) FROM memqueue_jobs WHERE tick IS NOT NULL"
                                " GROUP BY tick ORDER BY tick").fetchall()
        finally:
            conn.close()
        return [(float(t), int(n), int(a)) for t, n, a in rows]
    if store == "postgres":
        import psycopg

        schema = url.rpartition("schema=")[2]
        with psycopg.connect(url.partition("?")[0]) as pg:
            rows = pg.execute(f"SELECT tick, count(*), max(attempts) FROM {schema}.memqueue_jobs"
                              " WHERE tick IS NOT NULL GROUP BY tick ORDER BY tick").fetchall()
        return [(float(t), int(n), int(a)) for t, n, a in rows]
    import redis
    from support.servers.redis import stored_jobs

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        found: dict[float, list[int]] = {}
        for record in stored_jobs(client, "memqueue:{periodic_app}"):
            if record.tick is not None:
                found.setdefault(record.tick, []).append(record.attempts)
    finally:
        client.close()
    return [(t, len(a), max(a)) for t, a in sorted(found.items())]


@pytest.mark.parametrize("store", backend_params(["sqlite", "redis", "postgres"]))
def test_three_processes_on_a_shared_store_one_job_per_tick_one_killed_midway(env: Env, store: str) -> None:
    """Two app processes and a ``flask memqueue worker`` (which runs the schedule too) on one
    journal or one Redis; the worker is SIGKILLed mid-way."""
    journal = env.dir / "jobs.db"
    url = store_url(store, env)
    stores = {"PT_STORAGE": url}
    procs = [env.main("p0", **stores), env.worker("p1", wait=False, **stores), env.main("p2", **stores)]
    wait_until(lambda: len(env.lines("started")) == 2 and f"memqueue worker {procs[1].pid}: running"
               in env.output("p1"), DEADLINE,
               lambda: "3 processes to start: " + " | ".join(env.output(f"p{i}") for i in range(3)))
    wait_ticks(env, 4, describe=lambda: env.output("p0"))
    victim = procs[1]
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(DEADLINE) == -signal.SIGKILL
    seen = len(tick_lines(env))
    wait_ticks(env, 4, since=seen, describe=lambda: env.output("p0"))
    for i in (0, 2):
        procs[i].send_signal(signal.SIGTERM)
        assert procs[i].wait(DEADLINE) == 0, env.output(f"p{i}")
    per_tick = _jobs_per_tick(store, url, journal)
    assert all(n == 1 for _, n, _ in per_tick), f"a tick got two jobs: {per_tick}"
    jobs = [tick for tick, _, _ in per_tick]
    assert [round(b - a) for a, b in zip(jobs, jobs[1:], strict=False)] == [1] * (len(jobs) - 1), jobs
    runs = Counter(t for t, _ in tick_lines(env))
    assert set(runs) <= set(jobs)
    # Every job ran, but on Redis one the killed worker held waits for its lease (30 s) to lapse
    # (on PostgreSQL it is taken over once the server has closed the killed worker's session):
    # only such a job may be missing from the runs, and a job runs twice only if its process died
    # while running it (at-least-once), counted as a second attempt.
    assert len(set(jobs) - set(runs)) <= (1 if store in ("redis", "postgres") else 0)
    interrupted = {tick for tick, _, attempts in per_tick if attempts > 1}
    assert {t for t, n in runs.items() if n > 1} <= interrupted


# -- catch-up after every process was down ---------------------------------------------------------
@pytest.mark.parametrize("store", backend_params(["memory", "sqlite", "redis", "postgres"]))
def test_a_restart_after_missed_ticks_runs_one_catch_up_not_a_burst(env: Env, store: str) -> None:
    extra = {"PT_STORAGE": store_url(store, env)}
    first = env.main("first", **extra)
    wait_ticks(env, 3, describe=lambda: env.output("first"))
    first.send_signal(signal.SIGTERM)
    assert first.wait(DEADLINE) == 0, env.output("first")
    last_before = max(t for t, _ in tick_lines(env))
    # Everything is down over several ticks (a condition on the clock, not an assertion about time).
    wait_until(lambda: time.time() >= last_before + 4.5, DEADLINE, "4 ticks to pass")
    seen = len(tick_lines(env))
    second = env.main("second", **extra)
    wait_until(lambda: any(pid == second.pid for _, pid in env.lines("started")), DEADLINE,
               lambda: env.output("second"))
    wait_ticks(env, 3, since=seen, describe=lambda: env.output("second"))
    second.send_signal(signal.SIGTERM)
    assert second.wait(DEADLINE) == 0, env.output("second")
    (started,) = [t for t, pid in env.lines("started") if pid == second.pid]
    after = sorted(t for t, pid in tick_lines(env) if pid == second.pid)
    missed = [t for t in after if t < started]
    assert missed == [float(int(started))], f"one catch-up run, for the latest missed tick: {after}"
    assert missed[0] - last_before >= 4, "ticks were missed (the test's premise)"
    assert_once_each_and_consecutive(after)
    assert_once_each_and_consecutive([t for t, _ in tick_lines(env) if t <= last_before])
