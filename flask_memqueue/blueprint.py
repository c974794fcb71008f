"""The ``memqueue`` blueprint, built by a function for each app that mounts it."""

from __future__ import annotations

from flask import Blueprint

from . import dashboard, dead_letters, views


def make_blueprint() -> Blueprint:
    """A new ``memqueue`` blueprint with the JSON API (:mod:`.views`) and the
    dashboard's pages (:mod:`.dashboard`). ``init_app`` mounts it at
    ``MEMQUEUE_URL_PREFIX``; the templates are the package's own."""
    blueprint = Blueprint("memqueue", "flask_memqueue", template_folder="templates")
    views.routes.apply(blueprint)
    dashboard.routes.apply(blueprint)
    dead_letters.routes.apply(blueprint)
    return blueprint
