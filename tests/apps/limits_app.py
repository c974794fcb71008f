"""A small app for time limits and aborts across processes, on whichever shared store ``LT_URL`` names.

Run by :class:`support.harness.Env` from a temporary directory as ``flask
--app limits_app memqueue worker`` (the process that runs the jobs), ``flask
--app limits_app memqueue abort ID`` (another process that asks one to stop)
and ``python -c "import limits_app; limits_app.main()" <mode> ...``:

- ``enqueue <task> <n>``: queue ``<task>(n)`` and print its id;
- ``abort <id>``: ``mq.abort(id, by="the test")`` and print what it returned;
- ``show <id>``: print the stored job as JSON (``to_dict()``).

``LT_URL`` is ``MEMQUEUE_STORAGE`` (sqlite:///, redis://, postgresql://);
``LT_CONSUMER`` "0" for a process that runs no jobs. ``runs.log`` gets
``start <n> <pid>`` when a job starts, ``saw <n> <pid>`` when ``polite`` sees
the request, ``interrupted <n> <exception>`` when an exception ends ``stubborn``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from flask import Flask
from support.base_app import log, new_app, pass_gate

from flask_memqueue import MemQueue, current_job

mq = MemQueue()
#: Longer than any test waits: a job the test forgets ends failed, never hangs.
LIMIT = 60.0


@mq.task(name="polite")
def polite(n: int) -> int:
    """Cooperative: returns as soon as it sees ``current_job.abort_requested``."""
    log("start", n, os.getpid())
    deadline = time.monotonic() + LIMIT
    while not current_job.abort_requested:
        if time.monotonic() > deadline:
            raise TimeoutError("no abort came")
        time.sleep(0.01)
    log("saw", n, os.getpid())
    return n


@mq.task(name="stubborn")
def stubborn(n: int) -> int:
    """Never looks: waits for a gate no test opens, in 10 ms sleeps an async exception ends."""
    log("start", n, os.getpid())
    try:
        pass_gate(f"never-{n}", LIMIT)
    except BaseException as exc:
        log("interrupted", n, type(exc).__name__)
        raise
    return n


def create_app() -> Flask:
    return new_app(
        "limits_app", mq,
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ["LT_URL"],
        MEMQUEUE_CONSUMER=os.environ.get("LT_CONSUMER", "1") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=0.5,
        MEMQUEUE_GRACE_PERIOD=float(os.environ.get("LT_GRACE", "1")),
    )


def main() -> None:
    mode = sys.argv[1]
    app = create_app()
    with app.app_context():
        if mode == "enqueue":
            task = {"polite": polite, "stubborn": stubborn}[sys.argv[2]]
            job = mq.enqueue(task, int(sys.argv[3]))
            print(job.id, flush=True)
        elif mode == "abort":
            print(mq.abort(sys.argv[2], by="the test"), flush=True)
        elif mode == "show":
            job = mq.get_job(sys.argv[2])
            print(json.dumps(None if job is None else job.to_dict()), flush=True)
        mq.shutdown(timeout=5)
