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
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import HOST, Server, bin_path, flask_run, gunicorn, http, wait_until

ROOT = Path(__file__).resolve().parents[1]
APP_SOURCE = Path(__file__).resolve().parent / "apps" / "journal_app.py"
DEADLINE = 30.0
MAIN = "import journal_app; journal_app.main()"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="liveness reads /proc (Linux)")


class Env:
    """A temporary app directory, its journal and its log."""

    def __init__(self, tmp_path: Path) -> None:
        self.src = tmp_path / "src"
        self.src.mkdir()
        shutil.copy(APP_SOURCE, self.src / "journal_app.py")
        self.dir = tmp_path / "data"
        self.dir.mkdir()
        self.journal = self.dir / "journal.db"
        self.log = self.dir / "runs.log"
        self.env = {
            "JT_JOURNAL": str(self.journal),
            "JT_DIR": str(self.dir),
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def lines(self, kind: str) -> list[tuple[int, int]]:
        """``(n, pid)`` of every ``<kind> <n> <pid>`` line of runs.log."""
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == kind:
                out.append((int(fields[1]), int(fields[2])))
        return out

    def has(self, line: str) -> bool:
        return self.log.exists() and line in self.log.read_text().splitlines()

    def popen(self, argv: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        environ = {**os.environ, **self.env, **env}
        for key in ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD"):
            environ.pop(key, None)
        out = (self.dir / f"{name}.out").open("wb")
        try:
            proc = subprocess.Popen(argv, cwd=self.src, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def output(self, name: str) -> str:
        return (self.dir / f"{name}.out").read_text(errors="replace")

    def main(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return self.popen([sys.executable, "-c", MAIN, *args], name, **env)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.journal, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.cleanup()


def exited(proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> int:
    return proc.wait(timeout)


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
    assert exited(first) == -signal.SIGKILL

    running = {int(args[1:-1].split(",")[0])
               for (args,) in env.rows("SELECT args FROM memqueue_jobs WHERE status='running'")}
    assert running == {1000}
    ran_before = Counter(n for n, _ in env.lines("run"))
    assert 0 < len(ran_before) < 2000

    second = env.main("second", "drain")
    assert exited(second, 60) == 0, env.output("second")

    runs = Counter(n for n, _ in env.lines("run"))
    assert set(runs) == set(range(2000)), "a job never ran"
    twice = {n for n, count in runs.items() if count > 1}
    assert twice <= running, f"jobs that were not running at the kill ran twice: {sorted(twice - running)}"
    assert max(runs.values()) <= 2
    # The interrupted job counted one attempt (retries=1 let it run again).
    assert env.rows("SELECT status, attempts FROM memqueue_jobs WHERE args='[1000]'") == [("succeeded", 2)]
    assert env.rows("SELECT count(*) FROM memqueue_jobs WHERE status != 'succeeded'") == [(0,)]


def test_two_enqueuers_and_a_worker_lose_nothing_and_run_nothing_twice(env: Env) -> None:
    """Two enqueue-only processes (4 threads each) x 5,000 jobs, one `flask memqueue worker`.

    The worker shares the web processes' config (``MEMQUEUE_CONSUMER = False``): the command consumes anyway.
    """
    worker = env.popen([str(bin_path("flask")), "--app", "journal_app", "memqueue", "worker"], "worker",
                       JT_CONSUMER="0")
    wait_until(lambda: f"memqueue worker {worker.pid}: running" in env.output("worker"), DEADLINE,
               lambda: "the worker to start: " + env.output("worker"))
    producers = [
        env.main(f"producer{k}", "enqueue", "5000", JT_CONSUMER="0", JT_OFFSET=str(k * 5000), JT_THREADS="4")
        for k in range(2)
    ]
    for k, proc in enumerate(producers):
        assert exited(proc, 120) == 0, env.output(f"producer{k}")
    wait_until(lambda: len(env.lines("run")) >= 10_000 or worker.poll() is not None, 120,
               lambda: f"10,000 runs (have {len(env.lines('run'))})")
    worker.send_signal(signal.SIGTERM)
    assert exited(worker) == 0, env.output("worker")
    assert f"memqueue worker {worker.pid}: stopped" in env.output("worker")

    runs = env.lines("run")
    counts = Counter(n for n, _ in runs)
    assert set(counts) == set(range(10_000)), "lost jobs"
    assert [n for n, c in counts.items() if c > 1] == [], "jobs ran twice"
    assert {pid for _, pid in runs} == {worker.pid}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_stops_after_the_job_in_hand(env: Env, signum: signal.Signals) -> None:
    worker = env.popen([str(bin_path("flask")), "--app", "journal_app", "memqueue", "worker"], "worker")
    wait_until(lambda: f"memqueue worker {worker.pid}: running" in env.output("worker"), DEADLINE,
               lambda: "the worker to start: " + env.output("worker"))
    enqueue = env.popen([sys.executable, "-c", (
        "import journal_app as j\n"
        "app = j.create_app()\n"
        "with app.app_context():\n"
        "    j.mq.enqueue(j.block, 0, 'gate')\n"
        "    j.mq.enqueue(j.record, 1)\n"
    )], "enqueue", JT_CONSUMER="0")
    assert exited(enqueue) == 0, env.output("enqueue")
    wait_until(lambda: env.has(f"start 0 {worker.pid}"), DEADLINE, lambda: "job 0 to start: " + env.output("worker"))
    worker.send_signal(signum)
    (env.dir / "gate").touch()
    assert exited(worker) == 0, env.output("worker")
    assert env.has(f"done 0 {worker.pid}"), "the job in hand was not finished"
    assert env.lines("run") == [], "the worker took another job after SIGTERM"
    assert env.rows("SELECT task, status FROM memqueue_jobs ORDER BY seq") == [("block", "succeeded"),
                                                                             ("record", "queued")]


# -- servers ------------------------------------------------------------------------------
EXCLUDE = f"{ROOT}{os.sep}*"  # the reloader must watch only the copied app, not the checkout


def test_reload_under_flask_run_debug_runs_every_job_in_the_new_child(env: Env, tmp_path: Path) -> None:
    server = flask_run("journal_app", cwd=env.src, log_path=tmp_path / "server.log",
                       args=["--exclude-patterns", EXCLUDE], env=env.env, ready_path="/pid")
    with server:
        old = http("GET", server.url + "/pid").json()["pid"]
        ids = [http("POST", server.url + "/enqueue", json={"task": "block", "args": [n, "gate"]}).json()["id"]
               for n in range(5)]
        wait_until(lambda: env.has(f"start 0 {old}"), DEADLINE, server.describe)

        source = env.src / "journal_app.py"
        source.write_text(source.read_text() + "\n# touched\n")

        def new_child() -> int | None:
            try:
                pid: int = http("GET", server.url + "/pid", timeout=2).json()["pid"]
            except (OSError, ValueError):
                return None
            return pid if pid != old else None

        new = wait_until(new_child, DEADLINE, server.describe)  # this request starts its consumer
        (env.dir / "gate").touch()

        def all_done() -> bool:
            return {n for n, pid in env.lines("done") if pid == new} == set(range(5))

        wait_until(all_done, DEADLINE, lambda: f"every job done in {new}: {env.log.read_text()}")
        assert [n for n, pid in env.lines("done") if pid != new] == [], "a job finished outside the new child"
        for job_id in ids:
            assert http("GET", f"{server.url}/memqueue/jobs/{job_id}").json()["status"] == "succeeded"


def test_gunicorn_two_workers_share_one_journal(env: Env, tmp_path: Path) -> None:
    """Every job is readable from either worker; a SIGKILLed worker's jobs run in a live one."""
    server = gunicorn("journal_app:create_app()", cwd=env.src, log_path=tmp_path / "gunicorn.log",
                      preload=True, env=env.env, ready_path="/pid")
    holds: list[threading.Thread] = []

    def hold(token: str) -> int:
        """Keep one sync worker busy; returns its pid once it holds."""
        def request() -> None:
            try:
                http("GET", f"{server.url}/hold/{token}", timeout=DEADLINE)
            except OSError:  # the test failed and stopped the server
                pass

        t = threading.Thread(target=request)
        t.start()
        holds.append(t)
        return wait_until(lambda: next((pid for tok, pid in _held(env) if tok == token), None), DEADLINE,
                          server.describe)

    def release(token: str) -> None:
        (env.dir / f"release-{token}").touch()

    with server:
        try:
            # Worker A holds a request: everything below is answered by worker B.
            a = hold("a")
            jobs = [http("POST", server.url + "/enqueue", json={"task": "block", "args": [n, "gate"]})
                    for n in range(6)]
            b = int(jobs[0].headers["X-Pid"])
            assert b != a and {int(r.headers["X-Pid"]) for r in jobs} == {b}
            ids = [r.json()["id"] for r in jobs]
            _all_readable(server, ids, b)
            # Now B holds and A is free: A answers for the same ids.
            assert hold("b") == b
            release("a")
            _all_readable(server, ids, a)
            release("b")
            for t in holds:
                t.join(DEADLINE)
            # B enqueued them and runs one (its consumer started with the first
            # enqueue); A may run another. Kill B while its job runs.
            wait_until(lambda: any(pid == b for _, pid in env.lines("start")), DEADLINE, server.describe)
            os.kill(b, signal.SIGKILL)
            (env.dir / "gate").touch()

            def done() -> bool:
                return {n for n, _ in env.lines("done")} == set(range(6))

            wait_until(lambda: done() or _poke(server), DEADLINE, lambda: f"every job done: {env.log.read_text()}")
            wait_until(done, DEADLINE, lambda: f"every job done: {env.log.read_text()}")
            assert b not in {pid for _, pid in env.lines("done")}, "the killed worker finished a job"
            assert Counter(n for n, _ in env.lines("done")) == Counter(range(6)), "a job finished twice"
            for job_id in ids:
                assert http("GET", f"{server.url}/memqueue/jobs/{job_id}").json()["status"] == "succeeded"
        finally:
            for token in ("a", "b"):
                release(token)
            for t in holds:
                t.join(DEADLINE)


def _held(env: Env) -> list[tuple[str, int]]:
    try:
        text = env.log.read_text()
    except FileNotFoundError:
        return []
    return [(f[1], int(f[2])) for f in (line.split() for line in text.splitlines()) if f and f[0] == "held"]


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


def test_a_web_process_and_a_worker_keep_queues_and_priorities(env: Env, tmp_path: Path) -> None:
    """Issue 11 across processes: a web process that only enqueues (0 threads per queue),
    and ``flask memqueue worker --queues reports``: priority then FIFO, and only that queue."""
    queues = '{"default": 0, "reports": 0}'
    with flask_run("journal_app", cwd=env.src, debug=False, log_path=tmp_path / "web.log",
                   env={**env.env, "JT_QUEUES": queues}) as web:
        plan = [(0, 0), (1, 5), (2, -5), (3, 5), (4, 10), (5, 0)]
        for n, priority in plan:
            r = http("POST", web.url + "/enqueue", json={"task": "ordered", "args": [n], "priority": priority})
            assert r.status == 200, r.text
        r = http("POST", web.url + "/enqueue", json={"task": "record", "args": [99]})  # the default queue
        assert r.status == 200, r.text
        default_job = r.json()["id"]
        worker = env.popen([str(bin_path("flask")), "--app", "journal_app", "memqueue", "worker",
                            "--queues", "reports", "--threads", "1"], "worker", JT_QUEUES=queues)
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
        worker.send_signal(signal.SIGTERM)
        assert exited(worker) == 0, env.output("worker")
    assert env.lines("run") == []
