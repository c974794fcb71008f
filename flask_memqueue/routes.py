"""Routes recorded by the web modules and put on a blueprint by a function.

:mod:`.views` (the JSON API) and :mod:`.dashboard` (the pages) declare their
routes and hooks with decorators on a :class:`RouteTable` of their own, which
only records them. :func:`flask_memqueue.blueprint.make_blueprint` builds a
new :class:`~flask.Blueprint` and applies both tables to it, so importing a
module registers nothing anywhere (no import side effects, no module
importing another for its decorators), and every app gets a blueprint made
for it.

:class:`APIError`, the error a route raises for a JSON (or page) refusal,
lives here too, at the bottom of the web modules: the metrics route raises it
as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint

F = TypeVar("F", bound=Callable[..., Any])


class APIError(Exception):
    """An error answer of the JSON API (also for what the dashboard posts)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class RouteTable:
    """Blueprint decorators, recorded: ``@routes.get("/jobs")``, ``@routes.errorhandler(E)``...

    Each decorator returns the function unchanged; :meth:`apply` replays them,
    in order, on a blueprint.
    """

    def __init__(self) -> None:
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any], Callable[..., Any]]] = []

    def _record(self, method: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        def decorator(func: F) -> F:
            self._calls.append((method, args, kwargs, func))
            return func

        return decorator

    def route(self, rule: str, **options: Any) -> Callable[[F], F]:
        return self._record("route", rule, **options)

    def get(self, rule: str, **options: Any) -> Callable[[F], F]:
        return self._record("get", rule, **options)

    def post(self, rule: str, **options: Any) -> Callable[[F], F]:
        return self._record("post", rule, **options)

    def errorhandler(self, code_or_exception: type[Exception] | int) -> Callable[[F], F]:
        return self._record("errorhandler", code_or_exception)

    def before_request(self, func: F) -> F:
        return self._record("before_request")(func)

    def before_app_request(self, func: F) -> F:
        return self._record("before_app_request")(func)

    def after_request(self, func: F) -> F:
        return self._record("after_request")(func)

    def apply(self, blueprint: Blueprint) -> None:
        """Register every recorded route and hook on ``blueprint``."""
        for method, args, kwargs, func in self._calls:
            target = getattr(blueprint, method)
            if method in ("before_request", "before_app_request", "after_request"):
                target(func)
            else:
                target(*args, **kwargs)(func)
