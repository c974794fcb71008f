"""Issue 24 with real processes: a pause made by one process (the CLI) stops the starts of three
``flask memqueue worker`` processes within a second, on SQLite, Redis and PostgreSQL; resume runs
every job once; a restart keeps the pause. Jobs log ``run <n> <pid> <time>`` (one O_APPEND write)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from support import markers
from support.harness import Env
from support.processes import bin_path
from support.waiting import wait_until

DEADLINE = 60.0
#: The issue's promise: every process obeys a pause within a second.
OBEYED_WITHIN = 1.0

pytestmark = [pytest.mark.processes]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=getattr(pytest.mark, markers.SERVERS)),
                        pytest.param("postgres", marks=getattr(pytest.mark, markers.SERVERS))])
def env(request: pytest.FixtureRequest, make_env: Callable[..., Env], tmp_path: Path) -> Env:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    elif request.param == "redis":
        url = request.getfixturevalue("redis_server").url()
    else:
        url = request.getfixturevalue("postgres_url")
    return make_env("control_app", fields=(int, int, float), CT_URL=url)


def cli(env: Env, *args: str) -> str:
    done = env.run([str(bin_path("flask")), "--app", "control_app", "memqueue", *args])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def enqueue(env: Env, n: int, offset: int = 0, seconds: float = 0.0) -> None:
    proc = env.main(f"enqueue{offset}", "enqueue", str(n), CT_OFFSET=str(offset), CT_SECONDS=str(seconds))
    assert proc.wait(DEADLINE) == 0, env.output(f"enqueue{offset}")


def observe(seconds: float) -> None:
    """Let ``seconds`` pass (the window in which nothing may start), bounded."""
    until = time.time() + seconds
    wait_until(lambda: time.time() >= until, seconds + 5)


def test_a_pause_stops_every_worker_within_a_second_resume_runs_all_once_and_a_restart_keeps_it(env: Env) -> None:
    enqueue(env, 2000, seconds=0.01)
    workers = [env.worker(f"worker{k}") for k in range(3)]
    wait_until(lambda: len({pid for _, pid, _ in env.lines("run")}) == 3, DEADLINE,
               lambda: f"every worker running jobs: {Counter(pid for _, pid, _ in env.lines('run'))}")
    assert "queue default paused" in cli(env, "pause", "default")
    paused_at = time.time()  # the pause was written before the command returned
    observe(OBEYED_WITHIN + 1.0)
    runs = env.lines("run")
    late = [(n, pid, round(t - paused_at, 3)) for n, pid, t in runs if t > paused_at + OBEYED_WITHIN]
    assert late == [], f"jobs started more than {OBEYED_WITHIN} s after the pause: {late[:10]}"
    assert len(runs) < 2000, "the test needs jobs left waiting at the pause"
    assert all(w.poll() is None for w in workers)

    assert "queue default resumed" in cli(env, "resume", "default")
    wait_until(lambda: len(env.lines("run")) >= 2000, DEADLINE, lambda: f"2,000 runs (have {len(env.lines('run'))})")
    counts = Counter(n for n, _, _ in env.lines("run"))
    assert set(counts) == set(range(2000)) and max(counts.values()) == 1

    # a restart keeps the pause: the state is the store's
    cli(env, "pause", "default")
    for k, w in enumerate(workers):
        env.stop(w, f"worker{k}")
    again = env.worker("again")
    enqueue(env, 10, offset=5000)
    observe(OBEYED_WITHIN + 0.5)
    assert [n for n, _, _ in env.lines("run") if n >= 5000] == []
    cli(env, "resume", "default")
    wait_until(lambda: len([n for n, _, _ in env.lines("run") if n >= 5000]) == 10, DEADLINE,
               lambda: env.output("again"))
    env.stop(again, "again")
