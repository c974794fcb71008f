"""The journal with real processes and real signals: kill -9, the reloader, gunicorn, a worker.

Each test copies ``tests/apps/journal_app.py`` into a temporary directory
and runs it from there. Jobs write what they do to ``runs.log`` with one
``O_APPEND`` write per line, so the log is the ground truth of which job ran
how often and in which process. Every wait is bounded (``wait_until`` with a
deadline, ``Popen.wait(timeout)``); jobs that must stay running wait for a
gate file the test creates, never for time to pass.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.harness import RELOADER_EXCLUDE, Env, Hold, edit_source, finished_job
from support.net import HOST, http
from support.processes import Server
from support.waiting import wait_until
from support.workflows import chain_with_one_worker_killed, chord_with_one_worker_killed

DEADLINE = 30.0

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="liveness reads /proc (Linux)"),
]


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    e = make_env("journal_app")
    e.env["JT_JOURNAL"] = str(e.journal)
    return e


def rows(env: Env, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of the app's journal, read with sqlite3 (what any other reader sees)."""
    conn = sqlite3.connect(env.journal, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_sigkill_midway_then_restart_runs_every_job(env: Env) -> None:
    """kill -9 with 2,000 journaled jobs half done; a new process runs the rest.

    Job 1000 holds (waits for a gate that never opens) in the first process,
    so the kill certainly lands while a job runs; the journal says which
    jobs were running at the kill, and only those may run twice.
    """
    first = env.main("first", "run", "2000", JT_HOLD="1", JT_HOLD_AT="1000")
    wait_until(lambda: env.has(f"enqueued 2000 {first.pid}") and env.has(f"holding 1000 {first.pid}"),
               DEADLINE, lambda: "the first process to hold job 1000: " + env.output("first"))
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(DEADLINE) == -signal.SIGKILL

    running = {int(args[1:-1].split(",")[0])
               for (args,) in rows(env, "SELECT args FROM memqueue_jobs WHERE status='running'")}
    assert running == {1000}
    ran_before = Counter(n for n, _ in env.lines("run"))
    assert 0 < len(ran_before) < 2000

    second = env.main("second", "drain")
    assert second.wait(60) == 0, env.output("second")

    runs = Counter(n for n, _ in env.lines("run"))
    assert set(runs) == set(range(2000)), "a job never ran"
    twice = {n for n, count in runs.items() if count > 1}
    assert twice <= running, f"jobs that were not running at the kill ran twice: {sorted(twice - running)}"
    assert max(runs.values()) <= 2
    # The interrupted job counted one attempt (retries=1 let it run again).
    assert rows(env, "SELECT status, attempts FROM memqueue_jobs WHERE args='[1000]'") == [("succeeded", 2)]
    assert rows(env, "SELECT count(*) FROM memqueue_jobs WHERE status != 'succeeded'") == [(0,)]


@pytest.mark.slow
def test_two_enqueuers_and_a_worker_lose_nothing_and_run_nothing_twice(env: Env) -> None:
    """Two enqueue-only processes (4 threads each) x 5,000 jobs, one `flask memqueue worker`.

    The worker shares the web processes' config (``MEMQUEUE_CONSUMER = False``): the command consumes anyway.
    """
    worker = env.worker("worker", JT_CONSUMER="0")
    producers = [
        env.main(f"producer{k}", "enqueue", "5000", JT_CONSUMER="0", JT_OFFSET=str(k * 5000), JT_THREADS="4")
        for k in range(2)
    ]
    for k, proc in enumerate(producers):
        assert proc.wait(120) == 0, env.output(f"producer{k}")
    wait_until(lambda: len(env.lines("run")) >= 10_000 or worker.poll() is not None, 120,
               lambda: f"10,000 runs (have {len(env.lines('run'))})")
    env.stop(worker, "worker")
    assert f"memqueue worker {worker.pid}: stopped" in env.output("worker")

    runs = env.lines("run")
    counts = Counter(n for n, _ in runs)
    assert set(counts) == set(range(10_000)), "lost jobs"
    assert [n for n, c in counts.items() if c > 1] == [], "jobs ran twice"
    assert {pid for _, pid in runs} == {worker.pid}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_stops_after_the_job_in_hand(env: Env, signum: signal.Signals) -> None:
    worker = env.worker("worker")
    enqueue = env.python("enqueue", (
        "import journal_app as j\n"
        "app = j.create_app()\n"
        "with app.app_context():\n"
        "    j.mq.enqueue(j.block, 0, 'gate')\n"
        "    j.mq.enqueue(j.record, 1)\n"
    ), JT_CONSUMER="0")
    assert enqueue.wait(DEADLINE) == 0, env.output("enqueue")
    wait_until(lambda: env.has(f"start 0 {worker.pid}"), DEADLINE, lambda: "job 0 to start: " + env.output("worker"))
    worker.send_signal(signum)
    env.open_gate("gate")
    assert worker.wait(DEADLINE) == 0, env.output("worker")
    assert env.has(f"done 0 {worker.pid}"), "the job in hand was not finished"
    assert env.lines("run") == [], "the worker took another job after SIGTERM"
    assert rows(env, "SELECT task, status FROM memqueue_jobs ORDER BY seq") == [("block", "succeeded"),
                                                                             ("record", "queued")]


# -- servers ------------------------------------------------------------------------------


def test_reload_under_flask_run_debug_runs_every_job_in_the_new_child(env: Env) -> None:
    with env.flask_run(args=["--exclude-patterns", RELOADER_EXCLUDE], ready_path="/pid") as server:
        old = http("GET", server.url + "/pid").json()["pid"]
        ids = [http("POST", server.url + "/enqueue", json={"task": "block", "args": [n, "gate"]}).json()["id"]
               for n in range(5)]
        wait_until(lambda: env.has(f"start 0 {old}"), DEADLINE, server.describe)

        edit_source(env.src / "journal_app.py")

        def new_child() -> int | None:
            try:
                pid: int = http("GET", server.url + "/pid", timeout=2).json()["pid"]
            except (OSError, ValueError):
                return None
            return pid if pid != old else None

        new = wait_until(new_child, DEADLINE, server.describe)  # this request starts its consumer
        env.open_gate("gate")

        def all_done() -> bool:
            return {n for n, pid in env.lines("done") if pid == new} == set(range(5))

        wait_until(all_done, DEADLINE, lambda: f"every job done in {new}: {env.log.read_text()}")
        assert [n for n, pid in env.lines("done") if pid != new] == [], "a job finished outside the new child"
        for job_id in ids:
            assert finished_job(server, job_id)["status"] == "succeeded"


def test_gunicorn_two_workers_share_one_journal(env: Env) -> None:
    """Every job is readable from either worker; a SIGKILLed worker's jobs run in a live one."""
    holds: list[Hold] = []
    with env.gunicorn(app="journal_app:create_app()", preload=True, ready_path="/pid") as server:
        try:
            # Worker A holds a request: everything below is answered by worker B.
            holds.append(Hold(server, env, "a"))
            a = holds[0].pid
            jobs = [http("POST", server.url + "/enqueue", json={"task": "block", "args": [n, "gate"]})
                    for n in range(6)]
            b = int(jobs[0].headers["X-Pid"])
            assert b != a and {int(r.headers["X-Pid"]) for r in jobs} == {b}
            ids = [r.json()["id"] for r in jobs]
            _all_readable(server, ids, b)
            # Now B holds and A is free: A answers for the same ids.
            holds.append(Hold(server, env, "b"))
            assert holds[1].pid == b
            holds[0].release()
            _all_readable(server, ids, a)
            holds[1].release()
            # B enqueued them and runs one (its consumer started with the first
            # enqueue); A may run another. Kill B while its job runs.
            wait_until(lambda: any(pid == b for _, pid in env.lines("start")), DEADLINE, server.describe)
            os.kill(b, signal.SIGKILL)
            env.open_gate("gate")

            def done() -> bool:
                return {n for n, _ in env.lines("done")} == set(range(6))

            wait_until(lambda: done() or _poke(server), DEADLINE, lambda: f"every job done: {env.log.read_text()}")
            wait_until(done, DEADLINE, lambda: f"every job done: {env.log.read_text()}")
            assert b not in {pid for _, pid in env.lines("done")}, "the killed worker finished a job"
            assert Counter(n for n, _ in env.lines("done")) == Counter(range(6)), "a job finished twice"
            for job_id in ids:
                assert finished_job(server, job_id)["status"] == "succeeded"
        finally:
            for hold in holds:
                hold.open()


def _all_readable(server: Server, ids: list[str], pid: int) -> None:
    for job_id in ids:
        r = http("GET", f"{server.url}/memqueue/jobs/{job_id}")
        assert r.status == 200, r.text
        assert int(r.headers["X-Pid"]) == pid
        assert r.json()["id"] == job_id


def _poke(server: Server) -> bool:
    """A request, so that the worker gunicorn started in place of the killed one runs a consumer too."""
    try:
        http("GET", server.url + "/pid", timeout=2)
    except OSError:
        pass
    return False


assert HOST == "127.0.0.1"


def test_a_web_process_and_a_worker_keep_queues_and_priorities(env: Env) -> None:
    """Issue 11 across processes: a web process that only enqueues (0 threads per queue),
    and ``flask memqueue worker --queues reports``: priority then FIFO, and only that queue."""
    queues = '{"default": 0, "reports": 0}'
    with env.flask_run("web", debug=False, env={"JT_QUEUES": queues}) as web:
        plan = [(0, 0), (1, 5), (2, -5), (3, 5), (4, 10), (5, 0)]
        for n, priority in plan:
            r = http("POST", web.url + "/enqueue", json={"task": "ordered", "args": [n], "priority": priority})
            assert r.status == 200, r.text
        r = http("POST", web.url + "/enqueue", json={"task": "record", "args": [99]})  # the default queue
        assert r.status == 200, r.text
        default_job = r.json()["id"]
        worker = env.worker("worker", "--queues", "reports", "--threads", "1", wait=False, JT_QUEUES=queues)
        wait_until(lambda: len(env.lines("ordered")) == len(plan) or worker.poll() is not None, DEADLINE,
                   lambda: "the reports jobs to run: " + env.output("worker"))
        assert "queues: reports (1 thread)" in env.output("worker")
        assert [n for n, _ in env.lines("ordered")] == [4, 1, 3, 0, 5, 2]  # priority, then FIFO
        assert {pid for _, pid in env.lines("ordered")} == {worker.pid}
        # The worker consumes only the queues it was given: the default queue's job waits.
        r = http("GET", web.url + f"/memqueue/jobs/{default_job}")
        assert r.status == 200 and r.json()["status"] == "queued", r.text
        stats = http("GET", web.url + "/memqueue/stats").json()
        assert stats["queues"]["default"]["queued"] == 1 and stats["queues"]["reports"]["queued"] == 0
        env.stop(worker, "worker")
    assert env.lines("run") == []


@pytest.mark.slow
def test_a_chord_of_2000_over_3_workers_with_one_killed_calls_back_once_with_every_result(env: Env) -> None:
    """Issue 21: the callback runs exactly once, with all 2,000 results in member order, although
    a worker is SIGKILLed mid-way (its running member is taken over by a live worker)."""
    workers = [env.worker(f"worker{k}", JT_CONSUMER="0") for k in range(3)]
    producer = env.main("producer", "chord", "2000", JT_CONSUMER="0")
    chord_with_one_worker_killed(env, workers, producer, DEADLINE)
    assert rows(env, "SELECT count(*) FROM memqueue_jobs WHERE status != 'succeeded'") == [(0,)]


@pytest.mark.slow
def test_a_chain_of_200_links_completes_although_a_worker_is_killed_in_the_middle(env: Env) -> None:
    workers = [env.worker(f"worker{k}", JT_CONSUMER="0") for k in range(2)]
    producer = env.main("producer", "chain", "200", JT_CONSUMER="0")
    chain_with_one_worker_killed(env, workers, producer, DEADLINE)
    assert rows(env, "SELECT count(*) FROM memqueue_jobs WHERE status != 'succeeded'") == [(0,)]
    last = "SELECT result FROM memqueue_jobs WHERE task='link' ORDER BY CAST(result AS INTEGER) DESC LIMIT 1"
    assert rows(env, last) == [("200",)]
