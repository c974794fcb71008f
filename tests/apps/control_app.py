"""An app on any shared store, for issue 24's tests with real processes (pause across processes).

Run by :class:`support.harness.Env` as ``flask --app control_app memqueue worker|pause|resume``
or ``python -c "import control_app; control_app.main()" enqueue <n>``. ``CT_URL`` is
``MEMQUEUE_STORAGE``; ``runs.log`` gets ``run <n> <pid> <time>`` per job.
"""

from __future__ import annotations

import os
import time

from flask import Flask
from support.base_app import command_line, log, new_app

from flask_memqueue import MemQueue

mq = MemQueue()


@mq.task(name="work")
def work(n: int, seconds: float = 0.0) -> int:
    log("run", n, os.getpid(), repr(time.time()))
    if seconds:
        time.sleep(seconds)  # the job's own work: it keeps its worker busy this long
    return n


def create_app() -> Flask:
    return new_app(
        "control_app", mq,
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ["CT_URL"],
        MEMQUEUE_CONSUMER=False,
        MEMQUEUE_SHUTDOWN_TIMEOUT=2.0,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_MAX_FINISHED=100_000,
    )


def main() -> None:
    """``main enqueue <n>``: queue ``work(i, CT_SECONDS)`` for i from CT_OFFSET, in one enqueue_many."""
    mode, n = command_line()
    offset = int(os.environ.get("CT_OFFSET", "0"))
    seconds = float(os.environ.get("CT_SECONDS", "0"))
    app = create_app()
    with app.app_context():
        if mode == "enqueue":
            mq.enqueue_many([work.s(i, seconds) for i in range(offset, offset + n)])
            log("enqueued", n, os.getpid(), repr(time.time()))
        mq.shutdown(timeout=5)
