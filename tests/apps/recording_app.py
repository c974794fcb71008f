"""example_app, plus a record of which process ran which job: for the gunicorn tests.

Served as ``recording_app:app`` by :class:`support.harness.Env`, from a
temporary directory holding copies of this file and example_app, with what
:mod:`support.base_app` gives every app. In the data folder:

- ``runs.log`` gets ``start <job id> <pid>`` and ``done <job id> <pid>``
  (from the job signals), and ``held <gate> <pid>`` from the hold route;
- ``imports.log`` gets one JSON line per process that imported this module:
  its pid, the jobs it queued at import time, and where example_app came from.

Under ``gunicorn --preload`` the import, and so the jobs queued by it, happen
once, in the master, before it forks the workers; without ``--preload`` in
every worker. The first of those jobs waits for the gate ``import-gate``, so
the second is certainly still queued when the master forks.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask
from support.base_app import add_test_routes, log, pass_gate

import example_app
from example_app import create_app
from example_app.tasks import mq
from flask_memqueue import Job, job_started, job_succeeded


@mq.task
def gated(gate: str) -> str:
    """A job that blocks its consumer until the test opens ``gate``."""
    pass_gate(gate)
    return gate


def on_started(sender: Flask, job: Job, **extra: Any) -> None:
    log("start", job.id, os.getpid())


def on_succeeded(sender: Flask, job: Job, **extra: Any) -> None:
    log("done", job.id, os.getpid())


app = create_app()
add_test_routes(app)
job_started.connect(on_started, sender=app)
job_succeeded.connect(on_succeeded, sender=app)

with app.app_context():
    _import_jobs = [gated.delay("import-gate").id, mq.produce("queued at import").id]
log(json.dumps({"pid": os.getpid(), "jobs": _import_jobs, "example_app": example_app.__file__}), file="imports.log")
