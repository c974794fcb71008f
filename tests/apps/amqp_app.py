"""An app whose messages go over RabbitMQ, for the tests that start real processes.

Copied into a temporary directory and served from there (``flask --app
amqp_app run``, ``gunicorn amqp_app:app``, ``python amqp_app.py``).
Everything comes from the environment:

- ``AT_URL``: ``MEMQUEUE_AMQP_URL``; ``AT_QUEUE``: the queue its handler
  consumes (``amqp_queue=``); ``AT_DIR``: where ``runs.log`` and gate files live;
  ``AT_AUTOSTART``: "1" to consume from ``init_app`` on; ``AT_CONSUMER``: "0"
  for ``MEMQUEUE_CONSUMER = False``; ``AT_JOURNAL``: a SQLite journal as the store;
  ``AT_PRODUCE_AT_IMPORT``: a message to produce while importing (under
  ``gunicorn --preload`` the master publishes before it forks).
- ``runs.log`` gets one line per event, each one ``O_APPEND`` write so lines
  of several processes never mix: ``start <message> <pid>`` and
  ``done <message> <pid>`` around the handler, ``held <name> <pid>`` for a
  request waiting in ``/_test/hold/<name>``.
- A message ``"block:<name>"`` (or the hold route) waits for the gate file
  ``<name>`` in ``AT_DIR``, at most :data:`GATE_TIMEOUT` seconds.

Every response carries ``X-Pid``, the pid of the process that served it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app

from flask_memqueue import MemQueue

DIR = Path(os.environ["AT_DIR"])
LOG = DIR / "runs.log"
GATE_TIMEOUT = 30.0

mq = MemQueue()


def append(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def wait_gate(name: str) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (DIR / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name} never opened")
        time.sleep(0.01)


@mq.handler("work", amqp_queue=os.environ["AT_QUEUE"])
def work(message: Any) -> None:
    assert current_app.name == "amqp_app"  # the handler runs in the app's context
    append(f"start {message} {os.getpid()}")
    if isinstance(message, str) and message.startswith("block:"):
        wait_gate(message.partition(":")[2])
    append(f"done {message} {os.getpid()}")


def create_app() -> Flask:
    app = Flask("amqp_app")
    app.config.update(
        MEMQUEUE_AMQP_URL=os.environ["AT_URL"],
        MEMQUEUE_AUTOSTART=os.environ.get("AT_AUTOSTART") == "1",
        MEMQUEUE_TOKEN="amqp-test-token-0123456789",
        MEMQUEUE_AMQP_THREADS=int(os.environ.get("AT_THREADS", "1")),
        MEMQUEUE_CONSUMER=os.environ.get("AT_CONSUMER", "1") == "1",
    )
    if os.environ.get("AT_JOURNAL"):  # a web tier that only publishes needs a shared store for its tasks
        app.config["MEMQUEUE_STORAGE"] = "sqlite:///" + os.environ["AT_JOURNAL"]
    mq.init_app(app)

    @app.get("/_test/hold/<name>")
    def hold(name: str) -> str:
        append(f"held {name} {os.getpid()}")
        wait_gate(name)
        return "released"

    @app.after_request
    def pid_header(response: Response) -> Response:
        response.headers["X-Pid"] = str(os.getpid())
        return response

    return app


app = create_app()

if os.environ.get("AT_PRODUCE_AT_IMPORT"):
    with app.app_context():
        mq.produce(os.environ["AT_PRODUCE_AT_IMPORT"], topic="work")

if __name__ == "__main__":  # a consumer process that runs until it is killed
    while True:
        time.sleep(3600)
