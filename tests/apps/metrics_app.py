"""An app with one task and ``GET /memqueue/metrics``, for ``tests/test_metrics_gunicorn.py``.

Served as ``metrics_app:app`` under gunicorn by :class:`support.harness.Env`;
its config comes from ``FLASK_*`` variables (``app.config.from_prefixed_env()``),
with what :mod:`support.base_app` gives every app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from support.base_app import add_test_routes

from flask_memqueue import MemQueue

mq = MemQueue()


@mq.task(name="work")
def work(n: int) -> int:
    return n * 2


def create_app() -> Flask:
    app = Flask("metrics_app")
    app.config.from_prefixed_env()
    mq.init_app(app)
    add_test_routes(app)

    @app.post("/work/<int:n>")
    def enqueue(n: int) -> Any:
        job = work.delay(n)
        return {"id": job.id}, 202

    return app


app = create_app()
