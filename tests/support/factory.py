"""Apps and jobs built in the test process, as a user's code builds them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify

from flask_memqueue import Job, MemQueue
from flask_memqueue.state import AppQueue


def build_app(mq: MemQueue, name: str = "testapp", *, testing: bool = True, **config: Any) -> Flask:
    """What a user's app factory does: config, then ``mq.init_app``."""
    app = Flask(name)
    app.config["TESTING"] = testing
    app.config.update(config)
    mq.init_app(app)

    @app.get("/ping")
    def ping() -> Any:
        return jsonify(pong=True)

    return app


def new_job(queue: AppQueue, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
    """A job record as ``enqueue`` makes it, not yet handed to the store."""
    task = queue.registry.resolve(func)
    return Job(queue.jobs, queue.producer.next_key(), task, args, kwargs or None, time.time())
