"""Faults: journals that cannot be used, a store that fails at run time, signals to real servers.

Each test asserts three things: a clear error (naming the file, the key, the
cause), no spin (counted: log lines, consumer starts, store calls, never a
duration), and no silent loss (every job ran, or is said to be cancelled, or
stays in the journal). Real servers come from ``tests/support/processes.py``; the app
they run is ``tests/apps/faults_app.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Flask
from support.harness import Env
from support.journals import damage, make_journal
from support.net import http
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import Job, JobStatus, JournalError, MemQueue
from flask_memqueue import consumer as consumer_module
from flask_memqueue.cli import WORKER_MAX_FAILURES, run_worker
from flask_memqueue.consumer import backoff_delay
from flask_memqueue.state import AppQueue
from flask_memqueue.storage.base import Storage, TickInfo
from flask_memqueue.storage.sqlite import SQLiteStorage

MakeApp = Callable[..., Flask]
MakeEnv = Callable[..., Env]
DEADLINE = 30.0
LINUX = Path("/proc/self/stat").exists()


# -- a store that fails on demand ---------------------------------------------------------------
class FailingStore(Storage):
    """Test-only wrapper: delegates to a real store; ``take()`` raises while ``failing`` is set.

    It keeps the contract of a failing ``take``: the job handed back is
    recorded (here at once) before the failure, so nothing is left running.
    """

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.url = inner.url
        self.failing = threading.Event()
        self.failures = 0

    def take(
        self,
        timeout: float | None,
        done: Job | None = None,
        *,
        queue: str = "default",
        stop: Callable[[], bool] | None = None,
    ) -> Job | None:
        if self.failing.is_set():
            if done is not None:
                self.inner.finish(done)
            self.failures += 1
            raise OSError("injected: the disk is on fire")
        return self.inner.take(timeout, done, queue=queue, stop=stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # The abstract methods, delegated.
    def put(self, job: Job) -> None:
        self.inner.put(job)

    def schedule(self, job: Job, *, retry: bool = False) -> None:
        self.inner.schedule(job, retry=retry)

    def put_unique(self, job: Job) -> Job:
        return self.inner.put_unique(job)

    def claim_tick(self, task: str, tick: float, job: Job | None) -> bool:
        return self.inner.claim_tick(task, tick, job)

    def last_ticks(self) -> dict[str, TickInfo]:
        return self.inner.last_ticks()

    def finish(self, job: Job) -> None:
        self.inner.finish(job)

    def cancel(self, job: Job) -> bool:
        return self.inner.cancel(job)

    def requeue(self, job: Job) -> bool:
        return self.inner.requeue(job)

    def get(self, job_id: str) -> Job | None:
        return self.inner.get(job_id)

    def jobs(
        self, status: JobStatus | None = None, limit: int = 50, offset: int = 0, *, queue: str | None = None
    ) -> list[Job]:
        return self.inner.jobs(status, limit, offset, queue=queue)

    def counts(self, queue: str | None = None) -> dict[str, int]:
        return self.inner.counts(queue)

    def queue_counts(self) -> dict[str, dict[str, int]]:
        return self.inner.queue_counts()

    def depth(self, queue: str | None = None) -> int:
        return self.inner.depth(queue)

    def purge_finished(self) -> int:
        return self.inner.purge_finished()

    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        return self.inner.join(timeout, due_only=due_only, queue=queue)

    def waiter(self, job: Job) -> threading.Event | None:
        return self.inner.waiter(job)

    def wake(self) -> None:
        self.inner.wake()

    def drop_waiting(self) -> list[Job]:
        return self.inner.drop_waiting()

    def refresh(self, job: Job) -> None:
        self.inner.refresh(job)

    def close(self) -> None:
        self.inner.close()


def failing_store(app: Flask) -> FailingStore:
    queue: AppQueue = app.extensions["memqueue"]
    store = FailingStore(queue.storage)
    queue.storage = store
    return store


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.fixture(params=["memory", "journal"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return {} if request.param == "memory" else {"MEMQUEUE_JOURNAL": str(tmp_path / "journal.db")}


# -- journals that cannot be used: refused at init_app ---------------------------------------------
@pytest.mark.parametrize("page", [2, 4, -1])
def test_a_journal_with_a_garbage_page_is_refused_at_init_app(make_app: MakeApp, tmp_path: Path, page: int) -> None:
    path = tmp_path / "journal.db"
    make_journal(path)
    if page == -1:  # the last page: a leaf only a full read finds
        conn = sqlite3.connect(path)
        page = conn.execute("PRAGMA page_count").fetchone()[0] - 1
        conn.close()
    damage(path, page)
    with pytest.raises(JournalError) as info:
        make_app("faults_app", MEMQUEUE_JOURNAL=str(path))
    text = str(info.value)
    assert str(path) in text and "MEMQUEUE_JOURNAL" in text
    assert "damaged" in text or "not a database" in text, text


def test_a_read_only_journal_file_is_refused_at_init_app(make_app: MakeApp, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.db"
    make_journal(path, jobs=3)
    if os.geteuid() == 0:  # root may write anything: pretend the file refuses it, as it would for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real(p, mode))
    path.chmod(0o444)
    try:
        with pytest.raises(JournalError) as info:
            make_app("faults_app", MEMQUEUE_JOURNAL=str(path))
    finally:
        path.chmod(0o644)
    assert str(path) in str(info.value) and "read-only" in str(info.value)


def test_a_journal_sqlite_can_only_open_read_only_is_refused_at_init_app(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What os.access cannot see (a read-only mount): SQLite opens it read-only, the write check refuses it."""
    path = tmp_path / "journal.db"
    make_journal(path, jobs=3)
    real_connect = SQLiteStorage._connect
    opened: list[int] = []

    def connect_read_only(self: SQLiteStorage) -> sqlite3.Connection:
        if opened:  # the first connection sets WAL up; later ones are what SQLite gives a read-only file
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            return conn
        opened.append(1)
        conn = real_connect(self)
        conn.close()
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)

    monkeypatch.setattr(SQLiteStorage, "_connect", connect_read_only)
    with pytest.raises(JournalError) as info:
        make_app("faults_app", MEMQUEUE_JOURNAL=str(path))
    assert str(path) in str(info.value)
    assert "readonly" in str(info.value) or "read-only" in str(info.value), str(info.value)


@pytest.mark.processes
@pytest.mark.skipif(not LINUX, reason="real processes (Linux)")
def test_the_worker_exits_non_zero_with_a_clear_message_on_a_damaged_journal(make_env: MakeEnv) -> None:
    env = make_env("faults_app", target="faults_app:create_app()")
    journal = env.journal
    make_journal(journal)
    damage(journal, 4)
    proc = env.worker("worker", wait=False, FA_JOURNAL=str(journal))
    returncode = proc.wait(DEADLINE)
    output = env.output("worker")
    assert returncode != 0, output
    assert str(journal) in output and "damaged" in output, output
    # No spin: the error is reported once (one chained traceback), not once per restart.
    assert output.count("the file is damaged") == 1 and len(output.splitlines()) < 80, output


# -- a store that fails at run time ------------------------------------------------------------------
def test_the_backoff_doubles_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(1, 12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert max(delays) == consumer_module.BACKOFF_MAX == delays[-1]
    assert backoff_delay(10_000) == consumer_module.BACKOFF_MAX  # no overflow after a long outage


def test_a_store_failing_at_run_time_backs_off_logs_once_and_recovers(
    mq: MemQueue, make_app: MakeApp, backend: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    app = make_app("faults_app", **backend)
    queue: AppQueue = app.extensions["memqueue"]
    store = failing_store(app)
    store.failing.set()
    client = app.test_client()
    with app.app_context():
        jobs = [mq.enqueue(double, i) for i in range(5)]  # starts the consumer; its take() fails
        wait_until(lambda: store.failures >= 3)  # tried again after 0.1 s and 0.2 s
        r = client.get("/memqueue/health")
        assert r.status_code == 503 and "injected: the disk is on fire" in r.get_json()["error"], r.data
        stats = client.get("/memqueue/stats").get_json()
        assert "injected" in stats["consumer"]["store_error"]
        assert queue.starts == 1 and queue.consumer_thread is not None  # one thread, backing off
        store.failing.clear()
        assert [job.wait(TIMEOUT) for job in jobs] == [0, 2, 4, 6, 8]  # none lost
        assert client.get("/memqueue/health").status_code == 200
        assert client.get("/memqueue/stats").get_json()["consumer"]["store_error"] is None
    assert queue.starts == 1
    assert len(messages(caplog, "fails: OSError: injected")) == 1  # once per outage, however many failures
    assert len(messages(caplog, "works again")) == 1


def test_shutdown_ends_a_backoff_wait_at_once(mq: MemQueue, make_app: MakeApp,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With a backoff of an hour, shutdown still stops the consumer: stop() cuts the wait short."""
    monkeypatch.setattr(consumer_module, "BACKOFF_FIRST", 3600.0)
    monkeypatch.setattr(consumer_module, "BACKOFF_MAX", 3600.0)
    app = make_app("faults_app")
    queue: AppQueue = app.extensions["memqueue"]
    store = failing_store(app)
    store.failing.set()
    with app.app_context():
        job = mq.enqueue(lambda: None)
    wait_until(lambda: store.failures >= 1)
    thread = queue.consumer_thread
    assert thread is not None
    # The drain can not finish (take() fails), so shutdown waits out its timeout before it stops
    # the consumer: kept short, since the backoff wait being cut short is what is tested.
    assert queue.shutdown(wait=True, timeout=0.5) is False  # the job could not run: it is cancelled
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert job.status is JobStatus.CANCELLED and store.failures == 1


def test_the_worker_gives_up_after_consecutive_store_failures(
    mq: MemQueue, make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(consumer_module, "BACKOFF_FIRST", 0.001)
    monkeypatch.setattr(consumer_module, "BACKOFF_MAX", 0.001)
    app = make_app("faults_app", MEMQUEUE_JOURNAL=str(tmp_path / "journal.db"), MEMQUEUE_CONSUMER=False)
    store = failing_store(app)
    store.failing.set()
    before = signal.getsignal(signal.SIGTERM)
    with app.app_context(), pytest.raises(click.ClickException) as info:
        run_worker(app.extensions["memqueue"])  # the main thread, as `flask memqueue worker`
    assert f"failed {WORKER_MAX_FAILURES} times in a row" in info.value.message
    assert "injected" in info.value.message
    assert store.failures == WORKER_MAX_FAILURES  # counted, not timed: it stopped trying
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, [r.getMessage() for r in errors]  # the outage once, giving up once
    assert signal.getsignal(signal.SIGTERM) is before  # the worker gave its handlers back


# -- signals to real servers -------------------------------------------------------------------------
def fill(url: str, n: int = 20) -> dict[str, Any]:
    r = http("POST", url + "/fill", json={"n": n, "gate": "gate"}, timeout=DEADLINE)
    assert r.status == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait(DEADLINE)


def faults_env(make_env: MakeEnv, *, journal: bool = False) -> Env:
    """faults_app in a temporary directory; with ``journal``, on a journal (``env.journal``)."""
    env = make_env("faults_app", target="faults_app:create_app()", FA_SHUTDOWN_TIMEOUT="0.5")
    if journal:
        env.env["FA_JOURNAL"] = str(env.journal)
    return env


@pytest.fixture
def env(make_env: MakeEnv) -> Env:
    return faults_env(make_env)


@pytest.mark.processes
@pytest.mark.skipif(not LINUX, reason="real processes (Linux)")
def test_sigterm_to_flask_run_cancels_and_logs_the_waiting_jobs(env: Env) -> None:
    with env.flask_run(debug=False) as server:
        body = fill(server.url)
        os.kill(server.pid, signal.SIGTERM)
        code = wait_exit(server.proc)
        output = server.output()
    assert code == -signal.SIGTERM, output  # it still dies of SIGTERM, as before
    assert "shut down with 20 job(s) not run; they were cancelled" in output, output
    assert all(jid in output for jid in body["ids"][:10]), output
    assert f"job {body['blocker']} (block)" in output and "interrupted" in output, output
    assert env.events("ran") == []  # none ran, and none went unmentioned
    assert output.count("SIGTERM: the queue of app 'faults_app' stops") == 1, output


@pytest.mark.processes
@pytest.mark.skipif(not LINUX, reason="real processes (Linux)")
def test_sigterm_to_the_reloaders_serving_child_cancels_and_logs_the_waiting_jobs(env: Env) -> None:
    with env.flask_run(debug=True) as server:
        body = fill(server.url)
        child = body["pid"]
        assert child != server.pid
        os.kill(child, signal.SIGTERM)
        wait_until(lambda: "they were cancelled" in server.output(), DEADLINE)
        output = server.output()
    assert "shut down with 20 job(s) not run; they were cancelled" in output, output
    assert env.events("ran") == []


@pytest.mark.processes
@pytest.mark.skipif(not LINUX, reason="real processes (Linux)")
def test_sigterm_to_flask_run_with_a_journal_keeps_the_waiting_jobs_and_says_so(make_env: MakeEnv) -> None:
    env = faults_env(make_env, journal=True)
    with env.flask_run(debug=False) as server:
        body = fill(server.url)
        os.kill(server.pid, signal.SIGTERM)
        code = wait_exit(server.proc)
        output = server.output()
    assert code == -signal.SIGTERM, output
    assert "20 waiting job(s) of app 'faults_app' stay in the store" in output, output
    conn = sqlite3.connect(env.journal)
    try:
        rows = dict(conn.execute("SELECT id, status FROM memqueue_jobs").fetchall())
    finally:
        conn.close()
    assert all(rows[jid] == "queued" for jid in body["ids"]), rows
    assert rows[body["blocker"]] == "running"  # taken up by the next process that finds its owner dead


@pytest.mark.processes
@pytest.mark.skipif(not LINUX, reason="real processes (Linux)")
@pytest.mark.parametrize("gate_opens", [True, False], ids=["drains", "cancels"])
def test_sigterm_to_gunicorn_drains_then_cancels_and_logs(env: Env, gate_opens: bool) -> None:
    """Gunicorn handles SIGTERM: a worker exits normally and drains its queue for
    MEMQUEUE_SHUTDOWN_TIMEOUT seconds (here 0.5, or 10 when the gate opens), then cancels and logs the rest."""
    if gate_opens:
        env.env["FA_SHUTDOWN_TIMEOUT"] = "10"
    with env.gunicorn(workers=1) as server:
        fill(server.url)
        os.kill(server.pid, signal.SIGTERM)
        if gate_opens:
            env.open_gate("gate")
        code = wait_exit(server.proc)
        output = server.output()
    assert code == 0, output
    ran = sorted(int(e[1]) for e in env.events("ran"))
    if gate_opens:
        assert ran == list(range(20)), output  # each exactly once
    else:
        assert ran == [] and "shut down with 20 job(s) not run; they were cancelled" in output, output
