"""A small app on the Redis store, for the tests that start real processes.

Run by :class:`support.harness.Env` from a temporary directory as ``flask
--app redis_app memqueue worker``, ``gunicorn --preload 'redis_app:create_app()'``
or ``python -c "import redis_app; redis_app.main()" <mode> ...``. Besides what
:mod:`support.base_app` gives every app, everything comes from the environment:

- ``RT_URL``: MEMQUEUE_STORAGE (a redis:// URL); ``RT_CONSUMER``: "0" for an
  enqueue-only process; ``RT_LEASE``: the lease option; ``RT_HOLD_FROM``: in
  this process, the first ``record`` job numbered at least this waits for the
  gate ``hold``; ``RT_TOKEN``: ``MEMQUEUE_TOKEN``.
- ``main chord <n>`` / ``main chain <n>``: a chord of n ``member`` jobs with the
  ``collect`` callback, or a chain of n ``link`` jobs (workflows, issue 21).
- ``runs.log`` gets ``run <n> <pid> <time>`` for ``record``,
  ``start``/``done <n> <pid> <time>`` for ``block``, ``holding <n> <pid> <time>``,
  ``message <text> <pid>`` for a produced message, ``member``/``link <n> <pid> <time>``
  and ``callback <how many> <sum> <pid>`` for the workflow tasks.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Flask, jsonify, request
from support.base_app import command_line, data_dir, enqueue_in_threads, log, new_app, pass_gate, wait_for_gate

from flask_memqueue import MemQueue, StorageError

mq = MemQueue()
GATE_TIMEOUT = 60.0
_held = threading.Event()


@mq.task(name="record", retries=1, retry_delay=0.0)
def record(n: int) -> int:
    log("run", n, os.getpid(), repr(time.time()))
    hold_from = int(os.environ.get("RT_HOLD_FROM", "-1"))
    if 0 <= hold_from <= n and not _held.is_set():
        _held.set()
        log("holding", n, os.getpid(), repr(time.time()))
        wait_for_gate("hold", GATE_TIMEOUT)
    return n


@mq.task(name="block", retries=1, retry_delay=0.0)
def block(n: int, gate: str) -> int:
    log("start", n, os.getpid(), repr(time.time()))
    pass_gate(gate, GATE_TIMEOUT)
    log("done", n, os.getpid(), repr(time.time()))
    return n


# retries=3: the kill tests take a member (a link) over once; on a loaded machine a short
# lease can also lapse for a live worker (at least once), taking one over again.
@mq.task(name="member", retries=3, retry_delay=0.0)
def member(n: int) -> int:
    """A chord's member (workflows): logs ``member <n> <pid> <time>``."""
    log("member", n, os.getpid(), repr(time.time()))
    return n


@mq.task(name="collect")
def collect(results: list[int]) -> int:
    """A chord's callback: logs ``callback <how many> <sum> <pid>``."""
    log("callback", len(results), sum(results), os.getpid())
    return sum(results)


@mq.task(name="link", retries=3, retry_delay=0.0)
def link(n: int) -> int:
    """A chain's link: logs ``link <n> <pid> <time>`` and hands on n + 1."""
    log("link", n, os.getpid(), repr(time.time()))
    return n + 1


@mq.handler
def on_message(message: Any) -> None:
    log("message", message, os.getpid())


def create_app() -> Flask:
    options: dict[str, Any] = {}
    if os.environ.get("RT_LEASE"):
        options["lease"] = float(os.environ["RT_LEASE"])
    app = new_app(
        "redis_app", mq,
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ["RT_URL"],
        MEMQUEUE_STORAGE_OPTIONS=options,
        MEMQUEUE_CONSUMER=os.environ.get("RT_CONSUMER", "1") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=0.5,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_MAX_FINISHED=100_000,
        MEMQUEUE_TOKEN=os.environ.get("RT_TOKEN") or None,
    )

    @app.post("/enqueue")
    def enqueue() -> Any:
        data = request.get_json()
        job = mq.enqueue(data["task"], *data.get("args", []))
        return jsonify(id=job.id, pid=os.getpid())

    return app


def main() -> None:
    """``main <mode> [n]``: ``enqueue`` n jobs numbered from RT_OFFSET (RT_THREADS threads),
    then exit; ``produce`` up to n jobs one by one until the file ``stop-producing`` exists,
    writing ``acked <i>`` or ``refused <i> <error>`` to stdout for each (the Redis restart
    test), retrying nothing."""
    mode, n = command_line()
    threads = int(os.environ.get("RT_THREADS", "1"))
    offset = int(os.environ.get("RT_OFFSET", "0"))
    app = create_app()
    with app.app_context():
        if mode == "enqueue":
            enqueue_in_threads(app, range(offset, offset + n), threads, lambda i: mq.enqueue(record, i))
            log("enqueued", n, os.getpid())
        elif mode == "produce":
            stop = data_dir() / "stop-producing"
            for i in range(offset, offset + n):
                if stop.exists():
                    break
                try:
                    mq.enqueue(record, i)
                except StorageError as exc:
                    print(f"refused {i} {type(exc).__name__}: {exc}", flush=True)
                    time.sleep(0.02)
                else:
                    print(f"acked {i}", flush=True)
                    time.sleep(0.001)
            print("produced", flush=True)
        elif mode == "chord":  # a chord of n members, queued in one step
            mq.chord(mq.group(*(member.s(i) for i in range(n))), collect.s()).delay()
            log("enqueued", n, os.getpid())
        elif mode == "chain":  # a chain of n links starting at 0
            mq.chain(link.s(0), *(link.s() for _ in range(n - 1))).delay()
            log("enqueued", n, os.getpid())
        mq.shutdown(timeout=5)
