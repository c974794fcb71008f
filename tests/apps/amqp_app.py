"""An app whose messages go over RabbitMQ, for the tests that start real processes.

Run by :class:`support.harness.Env` from a temporary directory (``flask --app
amqp_app run``, ``gunicorn amqp_app:app``, ``python amqp_app.py``). Besides
what :mod:`support.base_app` gives every app, everything comes from the environment:

- ``AT_URL``: ``MEMQUEUE_AMQP_URL``; ``AT_QUEUE``: the queue its handler
  consumes (``amqp_queue=``); ``AT_AUTOSTART``: "1" to consume from
  ``init_app`` on; ``AT_CONSUMER``: "0" for ``MEMQUEUE_CONSUMER = False``;
  ``AT_JOURNAL``: a SQLite journal as the store; ``AT_THREADS``:
  ``MEMQUEUE_AMQP_THREADS``; ``AT_PRODUCE_AT_IMPORT``: a message to produce
  while importing (under ``gunicorn --preload`` the master publishes before it forks).
- ``runs.log`` gets ``start <message> <pid>`` and ``done <message> <pid>``
  around the handler. A message ``"block:<name>"`` waits for the gate ``<name>``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, current_app
from support.base_app import log, new_app, pass_gate

from flask_memqueue import MemQueue

mq = MemQueue()


@mq.handler("work", amqp_queue=os.environ["AT_QUEUE"])
def work(message: Any) -> None:
    assert current_app.name == "amqp_app"  # the handler runs in the app's context
    log("start", message, os.getpid())
    if isinstance(message, str) and message.startswith("block:"):
        pass_gate(message.partition(":")[2])
    log("done", message, os.getpid())


def create_app() -> Flask:
    config: dict[str, Any] = {}
    if os.environ.get("AT_JOURNAL"):  # a web tier that only publishes needs a shared store for its tasks
        config["MEMQUEUE_STORAGE"] = "sqlite:///" + os.environ["AT_JOURNAL"]
    return new_app(
        "amqp_app", mq,
        MEMQUEUE_AMQP_URL=os.environ["AT_URL"],
        MEMQUEUE_AUTOSTART=os.environ.get("AT_AUTOSTART") == "1",
        MEMQUEUE_TOKEN="amqp-test-token-0123456789",
        MEMQUEUE_AMQP_THREADS=int(os.environ.get("AT_THREADS", "1")),
        MEMQUEUE_CONSUMER=os.environ.get("AT_CONSUMER", "1") == "1",
        **config,
    )


app = create_app()

if os.environ.get("AT_PRODUCE_AT_IMPORT"):
    with app.app_context():
        mq.produce(os.environ["AT_PRODUCE_AT_IMPORT"], topic="work")

if __name__ == "__main__":  # a consumer process that runs until it is killed
    while True:
        time.sleep(3600)
