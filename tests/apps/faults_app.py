"""A small app for the fault tests that start real servers (``tests/test_faults.py``).

Run by :class:`support.harness.Env` from a temporary directory: ``flask --app
'faults_app:create_app()' run``, ``gunicorn 'faults_app:create_app()'``,
``flask memqueue worker``. Besides what :mod:`support.base_app` gives every
app, everything comes from the environment:

- ``FA_JOURNAL``: a journal file (unset: memory); ``FA_SHUTDOWN_TIMEOUT``: seconds.
- ``runs.log`` gets ``ran <n> <pid>`` for ``record``, ``start``/``done <gate> <pid>`` for ``block``.

``POST /fill`` with ``{"n": 20, "gate": "g"}`` enqueues a ``block`` job
that waits for the gate file ``g``, waits until the consumer runs it, then
enqueues ``n`` ``record`` jobs behind it and answers with their ids.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, jsonify, request
from support.base_app import GATE_TIMEOUT, log, new_app, pass_gate

from flask_memqueue import MemQueue

mq = MemQueue()
_blocking = threading.Event()


@mq.task(name="block")
def block(gate: str) -> str:
    log("start", gate, os.getpid())
    _blocking.set()
    pass_gate(gate)
    log("done", gate, os.getpid())
    return gate


@mq.task(name="record")
def record(n: int) -> int:
    log("ran", n, os.getpid())
    return n


def create_app() -> Flask:
    config: dict[str, Any] = {"MEMQUEUE_JOURNAL": os.environ["FA_JOURNAL"]} if os.environ.get("FA_JOURNAL") else {}
    app = new_app("faults_app", mq, TESTING=True, MEMQUEUE_MAXSIZE=0,
                   MEMQUEUE_SHUTDOWN_TIMEOUT=float(os.environ.get("FA_SHUTDOWN_TIMEOUT", "10")), **config)

    @app.post("/fill")
    def fill() -> Any:
        data = request.get_json()
        blocker = mq.enqueue(block, data["gate"])
        if not _blocking.wait(GATE_TIMEOUT):
            return jsonify(error="the block job never started"), 500
        ids = [mq.enqueue(record, i).id for i in range(int(data["n"]))]
        return jsonify(blocker=blocker.id, ids=ids, pid=os.getpid())

    return app
