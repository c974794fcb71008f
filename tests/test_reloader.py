"""The Werkzeug reloader, with real processes: ``flask run --debug`` and ``app.run(debug=True)``.

The reloader runs two processes: a *watcher*, which loads the app (so
``create_app()`` and ``init_app`` run in it) but only restarts its child,
and the *serving child*, restarted on every code change. The consumer must
run in the serving child, exactly once, and never in the watcher.

example_app is copied to a temporary directory and served from there, so
touching one of its files never changes the repository. Linux only: the
watcher serves nothing, so its threads are read from ``/proc``.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest
from support.harness import RELOADER_EXCLUDE, ROOT, edit_source
from support.net import http
from support.processes import FLASK_READY, Server, flask_run, parent_pid, start_server, threads_of
from support.waiting import wait_until

CONSUMER_NAME = "memqueue-consumer[example_app]"
DEADLINE = 15.0

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads threads from /proc (Linux)"),
]

# The copied example_app, which the test edits, is not under the checkout that
# RELOADER_EXCLUDE leaves out.
EXCLUDE = RELOADER_EXCLUDE

SERVE_SCRIPT = f"""\
from example_app import create_app

app = create_app({{"DEBUG": True}})

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=0, debug=True, exclude_patterns=[{EXCLUDE!r}])
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A copy of example_app (and a script calling app.run) to serve from."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "example_app", src / "example_app", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "serve.py").write_text(SERVE_SCRIPT)
    return src


def start_flask_cli(app_dir: Path, log: Path) -> Server:
    return flask_run("example_app", cwd=app_dir, log_path=log, args=["--exclude-patterns", EXCLUDE])


def start_app_run(app_dir: Path, log: Path) -> Server:
    return start_server([sys.executable, "serve.py"], ready=FLASK_READY, cwd=app_dir, log_path=log)


def get_json(server: Server, path: str) -> Any:
    r = http("GET", server.url + path)
    assert r.status == 200, f"GET {path}: {r.status} {r.text}\n{server.describe()}"
    return r.json()


def check_one_consumer_in_child(server: Server) -> int:
    """Exactly one consumer thread in the serving child, none in the watcher; returns the child's pid."""
    info = get_json(server, "/memqueue/threads")
    serving = info["pid"]
    consumers = [t for t in info["threads"] if t["is_consumer"]]
    named = [t for t in info["threads"] if t["name"] == CONSUMER_NAME]
    assert len(consumers) == 1, info
    assert named == consumers, f"a consumer thread that is not the legitimate one runs: {info}"
    assert info["consumer"]["alive"] and info["consumer"]["ident"] == consumers[0]["ident"]

    # The structure: the watcher is the process we started, the serving child its child.
    watcher = server.pid
    assert serving != watcher
    assert parent_pid(serving) == watcher
    assert sorted(server.processes()) == sorted([watcher, serving])

    # The watcher serves no request, so /threads cannot speak for it: read /proc.
    # Python < 3.14 does not give threads an OS-level name (and Linux keeps 15
    # characters of one), so the reliable fact is the count: the watcher only
    # waits for its child, on its main thread, and a consumer would be a second
    # thread. (Where Python does pass names on, they are checked too.)
    names = threads_of(watcher)
    assert len(names) == 1, f"the watcher {watcher} runs {len(names)} threads: {names}"
    assert not any(n.startswith("memqueue") for n in names), names
    return serving  # type: ignore[no-any-return]


def wait_for_job(server: Server, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = get_json(server, f"/memqueue/jobs/{job_id}")
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job = wait_until(finished, DEADLINE, lambda: f"job {job_id} to finish: {server.describe()}")
    assert job["status"] == "succeeded", job
    return job


def check_jobs_processed(server: Server, tag: str) -> list[str]:
    """Messages through /memqueue/produce and a job queued by example_app's view all run."""
    ids = []
    for i in range(3):
        r = http("POST", server.url + "/memqueue/produce", json={"message": f"{tag}-{i}"})
        assert r.status == 202, r.text
        ids.append(r.json()["id"])
    r = http("POST", server.url + "/memqueue/produce", json={"message": tag, "topic": "greetings"})
    assert r.status == 202, r.text
    greeting = r.json()["id"]
    # example_app's view calls the module-level enqueue() and redirects to the index.
    r = http("POST", server.url + "/jobs/flaky", data=b"failures=0",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 303, r.text
    view_job = r.headers["Location"].partition("job=")[2]
    assert view_job

    for i, job_id in enumerate(ids):
        assert wait_for_job(server, job_id)["result"] == {"received": f"{tag}-{i}"}
    assert wait_for_job(server, greeting)["result"] == f"hello, {tag}!"
    assert wait_for_job(server, view_job)["result"] == "succeeded on attempt 1"
    return [*ids, greeting, view_job]


@pytest.mark.parametrize("start", [start_flask_cli, start_app_run], ids=["flask-run-debug", "app-run-debug"])
def test_reloader_one_consumer_in_serving_child(
    app_dir: Path, tmp_path: Path, start: Callable[[Path, Path], Server]
) -> None:
    with start(app_dir, tmp_path / "server.log") as server:
        first = check_one_consumer_in_child(server)
        old_ids = check_jobs_processed(server, "before")

        edit_source(app_dir / "example_app" / "tasks.py")

        def reloaded() -> int | None:
            try:
                r = http("GET", server.url + "/memqueue/health", timeout=5)
            except (OSError, HTTPException):  # the old child went away mid-request
                return None
            pid = r.json().get("pid") if r.status == 200 else None
            return pid if pid not in (None, first) else None

        wait_until(reloaded, DEADLINE, lambda: f"the reload: {server.describe()}")
        assert "Detected change in" in server.output() and "tasks.py" in server.output()

        second = check_one_consumer_in_child(server)
        assert second != first
        check_jobs_processed(server, "after")
        # Jobs live in the process that enqueued them: the old child's are gone with it.
        assert http("GET", server.url + f"/memqueue/jobs/{old_ids[0]}").status == 404

    assert not server.alive()


POOLS = {"default": 2, "emails": 3}


def check_pools_in_child(server: Server) -> int:
    """The serving child runs exactly the declared threads per queue; the watcher none. Returns the child."""
    info = get_json(server, "/memqueue/threads")
    consumers = [t for t in info["threads"] if t["is_consumer"]]
    per_queue: dict[str, int] = {}
    for t in consumers:
        per_queue[t["queue"]] = per_queue.get(t["queue"], 0) + 1
    assert per_queue == POOLS, info
    named = sorted(t["name"] for t in info["threads"] if t["name"].startswith("memqueue-consumer"))
    assert named == sorted(t["name"] for t in consumers), f"a consumer thread nobody recorded runs: {info}"
    assert [t for t in info["consumer"]["threads"] if not t["alive"]] == []
    serving = info["pid"]
    watcher = server.pid
    assert parent_pid(serving) == watcher
    names = threads_of(watcher)
    assert len(names) == 1, f"the watcher {watcher} runs {len(names)} threads: {names}"
    return serving  # type: ignore[no-any-return]


def test_reloader_pools_per_queue_in_serving_child_only(app_dir: Path, tmp_path: Path) -> None:
    env = {"FLASK_MEMQUEUE_QUEUES": json.dumps(POOLS)}
    with flask_run("example_app", cwd=app_dir, log_path=tmp_path / "server.log",
                   args=["--exclude-patterns", EXCLUDE], env=env) as server:
        first = check_pools_in_child(server)
        check_jobs_processed(server, "before")
        edit_source(app_dir / "example_app" / "tasks.py")

        def reloaded() -> int | None:
            try:
                r = http("GET", server.url + "/memqueue/health", timeout=5)
            except (OSError, HTTPException):
                return None
            pid = r.json().get("pid") if r.status == 200 else None
            return pid if pid not in (None, first) else None

        wait_until(reloaded, DEADLINE, lambda: f"the reload: {server.describe()}")
        assert check_pools_in_child(server) != first
        check_jobs_processed(server, "after")
    assert not server.alive()
