"""RabbitMQ's dead letters over HTTP: the JSON routes ``/dead/...`` and the dashboard's page.

What a handler gave up on waits in ``<queue>.dead`` (see
:mod:`flask_memqueue.amqp.dead`, which says how a dead letter is named, why a
listing consumes nothing, and why a requeue is at least once). These routes
ask the app's transport for its dead letters
(:meth:`~flask_memqueue.runtime.transport.Transport.dead_letters`): an app
whose messages are jobs of its store has none (a message that failed for good
is a failed job there), and they answer 404 saying so.

Same access rule as every route (the token, or a debug/testing app); the
page's form posts the CSRF token. A broker that cannot be reached is a 503
naming its URL with the password replaced by ``***``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from .dashboard import _back, _common, _page, _render, _require_csrf, _take_notice
from .exceptions import BrokerError, DeadLetterNotFound
from .routes import APIError, RouteTable
from .views import json_response, whole_number

if TYPE_CHECKING:
    from .amqp.dead import DeadLetters
    from .state import AppQueue

#: The routes and the page, put on a blueprint by :func:`~flask_memqueue.blueprint.make_blueprint`.
routes = RouteTable()

#: Dead letters a page lists per queue.
PAGE_LIMIT = 50


def _dead() -> DeadLetters:
    queue: AppQueue = current_app.extensions["memqueue"]
    dead = queue.transport.dead_letters()
    if dead is None:
        raise APIError(404, "this app's messages do not go through RabbitMQ (MEMQUEUE_AMQP_URL is not set), so"
                            " there are no dead letters: a message whose handler failed for good is a failed job,"
                            " found with GET /memqueue/jobs?status=failed and retried with POST"
                            " /memqueue/jobs/<id>/retry")
    return dead


def _calling(verb: Any, *args: Any) -> Any:
    """``verb(*args)``, with an unknown queue or dead letter as a 404 (a broker that fails is
    the blueprint's 503 for a :class:`~flask_memqueue.exceptions.BrokerError`)."""
    try:
        return verb(*args)
    except DeadLetterNotFound as exc:
        raise APIError(404, str(exc)) from None


# -- JSON --------------------------------------------------------------------------------
@routes.get("/dead")
def dead_queues() -> Response:
    """Every handler's queue and how many dead letters wait in its ``<queue>.dead``."""
    counts = _dead().counts()
    return json_response({"queues": [{"queue": name, "dead_queue": name + ".dead", "count": n}
                                     for name, n in counts.items()]})


@routes.get("/dead/<queue>")
def dead_list(queue: str) -> Response:
    """The dead letters of ``queue`` (oldest first, ``?limit=``, 100 by default), without consuming them."""
    limit = whole_number("limit", request.args.get("limit") or "100", 1, 1000)
    dead = _dead()
    count, letters = _calling(dead.list, queue, limit)
    name = dead.resolve(queue)
    return json_response({"queue": name, "dead_queue": name + ".dead", "count": count,
                          "messages": [letter.to_dict() for letter in letters]})


@routes.get("/dead/<queue>/<letter_id>")
def dead_show(queue: str, letter_id: str) -> Response:
    """One dead letter whole: body, headers, error and traceback."""
    letter = _calling(_dead().get, queue, letter_id)
    return json_response(letter.to_dict(full=True))


@routes.post("/dead/<queue>/<letter_id>/requeue")
def dead_requeue_one(queue: str, letter_id: str) -> Response:
    """Send one dead letter back to its queue (at least once: published with confirms, then acknowledged)."""
    dead = _dead()
    n = _calling(dead.requeue, queue, letter_id)
    return json_response({"queue": dead.resolve(queue), "id": letter_id, "requeued": n})


@routes.post("/dead/<queue>/requeue")
def dead_requeue_all(queue: str) -> Response:
    """Send every dead letter waiting now in ``<queue>.dead`` back to its queue."""
    dead = _dead()
    n = _calling(dead.requeue, queue, None)
    return json_response({"queue": dead.resolve(queue), "requeued": n})


# -- the dashboard's page ---------------------------------------------------------------
@routes.get("/ui/dead")
@_page
def dead_page() -> ResponseReturnValue:
    """Every handler's dead-letter queue: how many wait, the first :data:`PAGE_LIMIT` of each,
    a Requeue button per dead letter and a Requeue all per queue."""
    dead = _dead()
    queues = []
    try:
        for name in dead.queue_names():
            count, letters = dead.list(name, PAGE_LIMIT)
            queues.append({"name": name, "count": count, "letters": [letter.to_dict() for letter in letters]})
    except BrokerError as exc:
        raise APIError(503, f"the message broker is unavailable, try again later: {exc}") from None
    return _render("memqueue/dead.html", queues=queues, limit=PAGE_LIMIT, notice=_take_notice(),
                   here=request.full_path.rstrip("?"), **_common())


@routes.post("/ui/dead/<queue>/requeue")
@_page
def dead_requeue_action(queue: str) -> ResponseReturnValue:
    """The page's buttons: requeue the dead letter of the form's ``id``, or every one without it."""
    _require_csrf()
    dead = _dead()
    letter_id = request.form.get("id") or None
    try:
        n = dead.requeue(queue, letter_id)
    except DeadLetterNotFound as exc:
        return _back("error", str(exc))
    except BrokerError as exc:
        return _back("error", f"Nothing was requeued: {exc}")
    if letter_id is not None:
        return _back("ok", f"Dead letter {letter_id} is back in {dead.resolve(queue)}.")
    return _back("ok", f"{n} dead letter{'' if n == 1 else 's'} sent back to {dead.resolve(queue)}.")


__all__ = ["routes"]
