"""gunicorn with 2 sync workers, ``--preload`` and without, as real processes.

Under ``--preload`` the master imports the app, then forks the workers; a
worker inherits a copy of the master's memory, queued jobs included. Each
process must run its own jobs, exactly once: a worker runs the jobs of the
requests it accepted, and the master runs the jobs it queued at import.
Without ``--preload`` each worker imports the app, and runs what it queued.

The app is tests/apps/recording_app.py (example_app plus a log of which process
started and finished which job). Which worker accepts a connection is the
kernel's choice, so the test makes it certain: a sync worker serves one
request at a time, and while one worker is held in ``/_test/hold/<gate>``
every new connection goes to the other (:class:`support.harness.Hold`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.harness import Env, Hold
from support.net import http
from support.processes import Server, parent_pid
from support.waiting import wait_until

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 15.0
JOBS_PER_WORKER = 5

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env("recording_app", target="recording_app:app", copy=["example_app"], FLASK_MEMQUEUE_TOKEN=TOKEN)


def consumer_names(threads: int) -> list[str]:
    """The consumer threads a process of example_app runs with ``threads`` on the default queue."""
    if threads == 1:
        return ["memqueue-consumer[example_app]"]
    return [f"memqueue-consumer[example_app:default#{i}]" for i in range(threads)]


def produce_on_free_worker(
    server: Server, held: int, tag: str, accepted: dict[str, int], threads: int = 1
) -> None:
    """Produce messages while worker ``held`` is busy; adds {job id: pid that accepted it} to ``accepted``."""
    for i in range(JOBS_PER_WORKER):
        r = http("POST", server.url + "/memqueue/produce", json={"message": f"{tag}-{i}"}, headers=AUTH)
        assert r.status == 202, r.text
        pid = int(r.headers["X-Pid"])
        assert pid != held
        job_id = r.json()["id"]
        assert job_id not in accepted, f"job id {job_id} was given out twice (by {accepted[job_id]} and {pid})"
        accepted[job_id] = pid
    # The worker that accepted them has its own pool of consumers, none inherited.
    info = http("GET", server.url + "/memqueue/threads", headers=AUTH).json()
    assert info["pid"] != held
    assert sorted(t["name"] for t in info["threads"] if t["is_consumer"]) == consumer_names(threads)
    assert sum(t["name"].startswith("memqueue-consumer") for t in info["threads"]) == threads, info


def read_imports(env: Env) -> list[dict[str, Any]]:
    path = env.path("imports.log")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    ("preload", "threads"), [(True, 1), (False, 1), (True, 3)], ids=["preload", "no-preload", "preload-pool-of-3"]
)
def test_each_process_runs_its_own_jobs_once(env: Env, preload: bool, threads: int) -> None:
    with env.gunicorn(workers=2, preload=preload, env={"FLASK_MEMQUEUE_QUEUES": json.dumps({"default": threads})},
                      ready_path="/memqueue/health") as server:
        master = server.pid
        # Who imported the app: the master once with --preload, else each worker.
        importers = 1 if preload else 2

        def imported() -> list[dict[str, Any]] | None:
            found = read_imports(env)
            return found if len(found) == importers else None

        imports = wait_until(imported, DEADLINE, lambda: f"{importers} import(s) of the app: {server.describe()}")
        assert all(imp["example_app"].startswith(str(env.src)) for imp in imports), imports
        if preload:
            assert [imp["pid"] for imp in imports] == [master], "under --preload the master imports the app"
        expected: dict[str, int] = {}  # job id -> the pid that queued it, and so must run it
        for imp in imports:
            gated_job, message = imp["jobs"]
            expected |= {gated_job: imp["pid"], message: imp["pid"]}
            # The importer's consumer holds its first job until the test opens the gate,
            # so under --preload its second job was still queued when the workers were forked.
            wait_until(lambda: ["start", gated_job, str(imp["pid"])] in env.events(), DEADLINE,  # noqa: B023
                       lambda: f"the import-time job to start in {imp['pid']}: {server.describe()}")  # noqa: B023

        accepted: dict[str, int] = {}
        first = Hold(server, env, "gate-1")
        produce_on_free_worker(server, first.pid, "a", accepted, threads)
        second = Hold(server, env, "gate-2")  # the only free worker is the other one
        assert second.pid != first.pid
        first.release()
        produce_on_free_worker(server, second.pid, "b", accepted, threads)
        second.release()

        workers = {first.pid, second.pid}
        assert set(accepted.values()) == workers
        assert master not in workers and all(parent_pid(pid) == master for pid in workers)
        assert sorted(server.processes()) == sorted([master, *workers])
        if not preload:
            assert {imp["pid"] for imp in imports} == workers

        assert not set(accepted) & set(expected)
        expected |= accepted
        env.open_gate("import-gate")
        wait_until(lambda: {e[1] for e in env.events("done")} >= set(expected), DEADLINE,
                   lambda: f"every job to finish; log: {env.events()}; {server.describe()}")

    # Stopped: every process drained its queue at exit, so the log is complete.
    assert not server.alive()
    events = env.events()
    starts = Counter(e[1] for e in events if e[0] == "start")
    assert set(starts) == set(expected), f"jobs that nobody queued ran: {set(starts) - set(expected)}"
    assert [job for job, n in starts.items() if n != 1] == [], f"jobs started more than once: {starts}"
    for _, job, pid in (e for e in events if e[0] in ("start", "done")):
        assert int(pid) == expected[job], f"job {job} ran in {pid}, not in {expected[job]}, which queued it"
