"""A small app for the fault tests that start real servers (``tests/test_faults.py``).

Copied into a temporary directory and run from there: ``flask --app
faults_app run``, ``gunicorn 'faults_app:create_app()'``, ``flask --app
faults_app memqueue worker``. Everything comes from the environment:

- ``FA_DIR``: where ``runs.log`` and gate files live; ``FA_JOURNAL``: a
  journal file (unset: memory); ``FA_SHUTDOWN_TIMEOUT``: seconds.
- ``runs.log`` gets one line per event, one ``O_APPEND`` write each:
  ``ran <n> <pid>`` for ``record``, ``start``/``done <gate> <pid>`` for ``block``.

``POST /fill`` with ``{"n": 20, "gate": "g"}`` enqueues a ``block`` job
that waits for the gate file ``g``, waits until the consumer runs it, then
enqueues ``n`` ``record`` jobs behind it and answers with their ids.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from flask_memqueue import MemQueue

mq = MemQueue()
GATE_TIMEOUT = 30.0
_blocking = threading.Event()


def _dir() -> Path:
    return Path(os.environ["FA_DIR"])


def log(*fields: object) -> None:
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(_dir() / "runs.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@mq.task(name="block")
def block(gate: str) -> str:
    log("start", gate, os.getpid())
    _blocking.set()
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (_dir() / gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    log("done", gate, os.getpid())
    return gate


@mq.task(name="record")
def record(n: int) -> int:
    log("ran", n, os.getpid())
    return n


def create_app() -> Flask:
    app = Flask("faults_app", instance_path=str(_dir() / "instance"))
    app.config.update(
        TESTING=True,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_SHUTDOWN_TIMEOUT=float(os.environ.get("FA_SHUTDOWN_TIMEOUT", "10")),
    )
    if os.environ.get("FA_JOURNAL"):
        app.config["MEMQUEUE_JOURNAL"] = os.environ["FA_JOURNAL"]
    mq.init_app(app)

    @app.post("/fill")
    def fill() -> Any:
        data = request.get_json()
        blocker = mq.enqueue(block, data["gate"])
        if not _blocking.wait(GATE_TIMEOUT):
            return jsonify(error="the block job never started"), 500
        ids = [mq.enqueue(record, i).id for i in range(int(data["n"]))]
        return jsonify(blocker=blocker.id, ids=ids, pid=os.getpid())

    return app
