"""A small app on the PostgreSQL store, for the tests that start real processes (a copy of pg_app.py).

Run from a temporary directory as ``flask --app pg_app memqueue worker``,
``gunicorn --preload 'pg_app:create_app()'`` or ``python -c "import
pg_app; pg_app.main()" <mode> ...``. Everything comes from the environment:

- ``RT_URL``: MEMQUEUE_STORAGE (a postgresql:// URL); ``RT_DIR``: where ``runs.log``
  and gate files live; ``RT_CONSUMER``: "0" for an enqueue-only process;
  ``RT_LEASE``: the lease option; ``RT_HOLD_FROM``: in this process, the first
  ``record`` job numbered at least this waits for the gate ``hold``.
- ``runs.log`` gets one line per event, written with one ``O_APPEND`` write so
  lines of several processes never mix: ``run <n> <pid> <time>`` for
  ``record``, ``start``/``done <n> <pid> <time>`` for ``block``,
  ``holding <n> <pid> <time>``, ``message <text> <pid>`` for a produced message.
- A job that waits for a gate waits for a file of that name in ``RT_DIR``,
  at most :data:`GATE_TIMEOUT` seconds.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from flask_memqueue import MemQueue, StorageError

mq = MemQueue()
GATE_TIMEOUT = 60.0
_held = threading.Event()


def _dir() -> Path:
    return Path(os.environ["RT_DIR"])


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


@mq.task(name="record", retries=1, retry_delay=0.0)
def record(n: int) -> int:
    log("run", n, os.getpid(), repr(time.time()))
    hold_from = int(os.environ.get("RT_HOLD_FROM", "-1"))
    if 0 <= hold_from <= n and not _held.is_set():
        _held.set()
        log("holding", n, os.getpid(), repr(time.time()))
        wait_for_gate("hold")
    return n


@mq.task(name="block", retries=1, retry_delay=0.0)
def block(n: int, gate: str) -> int:
    log("start", n, os.getpid(), repr(time.time()))
    if not wait_for_gate(gate):
        raise TimeoutError(f"gate {gate} never opened")
    log("done", n, os.getpid(), repr(time.time()))
    return n


@mq.handler
def on_message(message: Any) -> None:
    log("message", message, os.getpid())


def create_app() -> Flask:
    app = Flask("pg_app", instance_path=str(_dir() / "instance"))
    options: dict[str, Any] = {}
    if os.environ.get("RT_LEASE"):
        options["lease"] = float(os.environ["RT_LEASE"])
    if os.environ.get("RT_NOTIFY"):
        options["notify"] = os.environ["RT_NOTIFY"]
    app.config.update(
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ["RT_URL"],
        MEMQUEUE_STORAGE_OPTIONS=options,
        MEMQUEUE_CONSUMER=os.environ.get("RT_CONSUMER", "1") == "1",
        MEMQUEUE_SHUTDOWN_TIMEOUT=0.5,
        MEMQUEUE_MAXSIZE=0,
        MEMQUEUE_MAX_FINISHED=100_000,
        MEMQUEUE_TOKEN=os.environ.get("RT_TOKEN") or None,
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
        job = mq.enqueue(data["task"], *data.get("args", []))
        return jsonify(id=job.id, pid=os.getpid())

    return app


def main() -> None:
    """``main <mode> [n]``: ``enqueue`` n jobs numbered from RT_OFFSET (RT_THREADS threads),
    then exit; ``produce`` up to n jobs one by one until the file ``stop-producing`` exists,
    writing ``acked <i>`` or ``refused <i> <error>`` to stdout for each (the server restart
    test), retrying nothing."""
    mode = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    threads = int(os.environ.get("RT_THREADS", "1"))
    offset = int(os.environ.get("RT_OFFSET", "0"))
    app = create_app()
    with app.app_context():
        if mode == "enqueue":
            def produce(part: range) -> None:
                with app.app_context():
                    for i in part:
                        mq.enqueue(record, i)

            parts = [range(offset + k, offset + n, threads) for k in range(threads)]
            workers = [threading.Thread(target=produce, args=(p,)) for p in parts]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            log("enqueued", n, os.getpid())
        elif mode == "produce":
            stop = _dir() / "stop-producing"
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
        mq.shutdown(timeout=5)
