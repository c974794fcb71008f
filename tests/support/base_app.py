"""What every app of ``tests/apps/`` shares: its folder, its log, gates, and the test routes.

Those apps run in real processes (``flask run``, gunicorn, ``flask memqueue
worker``, ``python -c "import <app>; <app>.main()"``), started by
:class:`support.harness.Env`, which copies the app into a temporary ``src/``
folder and puts ``tests/`` on ``PYTHONPATH`` so that it can import this
module. So this module imports Flask, the package and the standard library
only, never pytest or the rest of :mod:`support`.

- :func:`data_dir`: the folder named by ``MEMQUEUE_TEST_DIR``, where the
  log, the gate files and the app's instance folder live.
- :func:`log`: one line to a log there, in one ``O_APPEND`` write, so lines of
  several processes never mix: the ground truth of which job ran how often,
  and where. The harness reads it back (:meth:`support.harness.Env.lines`).
- :func:`wait_for_gate`: a job or a request that must stay running waits for a
  file the test creates once it has seen what it waits for, never for time to
  pass (bounded, so nothing hangs if the test fails).
- :func:`new_app`: ``Flask(name)`` with its instance folder in the data
  folder, the app's config, ``mq.init_app``, and :func:`add_test_routes`.
- :func:`command_line`: ``<mode> [n]`` of an app's ``main()``.
- :func:`enqueue_in_threads`: many producers in one process, as a busy web process has.
- :func:`add_test_routes`: ``X-Pid`` on every response (which process served
  it), ``GET /pid``, and ``GET /_test/hold/<gate>``, which logs
  ``held <gate> <pid>`` and keeps this (sync) worker busy until the gate
  opens (:class:`support.harness.Hold`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify

from flask_memqueue import MemQueue

#: The environment variable naming the data folder (set by :class:`support.harness.Env`).
DIR_VARIABLE = "MEMQUEUE_TEST_DIR"
#: How long a gate waits at most: nothing blocks forever if a test fails.
GATE_TIMEOUT = 30.0


def data_dir() -> Path:
    """The folder of the log, the gate files and the instance folder."""
    return Path(os.environ[DIR_VARIABLE])


def log(*fields: object, file: str = "runs.log") -> None:
    """Append ``fields`` as one line to ``file`` in the data folder, in one ``O_APPEND`` write."""
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(data_dir() / file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def wait_for_gate(gate: str, timeout: float = GATE_TIMEOUT) -> bool:
    """Wait until the file ``gate`` exists in the data folder; False after ``timeout`` seconds."""
    path = data_dir() / gate
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def pass_gate(gate: str, timeout: float = GATE_TIMEOUT) -> None:
    """:func:`wait_for_gate`, raising :class:`TimeoutError` if the gate never opens (a job fails then)."""
    if not wait_for_gate(gate, timeout):
        raise TimeoutError(f"gate {gate} never opened")


def new_app(name: str, mq: MemQueue, **config: Any) -> Flask:
    """The app ``name``: its instance folder in the data folder, ``config``, ``mq``, the test routes."""
    app = Flask(name, instance_path=str(data_dir() / "instance"))
    app.config.update(config)
    mq.init_app(app)
    add_test_routes(app)
    return app


def add_test_routes(app: Flask) -> None:
    """``X-Pid`` on every response, ``GET /pid`` and ``GET /_test/hold/<gate>``."""

    @app.after_request
    def pid_header(response: Response) -> Response:
        response.headers["X-Pid"] = str(os.getpid())
        return response

    @app.get("/pid")
    def pid() -> Any:
        return jsonify(pid=os.getpid())

    @app.get("/_test/hold/<gate>")
    def hold(gate: str) -> Any:
        """Keep this worker busy until ``gate`` opens (a sync worker serves one request at a time)."""
        log("held", gate, os.getpid())
        pass_gate(gate)
        return jsonify(pid=os.getpid())


def enqueue_in_threads(app: Flask, numbers: range, threads: int, enqueue: Callable[[int], object]) -> None:
    """``enqueue(i)`` for every ``i`` of ``numbers``, from ``threads`` threads at once (thread
    ``k`` takes every ``threads``-th number from the ``k``-th), each in an app context."""

    def produce(part: range) -> None:
        with app.app_context():
            for i in part:
                enqueue(i)

    workers = [threading.Thread(target=produce, args=(numbers[k::threads],)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def command_line() -> tuple[str, int]:
    """``(mode, n)`` from ``python -c "import <app>; <app>.main()" <mode> [n]`` (``n`` 0 if not given)."""
    return sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
