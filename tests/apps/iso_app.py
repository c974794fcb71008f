"""A small app of isolated jobs (``@mq.task(isolated=True)``), for tests in one process and in real processes.

In-process tests import it as ``apps.iso_app`` (``tests/`` is on ``sys.path``)
and call :func:`create_app`; the process tests run it from a temporary
``src/`` as ``iso_app`` (:class:`support.harness.Env`) under ``flask run
--debug``, gunicorn ``--preload`` and ``flask memqueue worker``. Either way
the child process of an isolated job finds the app by itself: ``init_app``
is called (through :func:`support.base_app.new_app`) by :func:`create_app`,
a factory with no arguments, which the child imports and calls again.

Settings from the environment: ``ISO_URL`` (``MEMQUEUE_STORAGE``, default
memory), ``ISO_THREADS`` (threads of the default queue), ``ISO_MAX_JOBS``
(``MEMQUEUE_MAX_JOBS_PER_CHILD``), ``ISO_CONSUMER`` ("0": runs no jobs), ``ISO_AUTOSTART``
("1": ``MEMQUEUE_AUTOSTART``).
``runs.log`` gets ``start <n> <pid>`` when a job that waits starts.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from typing import Any

from flask import Flask, current_app, jsonify
from support.base_app import log, new_app, pass_gate

from flask_memqueue import MemQueue, current_job

mq = MemQueue()
#: Longer than any test waits: a job the test forgets ends, never hangs.
LIMIT = 60.0


@mq.task(name="iso_add", isolated=True)
def add(a: int, b: int) -> dict[str, Any]:
    """The result, where it ran, and what its app context holds."""
    current_job.set_progress(0.5, "half way")
    return {"sum": a + b, "pid": os.getpid(), "greeting": current_app.config["ISO_GREETING"],
            "extension": "memqueue" in current_app.extensions, "job": current_job.id,
            "attempt": current_job.attempts}


@mq.task(name="iso_boom", isolated=True)
def boom(text: str) -> None:
    raise ValueError(text)


@mq.task(name="iso_kill", isolated=True)
def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@mq.task(name="iso_segv", isolated=True)
def segfault() -> None:
    ctypes.string_at(0)


@mq.task(name="iso_hog", isolated=True, memory_limit="256M")
def hog(mib: int) -> int:
    """Allocate ``mib`` MiB, touched."""
    block = bytearray(mib * 1024 * 1024)
    return len(block)


@mq.task(name="iso_sleep", isolated=True)
def sleep(n: int) -> None:
    """A C-level sleep: an asynchronous exception could not end it; a kill does."""
    log("start", n, os.getpid())
    time.sleep(LIMIT)


@mq.task(name="iso_wait", isolated=True)
def wait(n: int, gate: str) -> int:
    """Log its start, then wait for ``gate`` (never looking at abort requests)."""
    log("start", n, os.getpid())
    pass_gate(gate, LIMIT)
    return os.getpid()


@mq.task(name="iso_hold", isolated=True, retries=1, retry_delay=0)
def hold(n: int, gate: str) -> int:
    """:func:`wait`, with a retry: a job taken over from a dead worker runs again (its attempt counted)."""
    return wait(n, gate)


@mq.task(name="iso_polite", isolated=True)
def polite(n: int) -> str:
    """Returns as soon as it sees ``current_job.abort_requested``."""
    log("start", n, os.getpid())
    deadline = time.monotonic() + LIMIT
    while not current_job.abort_requested:
        if time.monotonic() > deadline:
            raise TimeoutError("no abort came")
        time.sleep(0.01)
    log("saw", n, os.getpid())
    return "stopped"


@mq.task(name="iso_flaky", isolated=True, retries=1, retry_delay=0)
def flaky() -> int:
    if current_job.attempts < 2:
        raise RuntimeError("first attempt fails")
    return current_job.attempts


@mq.task(name="iso_pid", isolated=True)
def pid() -> int:
    return os.getpid()


@mq.task(name="plain_pid")
def plain_pid() -> int:
    return os.getpid()


@mq.task(name="iso_consumers", isolated=True)
def consumers() -> bool:
    """Whether the child's own queue runs a consumer (never: even with MEMQUEUE_AUTOSTART)."""
    return bool(current_app.extensions["memqueue"].consumer_alive)


@mq.task(name="iso_object", isolated=True)
def returns_object() -> object:
    return object()


def create_app() -> Flask:
    app = new_app(
        "iso_app", mq,
        TESTING=True,
        ISO_GREETING="hello from the config",
        MEMQUEUE_STORAGE=os.environ.get("ISO_URL", "memory://"),
        MEMQUEUE_QUEUES={"default": int(os.environ.get("ISO_THREADS", "2"))},
        MEMQUEUE_CONSUMER=os.environ.get("ISO_CONSUMER", "1") == "1",
        MEMQUEUE_AUTOSTART=os.environ.get("ISO_AUTOSTART") == "1",
        MEMQUEUE_MAX_JOBS_PER_CHILD=int(os.environ.get("ISO_MAX_JOBS", "100")),
        MEMQUEUE_GRACE_PERIOD=0.5,
        MEMQUEUE_SHUTDOWN_TIMEOUT=2.0,
    )

    @app.post("/iso/add/<int:a>/<int:b>")
    def http_add(a: int, b: int) -> Any:
        """An HTTP enqueue of an isolated job, answered with its result."""
        return jsonify({**add.delay(a, b).wait(timeout=LIMIT), "web": os.getpid()})

    return app


def main() -> None:
    """In a process that runs no jobs (``ISO_CONSUMER=0``): ``enqueue <n> <gate>`` queues
    ``iso_hold(n, gate)`` and prints its id; ``abort <id>`` prints what ``mq.abort`` returned;
    ``show <id>`` prints the stored job as JSON."""
    app = create_app()
    with app.app_context():
        if sys.argv[1] == "enqueue":
            print(hold.delay(int(sys.argv[2]), sys.argv[3]).id, flush=True)
        elif sys.argv[1] == "abort":
            print(mq.abort(sys.argv[2], by="the test"), flush=True)
        elif sys.argv[1] == "show":
            job = mq.get_job(sys.argv[2])
            print(json.dumps(None if job is None else job.to_dict()), flush=True)
        mq.shutdown(timeout=5)
