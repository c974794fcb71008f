"""A small app with a journal, for the tests that start real processes.

Run by :class:`support.harness.Env` from a temporary directory (``flask --app
journal_app``, ``gunicorn 'journal_app:create_app()'``, or ``python -c
"import journal_app; journal_app.main()" <mode> ...``). Besides what
:mod:`support.base_app` gives every app, everything comes from the environment:

- ``JT_JOURNAL``: the journal file; ``JT_CONSUMER``: "0" for an enqueue-only
  process; ``JT_QUEUES``: ``MEMQUEUE_QUEUES`` as JSON.
- ``runs.log`` gets ``run <n> <pid>`` for ``record``, ``start``/``done <n> <pid>``
  for ``block``, ``ordered <n> <pid>`` for ``ordered``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from flask import Flask, jsonify, request
from support.base_app import command_line, enqueue_in_threads, log, new_app, pass_gate, wait_for_gate

from flask_memqueue import MemQueue

mq = MemQueue()


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
    pass_gate(gate)
    log("done", n, os.getpid())
    return n


@mq.task(name="ordered", queue="reports")
def ordered(n: int) -> int:
    """Log the order jobs of the ``reports`` queue run in."""
    log("ordered", n, os.getpid())
    return n


# retries=3: the kill tests take a member (a link) over once; on a loaded machine a short
# lease can also lapse for a live worker (at least once), taking one over again.
@mq.task(name="member", retries=3, retry_delay=0.01)
def member(n: int) -> int:
    """A chord's member (workflows): logs ``member <n> <pid>``; a retry lets a worker killed mid-run lose nothing."""
    log("member", n, os.getpid())
    return n


@mq.task(name="collect")
def collect(results: list[int]) -> int:
    """A chord's callback: logs ``callback <how many> <sum> <pid>``."""
    log("callback", len(results), sum(results), os.getpid())
    return sum(results)


@mq.task(name="link", retries=3, retry_delay=0.01)
def link(n: int) -> int:
    """A chain's link: logs ``link <n> <pid>`` and hands on n + 1."""
    log("link", n, os.getpid())
    return n + 1


def create_app() -> Flask:
    app = new_app(
        "journal_app", mq,
        TESTING=True,
        MEMQUEUE_JOURNAL=os.environ["JT_JOURNAL"],
        MEMQUEUE_CONSUMER=os.environ.get("JT_CONSUMER", "1") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=0.5,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_MAX_FINISHED=100_000,
        MEMQUEUE_QUEUES=json.loads(os.environ.get("JT_QUEUES", '{"default": 1}')),
    )

    @app.post("/enqueue")
    def enqueue() -> Any:
        data = request.get_json()
        options = mq.options(queue=data.get("queue"), priority=data.get("priority"))
        job = options.enqueue(data["task"], *data.get("args", []))
        return jsonify(id=job.id, pid=os.getpid())

    return app


def main() -> None:
    """``main <mode> [n]``: modes ``enqueue`` (n jobs, then exit), ``run`` (enqueue n, then
    consume until nothing is left), ``drain`` (consume until nothing is left)."""
    mode, n = command_line()
    hold = int(os.environ.get("JT_HOLD_AT", "-1"))
    threads = int(os.environ.get("JT_THREADS", "1"))
    app = create_app()
    with app.app_context():
        if mode in ("enqueue", "run"):
            offset = int(os.environ.get("JT_OFFSET", "0"))
            enqueue_in_threads(app, range(offset, offset + n), threads, lambda i: mq.enqueue(record, i, hold=hold))
            log("enqueued", n, os.getpid())
        if mode == "chord":  # a chord of n members, queued in one step, then exit
            mq.chord(mq.group(*(member.s(i) for i in range(n))), collect.s()).delay()
            log("enqueued", n, os.getpid())
        if mode == "chain":  # a chain of n links starting at 0
            mq.chain(link.s(0), *(link.s() for _ in range(n - 1))).delay()
            log("enqueued", n, os.getpid())
        if mode in ("run", "drain"):
            mq.queue_for(app).ensure_consumer()
            if not mq.join(timeout=60):
                sys.exit("jobs left after 60 s")
            log("drained", os.getpid())
        mq.shutdown(timeout=5)
