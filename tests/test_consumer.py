"""The consumer thread: one per app, lazy, guarded by its ident, restarted after a crash."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support.threads import consumer_threads
from support.waiting import TIMEOUT, Gate, wait_until

from flask_memqueue import MemQueue
from flask_memqueue.state import AppQueue


def noop(*args: Any) -> None:
    return None


def consumers_of(app: Flask) -> list[threading.Thread]:
    return [t for t in consumer_threads() if t.name == f"memqueue-consumer[{app.name}]"]


# -- one per app, started lazily ----------------------------------------------------------
def test_not_started_by_init_app_nor_by_an_app_context(make_app: Any, mq: MemQueue) -> None:
    app = make_app("lazy")
    queue: AppQueue = app.extensions["memqueue"]
    with app.app_context():
        pass
    assert consumer_threads() == []
    assert queue.consumer_thread is None and queue.consumer_ident is None and queue.starts == 0


def test_first_enqueue_starts_exactly_one(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    assert consumer_threads() == []
    jobs = [mq.enqueue(noop) for _ in range(50)]
    assert mq.join(TIMEOUT)
    assert all(job.status == "succeeded" for job in jobs)
    (thread,) = consumers_of(app)
    assert queue.consumer_thread is thread and queue.consumer_ident == thread.ident
    assert thread.daemon
    assert queue.starts == 1


def test_first_request_starts_it(app: Flask, client: FlaskClient, queue: AppQueue) -> None:
    assert consumer_threads() == []
    assert client.get("/ping").status_code == 200
    (thread,) = consumers_of(app)
    assert client.get("/ping").status_code == 200
    assert consumers_of(app) == [thread] and queue.starts == 1


@pytest.mark.app_config(MEMQUEUE_AUTOSTART=True)
def test_autostart_starts_it_in_init_app(app: Flask, queue: AppQueue) -> None:
    assert len(consumers_of(app)) == 1 and queue.starts == 1


def test_autostart_not_in_the_reloaders_watcher(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    watcher = make_app("watcher", MEMQUEUE_AUTOSTART=True)
    assert consumers_of(watcher) == []
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    serving = make_app("serving", MEMQUEUE_AUTOSTART=True)
    assert len(consumers_of(serving)) == 1


def test_concurrent_first_enqueues_start_exactly_one(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    n = 32
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def first_enqueue() -> None:
        try:
            barrier.wait(TIMEOUT)
            with app.app_context():
                mq.enqueue(noop)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_enqueue) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert errors == []
    assert mq.join(TIMEOUT)
    assert queue.starts == 1 and len(consumers_of(app)) == 1
    assert queue.consumer.jobs_done == n


def test_concurrent_first_requests_start_exactly_one(app: Flask, queue: AppQueue) -> None:
    n = 16
    barrier = threading.Barrier(n)
    codes: list[int] = []

    def first_request() -> None:
        client = app.test_client()
        barrier.wait(TIMEOUT)
        codes.append(client.get("/ping").status_code)

    threads = [threading.Thread(target=first_request) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert codes == [200] * n
    assert queue.starts == 1 and len(consumers_of(app)) == 1


# -- the ident guard ------------------------------------------------------------------------
def run_on_a_foreign_thread(queue: AppQueue) -> None:
    """Call the consumer loop from a thread that is not the recorded consumer; it must return."""
    done = threading.Event()

    def impostor() -> None:
        queue.consumer.run()
        done.set()

    foreign = threading.Thread(target=impostor, name="impostor", daemon=True)
    foreign.start()
    assert done.wait(TIMEOUT), "a consumer loop on a foreign thread did not return"
    foreign.join(TIMEOUT)


def test_a_loop_on_a_foreign_thread_exits_at_once(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    mq.enqueue(noop).wait(TIMEOUT)
    legitimate = queue.consumer_ident
    run_on_a_foreign_thread(queue)
    assert queue.consumer_ident == legitimate
    assert mq.enqueue(lambda: 1).wait(TIMEOUT) == 1  # the real one still works
    assert mq.join(TIMEOUT)
    assert queue.consumer.jobs_done == 2


def test_a_loop_on_a_foreign_thread_exits_before_any_consumer_started(app: Flask, queue: AppQueue) -> None:
    assert queue.consumer_ident is None
    run_on_a_foreign_thread(queue)
    assert queue.consumer_ident is None and queue.starts == 0


def test_a_running_loop_whose_ident_is_no_longer_recorded_exits(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    mq.enqueue(noop).wait(TIMEOUT)
    thread = queue.consumer.thread
    assert thread is not None and thread.is_alive()
    with queue.lock:
        queue.consumer.ident = -1  # as if another thread were now the legitimate consumer
    queue.storage.wake()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


# -- failures -----------------------------------------------------------------------------
def test_a_job_raising_an_exception_fails_and_the_consumer_goes_on(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    first = mq.enqueue(noop)
    first.wait(TIMEOUT)
    ident = queue.consumer_ident
    bad = mq.enqueue(boom)
    after = [mq.enqueue(lambda i=i: i) for i in range(5)]
    assert [job.wait(TIMEOUT) for job in after] == list(range(5))
    assert bad.status == "failed" and bad.error == "RuntimeError: boom"
    assert queue.consumer_ident == ident and queue.starts == 1


@pytest.mark.parametrize("fatal", [SystemExit, KeyboardInterrupt])
def test_a_job_raising_systemexit_restarts_the_consumer_and_loses_nothing(
    app: Flask, mq: MemQueue, queue: AppQueue, gate: Gate, fatal: type[BaseException]
) -> None:
    def die() -> None:
        raise fatal("bye")

    blocker = mq.enqueue(gate)
    gate.wait_entered()
    first_ident = queue.consumer_ident
    dying = mq.enqueue(die)
    after = [mq.enqueue(lambda i=i: i) for i in range(20)]
    gate.release()
    assert blocker.wait(TIMEOUT) == "gate"
    assert [job.wait(TIMEOUT) for job in after] == list(range(20))
    assert dying.status == "failed" and dying.error is not None and dying.error.startswith(fatal.__name__)
    assert dying.finished_at is not None
    assert queue.starts == 2 and queue.consumer_ident != first_ident
    (thread,) = consumers_of(app)
    assert thread.ident == queue.consumer_ident
    assert mq.join(TIMEOUT)
    assert mq.get_job(dying.id) is dying


def test_a_dead_consumer_is_restarted_by_the_next_request(
    app: Flask, mq: MemQueue, queue: AppQueue, client: FlaskClient, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die() -> None:
        raise SystemExit(3)

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    blocker = mq.enqueue(gate)
    gate.wait_entered()
    mq.enqueue(die)
    waiting = [mq.enqueue(lambda i=i: i) for i in range(5)]
    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    gate.release()
    blocker.wait(TIMEOUT)
    wait_until(lambda: queue.start_error is not None)  # its own restart failed
    wait_until(lambda: queue.consumer_thread is None)
    assert [job.status for job in waiting] == ["queued"] * 5
    monkeypatch.undo()
    assert client.get("/ping").status_code == 200  # the next request notices
    assert [job.wait(TIMEOUT) for job in waiting] == list(range(5))
    assert len(consumers_of(app)) == 1


# -- many producers ------------------------------------------------------------------------
@pytest.mark.app_config(MEMQUEUE_MAXSIZE=0)
def test_8_producers_x_5000_jobs_each_run_once_fifo_per_producer(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    producers, per_producer = 8, 5000
    ran: list[tuple[int, int]] = []
    record = ran.append
    barrier = threading.Barrier(producers)
    errors: list[BaseException] = []

    def produce(p: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            with app.app_context():
                for i in range(per_producer):
                    mq.enqueue(record, (p, i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert not any(t.is_alive() for t in threads)
    assert mq.join(60)
    assert len(ran) == producers * per_producer
    assert collections.Counter(ran).most_common(1)[0][1] == 1  # no job ran twice
    by_producer: dict[int, list[int]] = collections.defaultdict(list)
    for p, i in ran:
        by_producer[p].append(i)
    for p in range(producers):
        assert by_producer[p] == list(range(per_producer)), f"producer {p}'s jobs ran out of order"
    assert queue.starts == 1


# -- interpreter exit ------------------------------------------------------------------------
SCRIPT = """
import sys, time
from flask import Flask
from flask_memqueue import MemQueue

mq = MemQueue()
app = Flask(__name__)
app.config["MEMQUEUE_SHUTDOWN_TIMEOUT"] = float(sys.argv[2])
mq.init_app(app)
out = open(sys.argv[1], "a")

def record(i):
    out.write(f"{i}\\n")
    out.flush()

with app.app_context():
    if sys.argv[3] == "stuck":
        mq.enqueue(time.sleep, 3600)
    for i in range(100):
        mq.enqueue(record, i)
# no shutdown: the atexit hook drains the queue
"""


def run_script(tmp_path: Path, timeout: str, mode: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    script = tmp_path / "atexit_app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out.txt"
    out.touch()
    proc = subprocess.run(
        [sys.executable, str(script), str(out), timeout, mode],
        capture_output=True, text=True, timeout=60,
    )
    return proc, out.read_text().split()


@pytest.mark.processes
def test_interpreter_exit_drains_the_queue(tmp_path: Path) -> None:
    proc, lines = run_script(tmp_path, "30", "normal")
    assert proc.returncode == 0, proc.stderr
    assert lines == [str(i) for i in range(100)]


@pytest.mark.processes
def test_interpreter_exit_is_bounded_by_shutdown_timeout(tmp_path: Path) -> None:
    proc, lines = run_script(tmp_path, "0.2", "stuck")  # subprocess.run fails the test if it hangs
    assert proc.returncode == 0, proc.stderr
    assert lines == []
    assert "cancelled" in proc.stderr  # the jobs left are logged, not silently dropped
