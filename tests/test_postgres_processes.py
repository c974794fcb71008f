"""The PostgreSQL store with real processes, a real server, a real PgBouncer and real signals.

Each test copies ``tests/apps/pg_app.py`` into a temporary directory and runs it
from there: producers (``python -c "import pg_app; ..."``) and ``flask memqueue
worker`` processes, on a schema of the test's own in the session's server (a
server of its own for the restart test). Jobs write what they do to
``runs.log`` with one ``O_APPEND`` write per line, so the log is the ground
truth of which job ran how often and where; the table is read to check what
the store says. Every wait is bounded; jobs that must stay running wait for a
gate file the test creates, never for time to pass.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from support.harness import Env
from support.servers.postgres import PASSWORD, PgBouncer, PostgresServer, fresh_schema
from support.waiting import wait_until
from support.workflows import chain_with_one_worker_killed, chord_with_one_worker_killed

pytestmark = [pytest.mark.servers, pytest.mark.processes]

DEADLINE = 60.0
MakeEnv = Callable[..., Env]


def pg_env(make_env: MakeEnv, url: str) -> Env:
    """The harness for pg_app on ``url``; its workers share the web processes' config
    (``MEMQUEUE_CONSUMER = False``): the command consumes anyway."""
    return make_env("pg_app", fields=(int, int, float), worker_env={"RT_CONSUMER": "0"}, RT_URL=url)


@pytest.fixture
def server(postgres: PostgresServer) -> PostgresServer:
    return postgres


@pytest.fixture
def schema() -> str:
    return fresh_schema()


@pytest.fixture
def env(make_env: MakeEnv, server: PostgresServer, schema: str) -> Env:
    return pg_env(make_env, server.url(schema=schema))


def rows(server: Any, schema: str, where: str = "true") -> list[tuple[Any, ...]]:
    """``(first argument, status, attempts, owner)`` of the stored jobs."""
    return [tuple(r) for r in server.execute(
        f"SELECT (args::jsonb)->>0, status, attempts, owner FROM {schema}.memqueue_jobs WHERE {where}")]


# -- many processes ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_producers_and_three_workers_run_every_job_exactly_once(env: Env, server: Any, schema: str) -> None:
    workers = [env.worker(f"worker{k}") for k in range(3)]
    producers = [env.main(f"producer{k}", "enqueue", "5000", RT_CONSUMER="0", RT_OFFSET=str(k * 5000),
                          RT_THREADS="2") for k in range(3)]
    for k, proc in enumerate(producers):
        assert proc.wait(240) == 0, env.output(f"producer{k}")
    wait_until(lambda: len(env.lines("run")) >= 15_000 or any(w.poll() is not None for w in workers), 240,
               lambda: f"15,000 runs (have {len(env.lines('run'))})")
    for k, w in enumerate(workers):
        env.stop(w, f"worker{k}")
    runs = env.lines("run")
    counts = Counter(n for n, _, _ in runs)
    assert set(counts) == set(range(15_000)), f"lost jobs: {sorted(set(range(15_000)) - set(counts))[:20]}"
    assert [n for n, c in counts.items() if c > 1] == [], "jobs ran twice"
    ran_in = Counter(pid for _, pid, _ in runs)
    assert set(ran_in) == {w.pid for w in workers}, f"every worker takes its share: {ran_in}"
    assert server.execute(f"SELECT status, count(*), max(attempts) FROM {schema}.memqueue_jobs GROUP BY status") \
        == [("succeeded", 15_000, 1)]


def test_kill_9_of_a_worker_reruns_only_its_job_as_soon_as_the_server_drops_its_session(
    env: Env, server: Any, schema: str
) -> None:
    """2,000 jobs, two workers with a lease far longer than the test may wait; the first holds
    the first job numbered 1000 or more it gets and is killed there. Only that job runs twice:
    taken over once the server ended the killed worker's session (its advisory lock is gone
    from pg_locks), not after the lease."""
    a = env.worker("a", RT_LEASE="600", RT_HOLD_FROM="1000")
    b = env.worker("b", RT_LEASE="600")
    producer = env.main("producer", "enqueue", "2000", RT_CONSUMER="0")
    assert producer.wait(120) == 0, env.output("producer")
    held = wait_until(lambda: [x for x in env.lines("holding") if x[1] == a.pid], DEADLINE,
                      lambda: "worker a to hold a job: " + env.output("a"))[0][0]
    running = rows(server, schema, f"status = 'running' AND owner LIKE '{a.pid}:%'")
    assert [r[0] for r in running] == [str(held)]
    os.kill(a.pid, signal.SIGKILL)
    assert a.wait(DEADLINE) == -signal.SIGKILL
    wait_until(lambda: len({n for n, _, _ in env.lines("run")}) == 2000 and len(env.lines("run")) >= 2001,
               DEADLINE, lambda: f"every job to run, {held} twice: {len(env.lines('run'))} runs")
    env.stop(b, "b")
    runs = env.lines("run")
    counts = Counter(n for n, _, _ in runs)
    assert set(counts) == set(range(2000)), "lost jobs"
    assert {n for n, c in counts.items() if c > 1} == {held}, "only the job the killed worker held runs again"
    assert [pid for n, pid, _ in runs if n == held] == [a.pid, b.pid]
    assert rows(server, schema, f"(args::jsonb)->>0 = '{held}'") == [(str(held), "succeeded", 2, None)]
    assert server.execute(f"SELECT status, count(*) FROM {schema}.memqueue_jobs GROUP BY status") \
        == [("succeeded", 2000)]


def test_a_job_running_three_leases_on_a_live_worker_is_never_taken_over(env: Env, server: Any, schema: str) -> None:
    a = env.worker("a", RT_LEASE="1")
    b = env.worker("b", RT_LEASE="1")  # idle: it looks for dead owners every second
    code = "import pg_app as r\napp = r.create_app()\nwith app.app_context():\n    r.mq.enqueue(r.block, 7, 'gate')\n"
    enqueue = env.python("enqueue", code, RT_CONSUMER="0")
    assert enqueue.wait(DEADLINE) == 0, env.output("enqueue")
    (n, pid, started), = wait_until(lambda: env.lines("start"), DEADLINE, lambda: env.output("a") + env.output("b"))
    wait_until(lambda: time.time() >= started + 3 * 1.0, DEADLINE, "three leases to pass", interval=0.05)
    assert rows(server, schema, "status = 'running'")[0][3].split(":")[0] == str(pid)
    env.open_gate("gate")
    wait_until(lambda: env.lines("done"), DEADLINE, lambda: env.output("a") + env.output("b"))
    assert [(x[0], x[1]) for x in env.lines("start")] == [(7, pid)], "the job was taken over"
    # "done" is printed by the job itself; the outcome is committed just after it returns
    expected = [("7", "succeeded", 1, None)]
    wait_until(lambda: rows(server, schema) == expected, DEADLINE, lambda: str(rows(server, schema)))
    env.stop(a, "a")
    env.stop(b, "b")


# -- the server restarting ------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_server_restarted_mid_run_loses_nothing_committed(make_env: MakeEnv) -> None:
    """Enqueue fails clearly (password redacted) while the server is down; the workers ride out
    the restart by themselves, and every acknowledged (committed) job runs, once."""
    with PostgresServer(durable=True).start() as server:
        e = pg_env(make_env, server.url(schema="restart"))
        try:
            setup = e.main("setup", "enqueue", "0", RT_CONSUMER="0")  # creates the schema
            assert setup.wait(DEADLINE) == 0, e.output("setup")
            workers = [e.worker(f"worker{k}") for k in range(2)]
            producer = e.main("producer", "produce", "100000", RT_CONSUMER="0")

            def acked() -> set[int]:
                return {int(line.split()[1]) for line in e.output("producer").splitlines() if line.startswith("acked")}

            def refused() -> list[str]:
                return [line for line in e.output("producer").splitlines() if line.startswith("refused")]

            wait_until(lambda: len(acked()) >= 200, DEADLINE, lambda: e.output("producer"))
            server.stop()
            wait_until(lambda: len(refused()) >= 3, DEADLINE, lambda: e.output("producer"))
            before = len(acked())
            server.start(server.port)
            wait_until(lambda: len(acked()) >= before + 200, DEADLINE, lambda: e.output("producer"))
            e.open_gate("stop-producing")
            assert producer.wait(DEADLINE) == 0, e.output("producer")
            done = acked()
            wait_until(lambda: done <= {n for n, _, _ in e.lines("run")}, DEADLINE,
                       lambda: f"acknowledged jobs that never ran: {sorted(done - {n for n, _, _ in e.lines('run')})}")
            for k, w in enumerate(workers):
                e.stop(w, f"worker{k}")
            outputs = [e.output(f"worker{k}") for k in range(2)]
        finally:
            e.cleanup()
    counts = Counter(n for n, _, _ in e.lines("run"))
    assert [n for n, c in counts.items() if c > 1] == [], "jobs ran twice"
    message = refused()[0]
    assert "PostgresUnavailable" in message and "postgresql://memqueue:***@127.0.0.1" in message, message
    for text in [*outputs, e.output("producer")]:
        assert PASSWORD not in text
    assert any("reachable again" in text for text in outputs), outputs


# -- PgBouncer in transaction mode --------------------------------------------------------------------
def test_behind_pgbouncer_in_transaction_mode_with_notify_off(make_env: MakeEnv, server: Any, schema: str) -> None:
    bouncer = PgBouncer(server).start()
    try:
        e = pg_env(make_env, bouncer.url(schema=schema, notify="false"))
        try:
            workers = [e.worker(f"worker{k}") for k in range(2)]
            producers = [e.main(f"producer{k}", "enqueue", "500", RT_CONSUMER="0", RT_OFFSET=str(k * 500),
                                RT_THREADS="2") for k in range(2)]
            for k, proc in enumerate(producers):
                assert proc.wait(120) == 0, e.output(f"producer{k}")
            wait_until(lambda: len(e.lines("run")) >= 1000, 120, lambda: f"1,000 runs (have {len(e.lines('run'))})")
            for k, w in enumerate(workers):
                e.stop(w, f"worker{k}")
        finally:
            e.cleanup()
    finally:
        bouncer.stop()
    counts = Counter(n for n, _, _ in e.lines("run"))
    assert set(counts) == set(range(1000)) and max(counts.values()) == 1
    assert server.execute(f"SELECT status, count(*) FROM {schema}.memqueue_jobs GROUP BY status") \
        == [("succeeded", 1000)]


# -- workflows (issue 21) ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_chord_of_2000_over_3_workers_with_one_killed_calls_back_once_with_every_result(
    env: Env, server: Any, schema: str
) -> None:
    """The callback runs exactly once, with all 2,000 results in member order, although a worker
    is SIGKILLed mid-way: its running member is taken over (the server drops the dead session's
    lock, or its lease lapses), and each member's outcome releases (or counts toward) the
    callback in the statement that records it (the trigger of workflow_sql.py)."""
    workers = [env.worker(f"worker{k}", RT_LEASE="2") for k in range(3)]
    producer = env.main("producer", "chord", "2000", RT_CONSUMER="0")
    chord_with_one_worker_killed(env, workers, producer, DEADLINE)
    assert server.execute(f"SELECT status, count(*) FROM {schema}.memqueue_jobs GROUP BY status") \
        == [("succeeded", 2001)]
    assert server.execute(f"SELECT count(*) FROM {schema}.memqueue_waits") == [(0,)]


@pytest.mark.slow
def test_a_chain_of_200_links_completes_although_a_worker_is_killed_in_the_middle(
    env: Env, server: Any, schema: str
) -> None:
    workers = [env.worker(f"worker{k}", RT_LEASE="2") for k in range(2)]
    producer = env.main("producer", "chain", "200", RT_CONSUMER="0")
    chain_with_one_worker_killed(env, workers, producer, DEADLINE)
    assert server.execute(f"SELECT status, count(*), max(result::int) FROM {schema}.memqueue_jobs GROUP BY status") \
        == [("succeeded", 200, 200)]


# -- refused credentials -----------------------------------------------------------------------------
def test_a_worker_refused_by_postgres_says_so_once_and_exits_with_an_error(make_env: MakeEnv, server: Any,
                                                                           schema: str) -> None:
    """A wrong password is a configuration error, not an outage: ``flask memqueue worker``
    (four consumer threads) exits 1 by itself, saying so once, without a traceback and
    without the password. It used to take the refusal for an outage and retry for ever."""
    env = pg_env(make_env, server.url(schema=schema, password="wr0ng-pa55", connect_timeout="2"))
    worker = env.worker("worker", "--threads", "4", wait=False)
    code = worker.wait(DEADLINE)  # by itself: no signal is sent
    output = env.output("worker")
    assert code == 1, output
    assert output.count("refuses this app") == 1, output
    assert "refused the credentials" in output and "configuration error, not an outage" in output, output
    assert "Traceback" not in output and "wr0ng-pa55" not in output, output
