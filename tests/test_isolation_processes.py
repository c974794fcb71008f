"""Isolated jobs under real servers and workers (issue 22): ``flask run --debug`` (the reloader),
gunicorn ``--preload`` and ``flask memqueue worker``, with ``tests/apps/iso_app.py``.

In each, the process that runs the job starts the child (``python -m flask_memqueue.runtime.child``),
which rebuilds the app from the factory that called ``init_app`` (``iso_app:create_app``); no child
outlives its parent, whether the parent stops or is SIGKILLed; a job whose worker was SIGKILLed is
not lost: another worker takes it over and runs it.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.harness import RELOADER_EXCLUDE, Env
from support.net import http
from support.processes import parent_pid
from support.waiting import wait_until

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]

DEADLINE = 60.0


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, or a pid gone, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def isolated_add(url: str, a: int, b: int) -> dict[str, Any]:
    """``POST /iso/add/a/b``: an HTTP enqueue of an isolated job, answered with its result."""
    r = http("POST", f"{url}/iso/add/{a}/{b}", timeout=DEADLINE)
    assert r.status == 200, r.text
    answer: dict[str, Any] = r.json()
    assert answer["sum"] == a + b and answer["greeting"] == "hello from the config", answer
    return answer


def test_flask_run_debug_runs_isolated_jobs_in_children_of_the_serving_process(
    make_env: Callable[..., Env]
) -> None:
    env = make_env("iso_app")
    with env.flask_run(args=["--exclude-patterns", RELOADER_EXCLUDE], timeout=DEADLINE) as server:
        first = isolated_add(server.url, 2, 3)
        web = first["web"]
        assert web != server.pid and parent_pid(web) == server.pid  # the reloader's serving child
        assert first["pid"] != web and parent_pid(first["pid"]) == web  # ... starts the job's child
        assert isolated_add(server.url, 4, 5)["pid"] == first["pid"]  # warm
    wait_until(lambda: not alive(first["pid"]), DEADLINE, "the child to end with its parent")


def test_gunicorn_preload_runs_isolated_jobs_in_children_of_a_worker(make_env: Callable[..., Env]) -> None:
    env = make_env("iso_app", target="iso_app:create_app()")
    with env.gunicorn(workers=2, preload=True, timeout=DEADLINE) as server:
        answer = isolated_add(server.url, 20, 22)
        worker = answer["web"]
        assert worker != server.pid and parent_pid(worker) == server.pid
        assert parent_pid(answer["pid"]) == worker  # never the master
    wait_until(lambda: not alive(answer["pid"]), DEADLINE, "the child to end with its worker")


def test_a_sigkilled_worker_leaves_no_child_and_loses_no_job(make_env: Callable[..., Env], tmp_path: Path) -> None:
    """``flask memqueue worker`` on SQLite: SIGKILL it while its child runs a job; the child dies
    (its request pipe's EOF), and a second worker takes the job over and runs it to its end."""
    url = f"sqlite:///{tmp_path / 'data' / 'jobs.db'}"
    env = make_env("iso_app", ISO_URL=url, worker_env={"ISO_CONSUMER": "1"}, ISO_CONSUMER="0")
    first = env.worker("first")
    done = env.run([sys.executable, "-c", "import iso_app; iso_app.main()", "enqueue", "1", "gate"])
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    wait_until(lambda: env.events("start"), DEADLINE, lambda: f"the job to start: {env.output('first')}")
    child = int(env.events("start")[0][2])
    assert parent_pid(child) == first.pid
    first.send_signal(signal.SIGKILL)
    first.wait(DEADLINE)
    wait_until(lambda: not alive(child), DEADLINE, "the child of the SIGKILLed worker to end")

    env.open_gate("gate")
    second = env.worker("second")
    wait_until(lambda: len(env.events("start")) == 2, DEADLINE,
               lambda: f"the job to be taken over: {env.output('second')}")
    retaken = int(env.events("start")[1][2])
    assert parent_pid(retaken) == second.pid

    assert outcome(env, job_id)["status"] == "succeeded"
    env.stop(second, "second")
    wait_until(lambda: not alive(retaken), DEADLINE, "the child of the stopped worker to end")


def call(env: Env, *args: str) -> str:
    """``iso_app.main(*args)`` in a process of its own that runs no jobs; its stdout."""
    done = env.run([sys.executable, "-c", "import iso_app; iso_app.main()", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def outcome(env: Env, job_id: str) -> dict[str, Any]:
    """The stored job once it has finished."""
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] | None = json.loads(call(env, "show", job_id))
        assert job is not None, f"job {job_id} is not in the store"
        return job if job["status"] in ("succeeded", "failed", "cancelled", "aborted") else None

    return wait_until(finished, DEADLINE, lambda: f"job {job_id} to finish: {env.output('worker')}")


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.servers),
                                   pytest.param("postgres", marks=pytest.mark.servers)])
def test_an_abort_from_another_process_kills_the_isolated_job_a_worker_runs(
    make_env: Callable[..., Env], tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    """On every shared store: the worker's watchdog reads the request from the store, its child is
    killed after the grace period, the job ends ``aborted``, and the worker runs the next job."""
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'jobs.db'}"
    elif store == "redis":
        url = request.getfixturevalue("redis_server").url()
    else:
        url = request.getfixturevalue("postgres_url")
    env = make_env("iso_app", ISO_URL=url, worker_env={"ISO_CONSUMER": "1"}, ISO_CONSUMER="0")
    worker = env.worker("worker")
    stuck = call(env, "enqueue", "1", "never")
    wait_until(lambda: env.events("start"), DEADLINE, lambda: f"the job to start: {env.output('worker')}")
    child = int(env.events("start")[0][2])
    assert parent_pid(child) == worker.pid
    assert call(env, "abort", stuck) == "True"
    job = outcome(env, stuck)
    assert job["status"] == "aborted" and job["error"].startswith("aborted by the test"), job
    wait_until(lambda: not alive(child), DEADLINE, "the aborted job's child to be killed")

    env.open_gate("open")
    after = call(env, "enqueue", "2", "open")
    assert outcome(env, after)["status"] == "succeeded"
    assert worker.poll() is None
    env.stop(worker, "worker")
