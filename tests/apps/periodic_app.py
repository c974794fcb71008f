"""A small app with one periodic task, for the tests that start real processes.

Run by :class:`support.harness.Env` from a temporary directory (``gunicorn
'periodic_app:create_app()'``, ``flask --app periodic_app run --debug``, or
``python -c "import periodic_app; periodic_app.main()"``). Besides what
:mod:`support.base_app` gives every app (the instance folder holds the host
lock and its state file, in memory mode), everything comes from the environment:

- ``PT_STORAGE``: ``MEMQUEUE_STORAGE`` (default ``memory://``).
- ``PT_EVERY``: the interval in seconds (default 1); ``PT_CATCH_UP``: "0" for
  ``catch_up=False``; ``PT_AUTOSTART``: "1" for ``MEMQUEUE_AUTOSTART``.

``ticks.log`` gets ``tick <tick> <pid> <now>`` each time the periodic job
runs (the tick it was queued for, and when it ran), ``started <t> <pid>``
when ``main()`` sees its scheduler running since Unix time ``t``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time

from flask import Flask
from support.base_app import log, new_app

from flask_memqueue import MemQueue, current_job

mq = MemQueue()
LOG = "ticks.log"


@mq.periodic(every=dt.timedelta(seconds=float(os.environ.get("PT_EVERY", "1"))), name="beat",
             catch_up=os.environ.get("PT_CATCH_UP", "1") == "1")
def beat() -> None:
    log("tick", current_job.tick, os.getpid(), f"{time.time():.3f}", file=LOG)


def create_app() -> Flask:
    return new_app(
        "periodic_app", mq,
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ.get("PT_STORAGE", "memory://"),
        MEMQUEUE_AUTOSTART=os.environ.get("PT_AUTOSTART") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=1.0,
    )


def main() -> None:
    """Run the app's consumer and schedule in this process until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    app = create_app()
    queue = mq.queue_for(app)
    queue.ensure_consumer()
    deadline = time.monotonic() + 10
    while queue.scheduler.started_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    log("started", queue.scheduler.started_at, os.getpid(), file=LOG)
    while not stop.wait(0.1):
        pass
    queue.shutdown(wait=True, timeout=5)
    log("stopped", time.time(), os.getpid(), file=LOG)
