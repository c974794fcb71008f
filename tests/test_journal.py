"""The journal in one process: config and errors, JSON-only arguments, group commit,
restart and take-over, cross-store reads, fork, and the ``flask memqueue`` commands.

What needs real processes and signals is in ``test_journal_processes.py``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import Job, JobFailed, JobStatus, JournalError, MemQueue, UnknownTaskError
from flask_memqueue.state import AppQueue
from flask_memqueue.storage.durable import process_alive, process_start_time
from flask_memqueue.storage.sqlite import SQLiteStorage

MakeApp = Callable[..., Flask]


def journal_app(make_app: MakeApp, path: Path, name: str = "japp", **config: Any) -> Flask:
    return make_app(name, MEMQUEUE_JOURNAL=str(path), **config)


def store(app: Flask) -> SQLiteStorage:
    queue: AppQueue = app.extensions["memqueue"]
    assert isinstance(queue.storage, SQLiteStorage)
    return queue.storage


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(path, timeout=TIMEOUT)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def status_of(job: Job) -> str:
    """The status as a plain string (mypy would narrow ``job.status`` across calls that change it)."""
    return job.status.value


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(TIMEOUT)
    return proc.pid


# -- config and errors -----------------------------------------------------------------------
def test_relative_path_is_in_the_instance_folder_which_is_created(mq: MemQueue, tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    app = Flask("rel", instance_path=str(instance))
    app.config.update(TESTING=True, MEMQUEUE_JOURNAL="memqueue.db")
    mq.init_app(app)
    try:
        assert store(app).path == str(instance / "memqueue.db")
        assert (instance / "memqueue.db").is_file()
        assert store(app).capabilities.shared is True
    finally:
        app.extensions["memqueue"].shutdown()


def test_a_folder_that_does_not_exist_is_a_journal_error_naming_the_file(make_app: MakeApp, tmp_path: Path) -> None:
    path = tmp_path / "missing" / "journal.db"
    with pytest.raises(JournalError, match=str(path)) as info:
        journal_app(make_app, path)
    assert "does not exist" in str(info.value)


def test_a_path_under_a_file_is_a_journal_error(make_app: MakeApp, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "journal.db"
    with pytest.raises(JournalError, match=str(path)) as info:
        journal_app(make_app, path)
    assert "is not a folder" in str(info.value)


def test_a_folder_that_is_not_writable_is_a_journal_error(make_app: MakeApp, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root may write anywhere: pretend the folder refuses it
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode))
    folder.chmod(0o500)
    try:
        with pytest.raises(JournalError, match="is not writable") as info:
            journal_app(make_app, folder / "journal.db")
        assert str(folder / "journal.db") in str(info.value)
    finally:
        folder.chmod(0o700)


def test_a_garbage_file_is_a_journal_error_naming_the_file(make_app: MakeApp, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(JournalError, match=str(path)) as info:
        journal_app(make_app, path)
    assert "is it a SQLite database" in str(info.value) or "not a database" in str(info.value)


@pytest.mark.parametrize(("mode", "pragma"), [("normal", 1), ("full", 2), ("FULL", 2)])
def test_sync_modes(make_app: MakeApp, tmp_path: Path, mode: str, pragma: int) -> None:
    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_JOURNAL_SYNC=mode)
    s = store(app)
    assert s._w is not None and s._r is not None
    for conn in (s._w, s._r):
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_consumer_false_with_a_journal_is_an_enqueue_only_process(mq: MemQueue, make_app: MakeApp,
                                                                   tmp_path: Path) -> None:
    @mq.task
    def noop() -> None: ...

    app = journal_app(make_app, tmp_path / "j.db", testing=False, MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = mq.enqueue(noop)
    assert app.extensions["memqueue"].consumer_thread is None
    assert rows(tmp_path / "j.db", "SELECT id, status FROM memqueue_jobs") == [(job.id, "queued")]


# -- what may be enqueued -----------------------------------------------------------------------
def test_arguments_must_be_json(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="greet")
    def greet(who: Any, when: Any = None) -> None: ...

    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_CONSUMER=False)
    with app.app_context():
        with pytest.raises(TypeError, match=r"greet: argument 0 \(set"):
            mq.enqueue(greet, {1, 2})
        with pytest.raises(TypeError, match=r"greet: keyword argument 'when' \(datetime"):
            import datetime

            mq.enqueue(greet, "ada", when=datetime.datetime.now())
        assert mq.get_job("nothing") is None
    assert rows(tmp_path / "j.db", "SELECT count(*) FROM memqueue_jobs") == [(0,)]


def test_unregistered_callables_are_refused(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_CONSUMER=False)
    with app.app_context(), pytest.raises(UnknownTaskError, match="not a registered task"):
        mq.enqueue(print, "hi")


def test_results_must_be_json(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task
    def make_set() -> set[int]:
        return {1}

    app = journal_app(make_app, tmp_path / "j.db")
    with app.app_context():
        job = mq.enqueue(make_set)
        with pytest.raises(JobFailed, match="not JSON-serialisable"):
            job.wait(TIMEOUT)


def test_disk_full_at_enqueue_is_a_journal_error_and_loses_nothing(mq: MemQueue, make_app: MakeApp,
                                                                   tmp_path: Path) -> None:
    @mq.task(name="big")
    def big(data: str) -> None: ...

    path = tmp_path / "j.db"
    app = journal_app(make_app, path, MEMQUEUE_CONSUMER=False)
    s = store(app)
    with app.app_context():
        kept = mq.enqueue(big, "small")
        assert s._w is not None
        pages = s._w.execute("PRAGMA page_count").fetchone()[0]
        s._w.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is full now
        with pytest.raises(JournalError, match=str(path)) as info:
            mq.enqueue(big, "x" * 100_000)
        assert "full" in str(info.value)
        s._w.execute("PRAGMA max_page_count = 1073741823")
        after = mq.enqueue(big, "small again")
    assert [r[0] for r in rows(path, "SELECT id FROM memqueue_jobs ORDER BY seq")] == [kept.id, after.id]


# -- group commit -------------------------------------------------------------------------------
def test_concurrent_enqueues_share_commits(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    """While one commit is in progress, every other enqueuer joins the next one: 8 puts, 2 commits."""

    @mq.task(name="noop")
    def noop(i: int) -> None: ...

    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_CONSUMER=False)
    s = store(app)
    commits: list[int] = []
    real = s._insert

    def counting(records: Any) -> int:
        commits.append(len(records))
        return real(records)

    s._insert = counting  # type: ignore[method-assign]
    jobs: list[Job] = []

    def enqueue(i: int) -> None:
        with app.app_context():
            jobs.append(mq.enqueue(noop, i))

    with s._wlock:  # the first leader blocks in its commit; the others pile up behind it
        threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: (batch := s.writer._open) is not None and len(batch.records) == 7)
    for t in threads:
        t.join(TIMEOUT)
    assert commits == [1, 7]
    assert len(jobs) == 8
    assert rows(tmp_path / "j.db", "SELECT count(*) FROM memqueue_jobs WHERE status='queued'") == [(8,)]


# -- restart and take-over ------------------------------------------------------------------------
def test_jobs_survive_a_restart_and_run_by_task_name(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="add")
    def add(a: int, b: int = 0) -> int:
        return a + b

    path = tmp_path / "j.db"
    before = journal_app(make_app, path, MEMQUEUE_CONSUMER=False)
    with before.app_context():
        ids = [mq.enqueue(add, i, b=1).id for i in range(5)]
        scheduled = mq.enqueue_in(0.05, add, 100).id
        assert mq.shutdown() is True  # nothing lost: it stays on disk
    after = journal_app(make_app, path)
    with after.app_context():
        assert mq.join(TIMEOUT)
        assert [mq.get_job(i).result for i in ids] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
        assert mq.get_job(scheduled).result == 100  # type: ignore[union-attr]


def claim_as(app: Flask, owner: str) -> Job:
    """Take the next job in ``app``'s store and pretend process ``owner`` runs it."""
    s = store(app)
    job = s.take(0)
    assert job is not None
    with s._wlock:
        assert s._w is not None
        s._w.execute("UPDATE memqueue_jobs SET owner=? WHERE id=?", (owner, job.id))
    return job


@pytest.mark.parametrize(("retries", "status", "error"), [
    (1, "succeeded", None),  # a success clears the earlier attempt's error, as for any retry
    (0, "failed", "interrupted"),
])
def test_a_dead_owners_running_job_is_taken_up(mq: MemQueue, make_app: MakeApp, tmp_path: Path,
                                               retries: int, status: str, error: str | None) -> None:
    runs: list[int] = []

    @mq.task(name="work", retries=retries, retry_delay=0.01)
    def work(i: int) -> int:
        runs.append(i)
        return i

    path = tmp_path / "j.db"
    first = journal_app(make_app, path, "shared", MEMQUEUE_CONSUMER=False)
    with first.app_context():
        job = mq.enqueue(work, 7)
    claim_as(first, f"{dead_pid()}:1:deadbeef")  # it "died" while running the job
    second = journal_app(make_app, path, "shared")
    with second.app_context():
        mq.queue_for(second).ensure_consumer()
        assert mq.join(TIMEOUT)
        found = mq.get_job(job.id)
        assert found is not None
        assert (found.status.value, found.attempts) == (status, 2 if retries else 1)
        assert found.error == error
    assert runs == ([7] if retries else [])


def test_a_live_owners_job_is_never_taken_over(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="work")
    def work() -> None: ...

    path = tmp_path / "j.db"
    first = journal_app(make_app, path, "shared", MEMQUEUE_CONSUMER=False)
    with first.app_context():
        job = mq.enqueue(work)
    parent = os.getppid()
    claim_as(first, f"{parent}:{process_start_time(parent)}:cafe")
    second = journal_app(make_app, path, "shared", MEMQUEUE_CONSUMER=False)
    assert store(second).recover() == 0
    assert rows(path, "SELECT status FROM memqueue_jobs WHERE id=?", (job.id,)) == [("running",)]


def test_a_reused_pid_does_not_keep_a_dead_owner_alive() -> None:
    me = os.getpid()
    assert process_alive(me, process_start_time(me))
    assert not process_alive(me, "1")  # same pid, another start time: another process
    assert not process_alive(dead_pid(), "")


# -- several stores on one file ----------------------------------------------------------------
def test_a_job_run_by_another_store_is_readable_and_waitable(mq: MemQueue, make_app: MakeApp,
                                                             tmp_path: Path) -> None:
    """Two stores on one file stand for two processes: one enqueues, the other runs."""

    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    path = tmp_path / "j.db"
    web = journal_app(make_app, path, "shared", MEMQUEUE_CONSUMER=False)
    worker = journal_app(make_app, path, "shared")
    with web.app_context():
        job = mq.enqueue(double, 21)
    worker_queue = mq.queue_for(worker)
    assert worker_queue.consumer.run_once(TIMEOUT)
    with web.app_context():
        assert job.wait(TIMEOUT) == 42  # polls the journal: the other store ran it
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
        assert mq.get_job(job.id).to_dict()["result"] == 42  # type: ignore[union-attr]
    other = journal_app(make_app, path, "other", MEMQUEUE_CONSUMER=False)
    assert store(other).take(0) is None, "another app's jobs are not ours"


def test_shutdown_keeps_waiting_jobs_on_disk(mq: MemQueue, make_app: MakeApp, tmp_path: Path, gate: Any) -> None:
    mq.task(name="gate")(gate)

    @mq.task(name="later")
    def later() -> None: ...

    path = tmp_path / "j.db"
    app = journal_app(make_app, path)
    with app.app_context():
        running = mq.enqueue("gate")
        gate.wait_entered()
        waiting = [mq.enqueue(later) for _ in range(3)]
        threading.Timer(0.05, gate.release).start()
        assert mq.shutdown(timeout=TIMEOUT) is True
    assert rows(path, "SELECT status FROM memqueue_jobs WHERE id=?", (running.id,)) == [("succeeded",)]
    assert rows(path, "SELECT count(*) FROM memqueue_jobs WHERE status='queued'") == [(len(waiting),)]


def test_retries_go_through_the_journal(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    calls: list[int] = []

    @mq.task(name="flaky", retries=2, retry_delay=0.01)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("not yet")
        return "ok"

    app = journal_app(make_app, tmp_path / "j.db")
    with app.app_context():
        job = mq.enqueue(flaky)
        assert job.wait(TIMEOUT) == "ok"
        assert job.attempts == 3
    assert rows(tmp_path / "j.db", "SELECT status, attempts, result FROM memqueue_jobs") == [("succeeded", 3, '"ok"')]


def test_eager_mode_records_the_job(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="inc")
    def inc(x: int) -> int:
        return x + 1

    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_EAGER=True)
    with app.app_context():
        job = mq.enqueue(inc, 1)
        assert job.result == 2
        assert mq.get_job(job.id).result == 2  # type: ignore[union-attr]


def test_cancel_and_requeue(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="noop")
    def noop() -> None: ...

    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = mq.enqueue(noop)
        assert job.cancel() is True
        assert status_of(job) == "cancelled"
        assert job.cancel() is False
        assert mq.queue_for(app).requeue(job) is True
        assert status_of(job) == "queued"
        assert mq.run_once()
        found = mq.get_job(job.id)
        assert found is not None and found.status.value == "succeeded"
        assert status_of(job) == "succeeded", "the consumer ran the very object enqueue returned"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="noop")
    def noop(who: str) -> None: ...

    path = tmp_path / "j.db"
    app = journal_app(make_app, path, MEMQUEUE_CONSUMER=False)
    parent_store = store(app)
    with app.app_context():
        mq.enqueue(noop, "parent")
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            child_store = store(app)
            ok = child_store is not parent_store and child_store._w is not parent_store._w
            with app.app_context():
                mq.enqueue(noop, "child")
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with app.app_context():
        mq.enqueue(noop, "parent again")  # the parent's connection is unharmed
    assert [r[0] for r in rows(path, "SELECT args FROM memqueue_jobs ORDER BY seq")] == [
        '["parent"]', '["child"]', '["parent again"]'
    ]


# -- the CLI ----------------------------------------------------------------------------------------
def test_cli_jobs_retry_purge(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    @mq.task(name="fine")
    def fine() -> None: ...

    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_CONSUMER=False)
    runner = app.test_cli_runner()
    with app.app_context():
        bad = mq.enqueue(boom)
        good = mq.enqueue(fine)
        waiting = mq.enqueue(fine)
        assert mq.run_once() and mq.run_once()

    out = runner.invoke(args=["memqueue", "jobs"])
    assert out.exit_code == 0, out.output
    header, *lines = [line.split("\t") for line in out.output.splitlines()]
    assert header == ["id", "status", "task", "attempts", "error"]
    assert [(f[0], f[1], f[2]) for f in lines] == [
        (waiting.id, "queued", "fine"), (good.id, "succeeded", "fine"), (bad.id, "failed", "boom")
    ]
    assert "ValueError: boom" in lines[2][4]
    out = runner.invoke(args=["memqueue", "jobs", "--status", "failed", "--limit", "1"])
    assert out.output.splitlines()[1].split("\t")[0] == bad.id

    out = runner.invoke(args=["memqueue", "retry", bad.id])
    assert out.exit_code == 0, out.output
    assert rows(tmp_path / "j.db", "SELECT status, attempts FROM memqueue_jobs WHERE id=?", (bad.id,)) == [
        ("queued", 0)
    ]
    out = runner.invoke(args=["memqueue", "retry", good.id])
    assert out.exit_code != 0 and "only a failed or cancelled job" in out.output
    out = runner.invoke(args=["memqueue", "retry", "nope-1"])
    assert out.exit_code != 0 and "no job 'nope-1'" in out.output

    out = runner.invoke(args=["memqueue", "purge"])
    assert out.exit_code != 0 and "--finished" in out.output
    out = runner.invoke(args=["memqueue", "purge", "--finished"])
    assert out.exit_code == 0 and "purged 1 finished job(s)" in out.output
    assert app.extensions["memqueue"].consumer_thread is None, "a CLI command started a consumer"


@pytest.mark.parametrize("args", [["jobs"], ["retry", "x-1"], ["purge", "--finished"], ["worker"]])
def test_cli_without_a_journal_says_the_queue_lives_in_the_server(make_app: MakeApp, args: list[str]) -> None:
    app = make_app()
    out = app.test_cli_runner().invoke(args=["memqueue", *args])
    assert out.exit_code != 0
    text = out.output.replace("\n", " ")
    assert "this app's store (memory://) lives inside the serving process" in text
    assert "MEMQUEUE_STORAGE" in text


def test_waiting_is_bounded(mq: MemQueue, make_app: MakeApp, tmp_path: Path) -> None:
    @mq.task(name="noop")
    def noop() -> None: ...

    app = journal_app(make_app, tmp_path / "j.db", MEMQUEUE_CONSUMER=False)
    with app.app_context():
        job = mq.enqueue(noop)
        with pytest.raises(TimeoutError):
            job.wait(0.05)
        assert mq.join(0.05) is False
        assert mq.run_once(0) and mq.run_once(0.01) is False


def test_a_consumer_in_the_enqueuing_process_is_woken_at_once(mq: MemQueue, make_app: MakeApp, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With the poll made far longer than the test's wait, only the in-process wake-up can run job 2."""
    import flask_memqueue.storage.durable as journal

    monkeypatch.setattr(journal, "POLL_INTERVAL", 10 * TIMEOUT)
    monkeypatch.setattr(journal, "RECOVER_INTERVAL", 10 * TIMEOUT)

    @mq.task(name="echo")
    def echo(x: int) -> int:
        return x

    app = journal_app(make_app, tmp_path / "j.db")
    with app.app_context():
        assert mq.enqueue(echo, 1).wait(TIMEOUT) == 1  # the consumer runs, then idles
        assert mq.enqueue(echo, 2).wait(TIMEOUT) == 2


def test_switching_a_new_journal_to_wal_is_tried_again_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    """SQLite may answer "database is locked" to ``PRAGMA journal_mode=WAL`` at once, without
    its busy handler, while another process switches the same new journal: several workers
    starting together failed. The switch is tried again; another error is raised at once."""
    import sqlite3

    from flask_memqueue.storage.sqlite import schema

    real = sqlite3.connect(tmp_path / "j.db", isolation_level=None)

    class Contended:
        def __init__(self, refusals: int, message: str) -> None:
            self.refusals, self.message, self.tries = refusals, message, 0

        def execute(self, sql: str) -> sqlite3.Cursor:
            self.tries += 1
            if self.tries <= self.refusals:
                raise sqlite3.OperationalError(self.message)
            return real.execute(sql)

    locked = Contended(2, "database is locked")
    schema._set_wal(locked)  # type: ignore[arg-type]
    assert locked.tries == 3
    assert real.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    broken = Contended(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        schema._set_wal(broken)  # type: ignore[arg-type]
    assert broken.tries == 1
    real.close()
