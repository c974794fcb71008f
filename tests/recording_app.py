"""example_app, plus a record of which process ran which job: for the gunicorn tests.

Served as ``recording_app:app`` from a temporary directory holding copies of
this file and example_app. ``MEMQUEUE_TEST_DIR`` names a directory where:

- ``runs.log`` gets one line per event, each written with one ``O_APPEND``
  write so lines of several processes never mix: ``start <job id> <pid>``
  and ``done <job id> <pid>`` (from the job signals), and ``held <pid>
  <gate>`` when a request blocks in ``/_test/hold/<gate>``;
- a file named like a gate, once the test creates it, opens that gate;
- ``imports.log`` gets one JSON line per process that imported this module:
  its pid, the jobs it queued at import time, and where example_app came from.

Under ``gunicorn --preload`` the import, and so the jobs queued by it, happen
once, in the master, before it forks the workers; without ``--preload`` in
every worker. The first of those jobs waits for the gate ``import-gate``, so
the second is certainly still queued when the master forks.

Every response carries ``X-Worker-Pid``, the pid of the process that served it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response

import example_app
from example_app import create_app
from example_app.tasks import mq
from flask_memqueue import Job, job_started, job_succeeded

DIR = Path(os.environ["MEMQUEUE_TEST_DIR"])
LOG = DIR / "runs.log"
#: How long a gate waits at most: nothing blocks forever if a test fails.
GATE_TIMEOUT = 15.0


def append(path: Path, line: str) -> None:
    """One write with O_APPEND: lines of several processes never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record(*fields: object) -> None:
    append(LOG, " ".join(str(f) for f in fields))


def wait_for_gate(gate: str) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (DIR / gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate!r} was not opened within {GATE_TIMEOUT} s")
        time.sleep(0.01)


@mq.task
def gated(gate: str) -> str:
    """A job that blocks its consumer until the test opens ``gate``."""
    wait_for_gate(gate)
    return gate


def on_started(sender: Flask, job: Job, **extra: Any) -> None:
    record("start", job.id, os.getpid())


def on_succeeded(sender: Flask, job: Job, **extra: Any) -> None:
    record("done", job.id, os.getpid())


app = create_app()
job_started.connect(on_started, sender=app)
job_succeeded.connect(on_succeeded, sender=app)


@app.get("/_test/hold/<gate>")
def hold(gate: str) -> dict[str, Any]:
    """Keep this worker busy until ``gate`` opens (a sync worker serves one request at a time)."""
    record("held", os.getpid(), gate)
    wait_for_gate(gate)
    return {"pid": os.getpid()}


@app.after_request
def add_pid(response: Response) -> Response:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


with app.app_context():
    _import_jobs = [gated.delay("import-gate").id, mq.produce("queued at import").id]
append(DIR / "imports.log", json.dumps({"pid": os.getpid(), "jobs": _import_jobs, "example_app": example_app.__file__}))
