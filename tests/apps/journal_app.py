"""A small app with a journal, for the tests that start real processes.

Copied into a temporary directory and run from there (``flask --app
journal_app``, ``gunicorn 'journal_app:create_app()'``, or ``python -c
"import journal_app; journal_app.main()" <mode> ...``). Everything comes from
the environment:

- ``JT_JOURNAL``: the journal file; ``JT_DIR``: where ``runs.log`` and gate
  files live; ``JT_CONSUMER``: "0" for an enqueue-only process.
- ``runs.log`` gets one line per event, written with one ``O_APPEND`` write
  so lines of several processes never mix: ``run <n> <pid>`` for ``record``,
  ``start``/``done <n> <pid>`` for ``block``, ``held <token> <pid>`` for a
  request blocking in ``/hold``.
- A job or a request that waits for a gate waits for a file of that name in
  ``JT_DIR``, at most :data:`GATE_TIMEOUT` seconds.

Every response carries ``X-Pid``, the pid of the process that served it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from flask_memqueue import MemQueue

mq = MemQueue()
GATE_TIMEOUT = 30.0


def _dir() -> Path:
    return Path(os.environ["JT_DIR"])


def log(*fields: object) -> None:
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(_dir() / "runs.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def wait_for_gate(gate: str) -> bool:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (_dir() / gate).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@mq.task(name="record", retries=1, retry_delay=0.01)
def record(n: int, hold: int = -1) -> int:
    """Log a run; job number ``hold`` waits for the gate ``hold`` (in the first process only)."""
    log("run", n, os.getpid())
    if n == hold and os.environ.get("JT_HOLD") == "1":
        log("holding", n, os.getpid())
        wait_for_gate("hold")
    return n


@mq.task(name="block", retries=1, retry_delay=0.01)
def block(n: int, gate: str) -> int:
    log("start", n, os.getpid())
    if not wait_for_gate(gate):
        raise TimeoutError(f"gate {gate} never opened")
    log("done", n, os.getpid())
    return n


@mq.task(name="ordered", queue="reports")
def ordered(n: int) -> int:
    """Log the order jobs of the ``reports`` queue run in."""
    log("ordered", n, os.getpid())
    return n


def create_app() -> Flask:
    app = Flask("journal_app", instance_path=str(_dir() / "instance"))
    app.config.update(
        TESTING=True,
        MEMQUEUE_JOURNAL=os.environ["JT_JOURNAL"],
        MEMQUEUE_CONSUMER=os.environ.get("JT_CONSUMER", "1") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=0.5,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_MAX_FINISHED=100_000,
        MEMQUEUE_QUEUES=json.loads(os.environ.get("JT_QUEUES", '{"default": 1}')),
    )
    mq.init_app(app)

    @app.after_request
    def pid_header(response: Response) -> Response:
        response.headers["X-Pid"] = str(os.getpid())
        return response

    @app.get("/pid")
    def pid() -> Any:
        return jsonify(pid=os.getpid())

    @app.post("/enqueue")
    def enqueue() -> Any:
        data = request.get_json()
        options = mq.options(queue=data.get("queue"), priority=data.get("priority"))
        job = options.enqueue(data["task"], *data.get("args", []))
        return jsonify(id=job.id, pid=os.getpid())

    @app.get("/hold/<token>")
    def hold(token: str) -> Any:
        """Keep this (sync) worker busy until the gate ``release-<token>`` opens."""
        log("held", token, os.getpid())
        wait_for_gate(f"release-{token}")
        return jsonify(pid=os.getpid())

    return app


def main() -> None:
    """``main <mode> [n]``: modes ``enqueue`` (n jobs, then exit), ``run`` (enqueue n, then
    consume until nothing is left), ``drain`` (consume until nothing is left)."""
    mode = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    hold = int(os.environ.get("JT_HOLD_AT", "-1"))
    threads = int(os.environ.get("JT_THREADS", "1"))
    app = create_app()
    with app.app_context():
        if mode in ("enqueue", "run"):
            offset = int(os.environ.get("JT_OFFSET", "0"))

            def produce(part: range) -> None:
                with app.app_context():
                    for i in part:
                        mq.enqueue(record, i, hold=hold)

            parts = [range(offset + k, offset + n, threads) for k in range(threads)]
            workers = [threading.Thread(target=produce, args=(p,)) for p in parts]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            log("enqueued", n, os.getpid())
        if mode in ("run", "drain"):
            mq.queue_for(app).ensure_consumer()
            if not mq.join(timeout=60):
                sys.exit("jobs left after 60 s")
            log("drained", os.getpid())
        mq.shutdown(timeout=5)
