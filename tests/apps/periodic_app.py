"""A small app with one periodic task, for the tests that start real processes.

Copied into a temporary directory and run from there (``gunicorn
'periodic_app:create_app()'``, ``flask --app periodic_app run --debug``, or
``python -c "import periodic_app; periodic_app.main()"``). Everything comes
from the environment:

- ``PT_DIR``: where ``ticks.log`` and the instance folder (the host lock and
  its state file, in memory mode) live.
- ``PT_STORAGE``: ``MEMQUEUE_STORAGE`` (default ``memory://``).
- ``PT_EVERY``: the interval in seconds (default 1); ``PT_CATCH_UP``: "0" for
  ``catch_up=False``; ``PT_AUTOSTART``: "1" for ``MEMQUEUE_AUTOSTART``.

``ticks.log`` gets one line per event, written with one ``O_APPEND`` write so
lines of several processes never mix: ``tick <tick> <pid> <now>`` each time
the periodic job runs (the tick it was queued for, and when it ran), ``started <t> <pid>`` when
``main()`` sees its scheduler running since Unix time ``t``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, jsonify

from flask_memqueue import MemQueue, current_job

mq = MemQueue()


def _dir() -> Path:
    return Path(os.environ["PT_DIR"])


def log(*fields: object) -> None:
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(_dir() / "ticks.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@mq.periodic(every=dt.timedelta(seconds=float(os.environ.get("PT_EVERY", "1"))), name="beat",
             catch_up=os.environ.get("PT_CATCH_UP", "1") == "1")
def beat() -> None:
    log("tick", current_job.tick, os.getpid(), f"{time.time():.3f}")


def create_app() -> Flask:
    app = Flask("periodic_app", instance_path=str(_dir() / "instance"))
    app.config.update(
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ.get("PT_STORAGE", "memory://"),
        MEMQUEUE_AUTOSTART=os.environ.get("PT_AUTOSTART") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=1.0,
    )
    mq.init_app(app)

    @app.get("/pid")
    def pid() -> Any:
        return jsonify(pid=os.getpid())

    return app


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
    log("started", queue.scheduler.started_at, os.getpid())
    while not stop.wait(0.1):
        pass
    queue.shutdown(wait=True, timeout=5)
    log("stopped", time.time(), os.getpid())
