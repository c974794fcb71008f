"""Abort across processes: a job that a real ``flask memqueue worker`` runs is asked to stop
from another process (``flask memqueue abort ID``, ``mq.abort(id)``), on every shared store.

The worker learns of the request from the store (capability ``abort_flags``:
SQLite's table, Redis's key, PostgreSQL's table), read by its watchdog while
the job runs. Each test waits for the job's ``start`` line in the log before it
asks (so the job surely runs), then for the stored outcome, all with deadlines.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.harness import Env
from support.waiting import wait_until

pytestmark = [pytest.mark.processes]

DEADLINE = 60.0
MakeEnv = Callable[..., Env]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.servers),
                        pytest.param("postgres", marks=pytest.mark.servers)])
def env(request: pytest.FixtureRequest, make_env: MakeEnv, tmp_path: Any) -> Iterator[Env]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'jobs.db'}"
    elif request.param == "redis":
        url = request.getfixturevalue("redis_server").url()
    else:
        url = request.getfixturevalue("postgres_url")
    yield make_env("limits_app", fields=(int, str), worker_env={"LT_CONSUMER": "1"}, LT_URL=url, LT_CONSUMER="0")


def call(env: Env, *args: str) -> str:
    """``limits_app.main(*args)`` in a process of its own that runs no jobs; its stdout."""
    done = env.run([sys.executable, "-c", "import limits_app; limits_app.main()", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def started(env: Env, n: int) -> None:
    wait_until(lambda: any(f[1:2] == [str(n)] for f in env.events("start")), DEADLINE,
               lambda: f"job {n} to start: {env.output('worker')}")


def outcome(env: Env, job_id: str) -> dict[str, Any]:
    """The stored job once it has finished."""
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] | None = json.loads(call(env, "show", job_id))
        assert job is not None, f"job {job_id} is not in the store"
        return job if job["status"] in ("succeeded", "failed", "cancelled", "aborted") else None

    return wait_until(finished, DEADLINE, lambda: f"job {job_id} to finish: {env.output('worker')}")


def test_a_worker_stops_a_job_when_another_process_asks(env: Env) -> None:
    """Cooperative (``flask memqueue abort ID``: the job sees ``abort_requested`` and returns) and
    forced (``mq.abort(id)`` of a job that never looks: ``JobAborted`` after the grace period):
    both end ``aborted`` with who asked, and the worker lives on to run the next job."""
    worker = env.worker("worker")
    polite = call(env, "enqueue", "polite", "1")
    started(env, 1)
    asked = env.run([sys.executable, "-m", "flask", "--app", "limits_app", "memqueue", "abort", polite])
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.split("\t")[:2] == [polite, "asked to stop"], asked.stdout
    job = outcome(env, polite)
    assert job["status"] == "aborted", job
    assert re.fullmatch(r"aborted by flask memqueue abort \(.+@.+\) at \d{4}-\d\d-\d\dT.+", job["error"]), job["error"]
    assert env.events("saw") == [["saw", "1", str(worker.pid)]]

    stubborn = call(env, "enqueue", "stubborn", "2")
    started(env, 2)
    assert call(env, "abort", stubborn) == "True"
    job = outcome(env, stubborn)
    assert job["status"] == "aborted" and "the test" in job["error"], job
    assert env.events("interrupted") == [["interrupted", "2", "JobAborted"]]

    after = call(env, "enqueue", "polite", "3")  # the same worker takes the next job
    started(env, 3)
    assert call(env, "abort", after) == "True"
    assert outcome(env, after)["status"] == "aborted"
    assert worker.poll() is None, env.output("worker")
    env.stop(worker, "worker")


def test_aborting_a_waiting_job_from_another_process_cancels_it(env: Env) -> None:
    waiting = call(env, "enqueue", "polite", "4")  # no worker runs: it waits
    assert call(env, "abort", waiting) == "True"
    job = outcome(env, waiting)
    assert job["status"] == "cancelled", job
