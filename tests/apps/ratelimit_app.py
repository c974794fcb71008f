"""An app on any shared store, for the rate and concurrency limits with real processes (issue 24).

Run by :class:`support.harness.Env` as ``flask --app ratelimit_app memqueue worker`` or
``python -c "import ratelimit_app; ratelimit_app.main()" <mode> <n>``. ``RL_URL`` is
``MEMQUEUE_STORAGE`` (``RL_LEASE``: the lease option of a store that has one). The log gets
``start <n> <key> <pid> <time>`` and ``end <n> <key> <pid> <time>`` per job (one O_APPEND
write each): the interval each job ran in, inside the one its slot was held.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask
from support.base_app import command_line, log, new_app, wait_for_gate

from flask_memqueue import MemQueue

mq = MemQueue()


@mq.task(name="slot", concurrency=2, concurrency_key="key")
def slot(n: int, key: str, seconds: float = 0.0) -> int:
    log("start", n, key, os.getpid(), repr(time.time()))
    if seconds:
        time.sleep(seconds)  # the job's own work: it holds its slot this long
    log("end", n, key, os.getpid(), repr(time.time()))
    return n


@mq.task(name="single", concurrency=1)
def single(n: int, gate: str = "") -> int:
    log("start", n, "single", os.getpid(), repr(time.time()))
    if gate:
        wait_for_gate(gate)  # held until the test kills this worker
    log("end", n, "single", os.getpid(), repr(time.time()))
    return n


@mq.task(name="rated", rate_limit="20/s")
def rated(n: int) -> int:
    log("start", n, "rated", os.getpid(), repr(time.time()))
    return n


def create_app() -> Flask:
    options: dict[str, Any] = {}
    if os.environ.get("RL_LEASE"):
        options["lease"] = float(os.environ["RL_LEASE"])
    return new_app(
        "ratelimit_app", mq,
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ["RL_URL"],
        MEMQUEUE_STORAGE_OPTIONS=options,
        MEMQUEUE_CONSUMER=False,
        MEMQUEUE_QUEUES={"default": 4},
        MEMQUEUE_SHUTDOWN_TIMEOUT=2.0,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_MAX_FINISHED=100_000,
    )


def main() -> None:
    """``slots <n>``: ``slot(i, "k<i % 5>", 0.01)``; ``single 0``: a job that holds its slot
    until killed, ``single 1`` one behind it; ``rated <n>``: ``rated(i)``; each batch in one enqueue_many."""
    mode, n = command_line()
    app = create_app()
    with app.app_context():
        if mode == "slots":
            mq.enqueue_many([slot.s(i, f"k{i % 5}", 0.01) for i in range(n)])
        elif mode == "single":  # n = 0: the job that holds the slot until killed; 1: one behind it
            single.delay(n, "never" if n == 0 else "")
        elif mode == "rated":
            mq.enqueue_many([rated.s(i) for i in range(n)])
        log("enqueued", mode, os.getpid(), repr(time.time()))
        mq.shutdown(timeout=5)
