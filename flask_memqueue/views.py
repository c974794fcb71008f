"""The ``memqueue`` blueprint: JSON routes to produce messages and to look at jobs.

Every answer is JSON, errors too (``{"error": ..., "status": ...}``), also for
a URL under the prefix that matches no route. Access: with ``MEMQUEUE_TOKEN``
set a request needs ``Authorization: Bearer <token>``; without it the routes
answer only a debug or testing app. Unsafe methods from a browser must come
from the same origin (no cross-site request can enqueue).
"""

from __future__ import annotations

import hmac
import json
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from . import access
from .exceptions import QueueClosed, QueueFull, UnknownTopicError
from .job import Job, JobStatus
from .state import _QUEUES, AppQueue

blueprint = Blueprint("memqueue", __name__, template_folder="templates")

#: Seconds a client is asked to wait after a 503 for a full queue.
RETRY_AFTER = 1
#: Jobs one page of ``GET /jobs`` returns at most.
MAX_LIMIT = 500


class APIError(Exception):
    """An error answer of the JSON API (also for what the dashboard posts)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _queue() -> AppQueue:
    return current_app.extensions["memqueue"]  # type: ignore[no-any-return]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=message, status=status)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@blueprint.errorhandler(APIError)
def _api_error(exc: APIError) -> ResponseReturnValue:
    render_page = access.view_marker(access.PAGE_ATTR)  # a dashboard page answers in HTML
    if render_page is not None:
        return render_page(exc.status, exc.message, exc.headers)  # type: ignore[no-any-return]
    return error_response(exc.status, exc.message, exc.headers)


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    headers = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return error_response(exc.code or 500, exc.description or exc.name, headers)


@blueprint.errorhandler(QueueFull)
def _queue_full(exc: QueueFull) -> Response:
    return error_response(503, str(exc), {"Retry-After": str(RETRY_AFTER)})


@blueprint.errorhandler(QueueClosed)
def _queue_closed(exc: QueueClosed) -> Response:
    return error_response(503, str(exc))


# -- access --------------------------------------------------------------------
def bearer_ok(token: str) -> bool:
    """True if the request carries ``Authorization: Bearer <token>`` (constant-time compare)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def same_origin() -> bool:
    """False for a request a browser sent from another site.

    Browsers send ``Origin`` (and ``Sec-Fetch-Site``) with every cross-origin
    POST; clients like curl send neither and are let through.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme == request.scheme


@blueprint.before_request
def _authorize() -> None:
    """One access rule for every route of the blueprint, JSON API and dashboard pages alike.

    With ``MEMQUEUE_TOKEN`` set: a Bearer header with the token, or the
    dashboard's signed sign-in cookie (see :mod:`.access`); views marked
    :func:`~.access.public` (the sign-in form) answer anyone. Without a
    token: debug and testing apps only. An unsafe request must come from our
    own origin, and one that only a cookie authorizes must also carry the
    CSRF token, because a browser attaches cookies to requests other sites
    make it send.
    """
    token = _queue().config.token
    unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
    if token and bearer_ok(token):
        return
    if token:
        if access.session_ok(token):
            if unsafe and not access.csrf_ok(form=access.view_marker(access.PAGE_ATTR) is not None):
                raise APIError(403, "CSRF token missing or wrong: a request authorized by the dashboard's"
                               f" sign-in cookie must send the {access.CSRF_HEADER} header (or the"
                               f" {access.CSRF_FIELD} form field); reload the dashboard and try again")
        elif not access.view_marker(access.PUBLIC_ATTR):
            raise APIError(
                401,
                "missing or wrong token: send 'Authorization: Bearer <MEMQUEUE_TOKEN>'",
                {"WWW-Authenticate": 'Bearer realm="memqueue"'},
            )
    elif not (current_app.debug or current_app.testing):
        raise APIError(
            403,
            "the memqueue routes are off in production until you set MEMQUEUE_TOKEN"
            " (then send 'Authorization: Bearer <token>'); they answer without one only"
            " when app.debug or app.testing is on",
        )
    if unsafe and not same_origin():
        raise APIError(403, "cross-site request refused: this request came from another origin")


# -- produce -------------------------------------------------------------------
def _read_body(limit: int) -> bytes:
    too_big = APIError(413, f"the body is larger than MEMQUEUE_MAX_MESSAGE_BYTES ({limit} bytes)")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data


def _accepted(job: Job) -> Response:
    response = jsonify(id=job.id, status=job.status.value)
    response.status_code = 202
    response.headers["Location"] = url_for("memqueue.job", job_id=job.id)
    return response


def _produce(message: Any, topic: str | None) -> Response:
    queue = _queue()
    try:
        task = queue.registry.handler(topic)
    except UnknownTopicError as exc:
        raise APIError(404, str(exc)) from None
    return _accepted(queue.enqueue(task, (message,), None))


@blueprint.post("/produce")
def produce() -> Response:
    """Queue ``{"message": <any JSON>, "topic": <optional str>}`` for its handler."""
    data = _read_body(_queue().config.max_message_bytes)
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or "message" not in payload:
        raise APIError(400, 'the body must be a JSON object with a "message" key, like {"message": "hi"}')
    unknown = set(payload) - {"message", "topic"}
    if unknown:
        raise APIError(400, f"unknown key(s) in the body: {', '.join(sorted(unknown))}; expected message, topic")
    topic = payload.get("topic")
    if topic is not None and (not isinstance(topic, str) or not topic):
        raise APIError(400, '"topic" must be a non-empty string or null')
    return _produce(payload["message"], topic)


@blueprint.route("/produce/<path:message>", methods=["GET", "POST"])
def produce_path(message: str) -> Response:
    """Queue the path's text as a message (GET only in debug, for a browser's address bar)."""
    if request.method == "GET" and not current_app.debug:
        raise APIError(
            405, "GET /produce/<message> is only allowed when app.debug is on; use POST", {"Allow": "POST"}
        )
    limit = _queue().config.max_message_bytes
    if len(message.encode()) > limit:
        raise APIError(413, f"the message is larger than MEMQUEUE_MAX_MESSAGE_BYTES ({limit} bytes)")
    topic = request.args.get("topic") or None
    return _produce(message, topic)


# -- jobs ----------------------------------------------------------------------
def _job_or_404(job_id: str) -> Job:
    job = _queue().get_job(job_id)
    if job is None:
        raise APIError(404, f"no job {job_id!r}: it never existed here, or it finished more than"
                       " MEMQUEUE_RESULT_TTL seconds ago (or MEMQUEUE_MAX_FINISHED jobs ago)")
    return job


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise APIError(400, f"{name} must be between {lo} and {hi}, not {value}")
    return value


def status_arg() -> JobStatus | None:
    raw = request.args.get("status") or None
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise APIError(400, f"status must be one of {choices}, not {raw!r}") from None


@blueprint.get("/jobs")
def jobs() -> Response:
    """Jobs, newest first: ``?status=failed&limit=50&offset=0``."""
    status = status_arg()
    limit = _int_arg("limit", 50, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 10**9)
    queue = _queue()
    counts = queue.storage.counts()
    total = counts[status.value] if status is not None else sum(counts.values())
    found = queue.storage.jobs(status, limit, offset)
    return jsonify(jobs=[j.to_dict() for j in found], total=total, limit=limit, offset=offset,
                   status=None if status is None else status.value)


@blueprint.get("/jobs/<job_id>")
def job(job_id: str) -> Response:
    if job_id == "purge":  # the POST-only route, not a job id
        raise MethodNotAllowed(valid_methods=["POST"], description="use POST to purge finished jobs")
    return jsonify(_job_or_404(job_id).to_dict())


@blueprint.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    found = _job_or_404(job_id)
    if not found.cancel():
        raise APIError(409, f"job {job_id} is {found.status.value}; only a queued or scheduled job can be cancelled")
    return jsonify(id=found.id, status=found.status.value)


@blueprint.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    found = _job_or_404(job_id)
    if not _queue().requeue(found):
        raise APIError(409, f"job {job_id} is {found.status.value}; only a failed or cancelled job can be retried")
    return _accepted(found)


@blueprint.post("/jobs/purge")
def purge_jobs() -> Response:
    """Forget every finished job (succeeded, failed, cancelled)."""
    return jsonify(purged=_queue().storage.purge_finished())


# -- the process -------------------------------------------------------------------
@blueprint.get("/threads")
def threads() -> Response:
    """This process, this app's consumer, and every thread with whose consumer it is."""
    queue = _queue()
    owners = {q.consumer_ident: q.app.name for q in list(_QUEUES) if q.consumer_ident is not None}
    listing = [
        {
            "name": t.name,
            "ident": t.ident,
            "daemon": t.daemon,
            "alive": t.is_alive(),
            "is_consumer": t.ident == queue.consumer_ident and queue.consumer_thread is not None,
            "consumer_of": owners.get(t.ident) if t.ident is not None else None,
        }
        for t in threading.enumerate()
    ]
    return jsonify(pid=os.getpid(), app=queue.app.name, consumer=queue.consumer_info(), threads=listing)


@blueprint.get("/stats")
def stats() -> Response:
    return jsonify(_queue().stats())


@blueprint.get("/health")
def health() -> Response:
    """200 while the consumer runs or is not needed; 503 if it is dead and cannot be restarted,
    or while the job store fails."""
    queue = _queue()
    info = queue.consumer_info()
    if info["store_error"] is not None:  # the consumer backs off until the store works again
        return error_response(503, f"the job store fails, jobs do not run until it works again: {info['store_error']}")
    if info["enabled"] and not queue.closed and not info["alive"] and not queue.ensure_consumer():
        return error_response(503, f"the consumer thread is dead and could not be restarted: {queue.start_error}")
    info = queue.consumer_info()
    return jsonify(status="ok", pid=os.getpid(), consumer_alive=info["alive"], depth=queue.storage.depth())


@blueprint.route("/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def not_found(rest: str) -> Response:
    """JSON for every URL under the prefix that no route takes: 405 or 404."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != "memqueue.not_found":
            allowed.add(method)
    if allowed:
        raise MethodNotAllowed(valid_methods=sorted(allowed),
                               description=f"{request.method} is not allowed here; use {', '.join(sorted(allowed))}")
    raise NotFound(f"no memqueue route at {request.path}")


# The dashboard's pages and forms are routes of this same blueprint.
from . import dashboard  # noqa: E402, F401
