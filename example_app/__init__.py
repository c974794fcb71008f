"""An example Flask app using flask-memqueue, built with an app factory.

Run it with ``flask --app example_app run --debug`` and open
http://127.0.0.1:5000/. Configuration comes from ``FLASK_``-prefixed
environment variables, e.g. ``FLASK_MEMQUEUE_TOKEN`` and ``FLASK_SECRET_KEY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .tasks import mq


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Make the app: config from the environment (then ``test_config``), the queue, the views."""
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_MEMQUEUE_TOKEN, ...
    if test_config is not None:
        app.config.update(test_config)
    if app.debug and not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = "dev"  # never outside debug: set FLASK_SECRET_KEY there

    mq.init_app(app)  # mounts the JSON routes (and the dashboard) under /memqueue

    from .views import bp

    app.register_blueprint(bp)
    return app
