"""The ``memqueue`` blueprint: JSON routes to produce messages and to look at jobs.

Every answer is JSON, errors too (``{"error": ..., "status": ...}``), also for
a URL under the prefix that matches no route, whatever its method (only the
dashboard's pages answer in HTML). Every JSON answer is strict JSON (no NaN
or Infinity, which ``JSON.parse`` refuses), and what comes in is parsed as
strictly: one JSON parser for request data, which refuses NaN, Infinity and
nesting deeper than :data:`MAX_JSON_DEPTH`. Access: with ``MEMQUEUE_TOKEN``
set a request needs ``Authorization: Bearer <token>``; without it the routes
answer only a debug or testing app. Unsafe methods from a browser must come
from the same origin (no cross-site request can enqueue).
"""

from __future__ import annotations

import hmac
import json
import math
import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Response, current_app, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from . import access
from .display import MAX_JSON_DEPTH, nested_deeper_than, safe_repr
from .exceptions import (
    BrokerError,
    ConfigurationError,
    QueueClosed,
    QueueFull,
    StorageError,
    UnknownQueueError,
    UnknownTopicError,
)
from .job import Job, JobStatus
from .options import check_queue_name
from .routes import APIError, RouteTable
from .state import AppQueue, all_queues

if TYPE_CHECKING:
    from .jobfilter import JobFilter

#: The bulk actions, as the routes name them (``jobfilter.ACTIONS``, which is imported on first use).
_ACTIONS = ("retry", "cancel", "delete")

#: The JSON API's routes and hooks, put on a blueprint by :func:`~flask_memqueue.blueprint.make_blueprint`.
routes = RouteTable()

#: Seconds a client is asked to wait after a 503 for a full queue.
RETRY_AFTER = 1
#: Jobs one page of ``GET /jobs`` returns at most.
MAX_LIMIT = 500
#: Characters of a whole-number query argument at most (``int()`` is not asked to read more).
MAX_DIGITS = 18

__all__ = ["MAX_JSON_DEPTH", "APIError", "routes"]


def _queue() -> AppQueue:
    return current_app.extensions["memqueue"]  # type: ignore[no-any-return]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Every JSON answer of the blueprint: strict JSON, whatever the app's JSON provider does.

    Not ``jsonify``: Flask's provider writes ``NaN`` and ``Infinity`` (as
    Python's ``json`` does by default), which ``JSON.parse`` refuses, so
    one such number would break the dashboard's polling. Here that is a
    ``ValueError``, a bug answered as a 500, never invalid JSON.
    """
    body = json.dumps(data, allow_nan=False, separators=(",", ":"))
    response = current_app.response_class(body + "\n", status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message, "status": status}, status, headers)


def preferred_form() -> str | None:
    """``"text/html"`` or ``"application/json"``, whichever the client's ``Accept`` prefers
    (``*/*``: HTML), or None without an ``Accept`` that names either."""
    return request.accept_mimetypes.best_match(["text/html", "application/json"])


def asks_for_json() -> bool:
    """Whether the client's ``Accept`` prefers JSON to HTML (an API client, ``httpie``);
    a browser, ``curl``'s ``*/*`` and a request without ``Accept`` do not."""
    return preferred_form() == "application/json"


def _error_answer(status: int, message: str, headers: dict[str, str]) -> ResponseReturnValue:
    """An error in the form the view answers in: a page for a dashboard page asked for by a
    browser, else JSON (also on a page, for a client that asks for JSON)."""
    render_page = access.view_marker(access.PAGE_ATTR)
    if render_page is not None and not asks_for_json():
        try:
            return render_page(status, message, headers)  # type: ignore[no-any-return]
        except Exception:  # the page itself failed: the log has it, the client gets JSON
            current_app.logger.exception("rendering the memqueue error page for a %s failed", status)
    return error_response(status, message, headers)


@routes.errorhandler(APIError)
def _api_error(exc: APIError) -> ResponseReturnValue:
    return _error_answer(exc.status, exc.message, exc.headers)


@routes.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    """Werkzeug's errors (400, 404, 405, 413, ...) in our form, not its HTML page."""
    headers = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return _error_answer(exc.code or 500, exc.description or exc.name, headers)


@routes.errorhandler(Exception)
def _unexpected_error(exc: Exception) -> ResponseReturnValue:
    """A bug (or a store that failed) answers a 500 in our form; the traceback goes to the log only.

    Without this a debug app would show its traceback page, and a
    production one Flask's HTML 500, to a client that asked for JSON.
    """
    current_app.logger.error("Exception on %s [%s]", request.path, request.method, exc_info=exc)
    return _error_answer(500, "internal error in the memqueue routes; the app's log has the traceback", {})


@routes.before_app_request
def _unrouted() -> ResponseReturnValue | None:
    """Answer a request under the prefix that matches no route (404) or not its method (405).

    Flask hands such a request to the app's error handlers only, never to
    the blueprint's (it matched no endpoint of ours), and werkzeug answers
    it with an HTML page. A catch-all route cannot take every case: a route
    lists its methods (TRACE, PROPFIND or a made-up one would still be an
    HTML 405) and the ``path`` converter does not match a newline. So this
    app-wide hook takes what routing refused under our prefix; everything
    else goes on untouched (it costs one attribute test per request). The
    access rule comes first, as for any route: without the token the
    answer is a 401, and the routes we have are not disclosed.
    """
    if request.routing_exception is None:
        return None
    return _answer_unrouted()


def _answer_unrouted() -> ResponseReturnValue | None:
    exc = request.routing_exception
    if not isinstance(exc, HTTPException) or isinstance(exc, RequestRedirect):
        return None
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    prefix = queue.config.url_prefix if queue is not None else None
    path = request.path
    if prefix is None or not (path == prefix or path.startswith(prefix + "/")):
        return None
    try:
        _authorize()
    except APIError as refused:
        return error_response(refused.status, refused.message, refused.headers)
    if isinstance(exc, MethodNotAllowed):
        allowed = sorted(exc.valid_methods or ())
        return error_response(405, f"{shorten(request.method)} is not allowed here; use {', '.join(allowed)}",
                              {"Allow": ", ".join(allowed)})
    if exc.code == 404:
        return error_response(404, f"no memqueue route at {shorten(path, 200)}")
    return error_response(exc.code or 500, exc.description or exc.name)


def shorten(text: str, limit: int = 40) -> str:
    """``repr(text)`` of at most about ``limit`` characters: what an error message echoes of input."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f" (and {len(text) - limit} more characters)"


# -- reading input ---------------------------------------------------------------------
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity): send a number, a string or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def parse_json(data: bytes | str) -> Any:
    """The one way request data (a body, a cookie) is read as JSON: strictly.

    Refuses what ``json.loads`` takes but JSON does not have, or what would
    fail later: ``NaN``, ``Infinity``, a number too large for a float (it
    would become ``inf``), and arrays or objects nested deeper than
    :data:`MAX_JSON_DEPTH` (a kilobyte of ``[`` makes ``json.loads`` raise
    ``RecursionError``, and anything deep breaks encoders and handlers
    downstream). The depth is counted only when the text holds more
    brackets than the limit, so a common body costs nothing extra.

    :raises ValueError: with a message for the client.
    """
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        value = _TOO_DEEP
    if value is not _TOO_DEEP:
        brackets = data.count(b"[") + data.count(b"{") if isinstance(data, bytes) else data.count("[") + data.count("{")
        if brackets <= MAX_JSON_DEPTH or not nested_deeper_than(value, MAX_JSON_DEPTH):
            return value
    raise ValueError(f"arrays or objects nest more than {MAX_JSON_DEPTH} levels deep")


_TOO_DEEP = object()


@routes.errorhandler(QueueFull)
def _queue_full(exc: QueueFull) -> Response:
    return error_response(503, str(exc), {"Retry-After": str(RETRY_AFTER)})


@routes.errorhandler(StorageError)
def _storage_error(exc: StorageError) -> Response:
    current_app.logger.warning("memqueue: the store failed: %s", exc)
    return error_response(
        503, f"the job store is unavailable, try again later: {exc}", {"Retry-After": str(RETRY_AFTER)}
    )


@routes.errorhandler(BrokerError)
def _broker_unavailable(exc: BrokerError) -> Response:
    current_app.logger.warning("memqueue: a message was not published: %s", exc)  # the URL is redacted
    return error_response(503, f"the message broker is unavailable, try again later: {exc}",
                          {"Retry-After": str(RETRY_AFTER)})


@routes.errorhandler(QueueClosed)
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
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[" is no origin of ours (urlsplit raises on a broken IPv6 host)
        return False
    return parts.netloc == request.host and parts.scheme == request.scheme


@routes.before_request
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
    return json_response({"id": job.id, "status": job.status.value}, 202,
                         {"Location": url_for("memqueue.job", job_id=job.id)})


def _produce(message: Any, topic: str | None) -> Response:
    queue = _queue()
    try:
        task = queue.registry.handler(topic)
    except UnknownTopicError as exc:
        raise APIError(404, str(exc)) from None
    try:
        sent = queue.produce(task, message)
    except UnknownQueueError as exc:  # the app's configuration, not the request, is wrong
        raise APIError(500, f"the handler cannot queue its message: {exc}") from None
    if isinstance(sent, Job):
        return _accepted(sent)
    # a broker's receipt: it confirmed the message, there is no job to look at here
    return json_response({"id": sent.id, "status": sent.status, "queue": sent.queue}, 202)


def _content_type_hint() -> str:
    """Why a body may not be JSON: a form, or another Content-Type (the body is parsed as JSON anyway)."""
    mimetype = request.mimetype
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        what = f"a form ({mimetype})"
    elif mimetype and not request.is_json:
        what = mimetype
    else:
        return ""
    return (
        f". This request sent {what}: send the message as JSON with 'Content-Type: application/json',"
        ' like {"message": "hi"}'
    )


@routes.post("/produce")
def produce() -> Response:
    """Queue ``{"message": <any JSON>, "topic": <optional str>}`` for its handler."""
    data = _read_body(_queue().config.max_message_bytes)
    try:
        payload = parse_json(data)
    except ValueError as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}{_content_type_hint()}") from None
    if not isinstance(payload, dict) or "message" not in payload:
        raise APIError(400, 'the body must be a JSON object with a "message" key, like {"message": "hi"}')
    unknown = set(payload) - {"message", "topic"}
    if unknown:
        raise APIError(400, f"unknown key(s) in the body: {', '.join(sorted(unknown))}; expected message, topic")
    topic = payload.get("topic")
    if topic is not None and (not isinstance(topic, str) or not topic):
        raise APIError(400, '"topic" must be a non-empty string or null')
    return _produce(payload["message"], topic)


@routes.route("/produce/<path:message>", methods=["GET", "POST"])
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
def job_or_404(job_id: str) -> Job:
    job = _queue().get_job(job_id)
    if job is None:
        raise APIError(404, f"no job {shorten(job_id, 100)}: it never existed here, or it finished more than"
                       " MEMQUEUE_RESULT_TTL seconds ago (or MEMQUEUE_MAX_FINISHED jobs ago)")
    return job


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    return whole_number(name, raw, lo, hi)


def whole_number(name: str, raw: str, lo: int, hi: int) -> int:
    """The query argument ``name`` as an int from ``lo`` to ``hi``, or a 400.

    Checked by what it is made of, not by ``int()`` alone: ``int()`` also
    takes ``" 5"``, ``"+5"``, ``"1_0"`` and non-ASCII digits like ``"٥"``,
    and raises ``ValueError`` for more than 4,300 digits, while
    ``str.isdigit()`` is True for ``"²"``, which ``int()`` refuses. Only
    ASCII digits pass, and no more than :data:`MAX_DIGITS` of them.
    """
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS):
        raise APIError(400, f"{name} must be a whole number from {lo} to {hi} (digits 0-9 only), not {shorten(raw)}")
    value = int(raw)
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
        raise APIError(400, f"status must be one of {choices}, not {shorten(raw)}") from None


def queue_arg() -> str | None:
    """The ``queue`` query argument: a queue name, or a 400 saying what one is."""
    raw = request.args.get("queue") or None
    if raw is None:
        return None
    try:
        return check_queue_name(raw, "queue")
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def group_arg() -> str | None:
    """The ``group`` query argument: a group id (``Group.id``), or a 400."""
    raw = request.args.get("group") or None
    if raw is not None and (len(raw) > 200 or not raw.isprintable()):
        raise APIError(400, f"group must be a group id (Group.id, at most 200 characters), not {shorten(raw)}")
    return raw


#: Query parameters of ``GET /jobs`` that only the filter of issue 24 reads.
_FILTER_ONLY = ("task", "q", "since", "until")


def filter_args() -> JobFilter | None:
    """The filter in the query string (``task q status queue since until``), or None when the
    request asks only what ``GET /jobs`` always took (one ``status``, one ``queue``)."""
    args = request.args
    status = args.get("status") or ""
    if not any(args.get(name) for name in _FILTER_ONLY) and "," not in status:
        return None
    values = {name: args.get(name) for name in ("task", "q", "status", "queue", "since", "until")}
    from .jobfilter import FilterError, parse_filter  # on first use: a plain enqueue never needs it

    try:
        flt = parse_filter(values, strict=False)
        if flt.queue is not None:
            check_queue_name(flt.queue, "queue")
    except (FilterError, ValueError) as exc:
        raise APIError(400, str(exc)) from None
    return flt


@routes.get("/jobs")
def jobs() -> Response:
    """Jobs, newest first: ``?status=failed&queue=emails&limit=50&offset=0``; with
    ``?group=<id>``, that group's members in member order; also ``task=``, ``q=`` (text in
    the arguments or the error), ``since=``/``until=`` (ISO 8601 or Unix time, on the
    enqueue time) and ``status=failed,cancelled``."""
    flt = filter_args()
    group = group_arg()
    if group is not None:
        return _group_listing(group, flt)
    if flt is not None:
        limit = _int_arg("limit", 50, 1, MAX_LIMIT)
        offset = _int_arg("offset", 0, 0, 10**9)
        queue = _queue()
        found = queue.find_jobs(flt, limit, offset)
        return json_response({"jobs": job_dicts(found), "total": queue.count_jobs(flt), "limit": limit,
                              "offset": offset, "status": ",".join(flt.statuses) if flt.statuses else None,
                              "queue": flt.queue, "filter": flt.to_dict()})
    status = status_arg()
    name = queue_arg()
    limit = _int_arg("limit", 50, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 10**9)
    queue = _queue()
    counts = queue.storage.counts(name)
    total = counts[status.value] if status is not None else sum(counts.values())
    found = queue.storage.jobs(status, limit, offset, queue=name)
    return json_response({"jobs": job_dicts(found), "total": total, "limit": limit, "offset": offset,
                          "status": None if status is None else status.value, "queue": name, "filter": {}})


def group_members(group: str, flt: JobFilter | None) -> list[Job]:
    """The members of ``group`` (member order) that ``flt`` matches (None: the ``status`` and
    ``queue`` query arguments, each one value): the group and a filter combine."""
    from .jobfilter import JobFilter

    if flt is None:
        status = status_arg()
        flt = JobFilter(statuses=None if status is None else (status.value,), queue=queue_arg())
    return [j for j in _queue().storage.group_jobs(group) or [] if flt.matches(j)]


def _group_listing(group: str, flt: JobFilter | None) -> Response:
    members = group_members(group, flt)
    limit = _int_arg("limit", 50, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 10**9)
    status, name = request.args.get("status") or None, request.args.get("queue") or None
    return json_response({"jobs": job_dicts(members[offset:offset + limit]), "total": len(members),
                          "limit": limit, "offset": offset, "status": status, "queue": name, "group": group,
                          "filter": {} if flt is None else flt.to_dict()})


def job_dicts(jobs: list[Job]) -> list[dict[str, Any]]:
    """:func:`job_dict` of each job, their ``dependents`` read in one store call for the
    whole page (``Storage.dependents_many``), not one per job (a round trip each on Redis)."""
    if not jobs:
        return []
    try:
        found = _queue().storage.dependents_many([j.id for j in jobs])
    except Exception:  # a store that is down: the rows still show (to_dict() never raises)
        current_app.logger.exception("the dependents of %d jobs could not be read", len(jobs))
        found = {}
    return [job_dict(j, found.get(j.id, [])) for j in jobs]


def job_dict(job: Job, dependents: list[str] | None = None) -> dict[str, Any]:
    """``job.to_dict()``, or what can be said of a job whose ``to_dict()`` failed.

    ``to_dict()`` is meant never to raise, but a list is only as robust as
    its worst row: one job must never take ``/jobs`` or the dashboard down.
    """
    try:
        return job.to_dict(dependents=dependents)
    except Exception:
        current_app.logger.exception("job %s could not be shown", safe_repr(job, 200))
    return {
        "id": job.id, "task": None, "topic": None, "queue": None, "priority": None, "unique_key": None, "tick": None,
        "status": "unknown", "group": None, "depends_on": [], "dependents": [],
        "args": [], "kwargs": {}, "result": None, "error": "this job could not be shown (the app's log says why)",
        "traceback": None, "attempts": None, "retries": None, "progress": None, "progress_message": None,
        "enqueued_at": None, "eta": None, "started_at": None, "finished_at": None, "duration": None,
    }


@routes.get("/jobs/<job_id>")
def job(job_id: str) -> Response:
    if job_id == "purge":  # the POST-only route, not a job id
        raise MethodNotAllowed(valid_methods=["POST"], description="use POST to purge finished jobs")
    if job_id in _ACTIONS:  # POST /jobs/retry|cancel|delete, not a job id
        raise MethodNotAllowed(valid_methods=["POST"], description=f"use POST to {job_id} the jobs a filter matches")
    return json_response(job_or_404(job_id).to_dict())


@routes.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    found = job_or_404(job_id)
    if not found.cancel():
        raise APIError(409, f"job {job_id} is {found.status.value}; only a queued, scheduled or deferred job can be"
                       " cancelled")
    return json_response({"id": found.id, "status": found.status.value})


@routes.get("/groups/<group_id>")
def group_route(group_id: str) -> Response:
    """A group (``mq.group(...)``): its status and its members in member order."""
    from .job import group_status

    members = _queue().storage.group_jobs(group_id)
    if not members:
        raise APIError(404, f"no group {shorten(group_id, 100)}: it never existed here, or its jobs were forgotten"
                       " (MEMQUEUE_RESULT_TTL, MEMQUEUE_MAX_FINISHED)")
    return json_response({"id": group_id, "status": group_status(members), "jobs": job_dicts(members)})


@routes.post("/jobs/<job_id>/abort")
def abort_job(job_id: str) -> Response:
    """Cancel a waiting job, or ask a running one to stop (wherever it runs)."""
    found = job_or_404(job_id)
    if not _queue().jobs.abort(found, by=f"POST /jobs/{job_id}/abort from {request.remote_addr or 'unknown'}"):
        raise APIError(409, f"job {job_id} is {found.status.value}; only a waiting or running job can be aborted")
    # a waiting job is cancelled now; a running one stops when it sees the request (or is made to)
    return json_response({"id": found.id, "status": found.status.value, "abort_requested": not found.finished})


@routes.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    found = job_or_404(job_id)
    if not _queue().requeue(found):
        raise APIError(409, f"job {job_id} is {found.status.value}; only a failed or cancelled job can be retried")
    return _accepted(found)


@routes.post("/jobs/purge")
def purge_jobs() -> Response:
    """Forget every finished job (succeeded, failed, cancelled)."""
    return json_response({"purged": _queue().storage.purge_finished()})


def _bulk(action: str) -> Response:
    """``POST /jobs/<action>`` with ``{"filter": {...}}``: act on every match; answer the count."""
    data = _read_body(_queue().config.max_message_bytes)
    try:
        payload = parse_json(data) if data.strip() else None
    except ValueError as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}{_content_type_hint()}") from None
    if not isinstance(payload, dict) or "filter" not in payload:
        raise APIError(400, f'the body must be a JSON object with a "filter" key, like'
                            f' {{"filter": {{"task": "send_email", "status": "failed"}}}}; {{"filter": {{}}}}'
                            f" {action}s every job it can")
    unknown = set(payload) - {"filter"}
    if unknown:
        raise APIError(400, f"unknown key(s) in the body: {', '.join(sorted(unknown))}; expected filter")
    from .jobfilter import FilterError, parse_filter

    try:
        flt = parse_filter(payload["filter"])
        if flt.queue is not None:
            check_queue_name(flt.queue, "queue")
    except (FilterError, ValueError) as exc:
        raise APIError(400, str(exc)) from None
    count = _queue().act_on(flt, action)
    return json_response({"action": action, "count": count, "filter": flt.to_dict()})


@routes.post("/jobs/retry")
def retry_jobs() -> Response:
    """Queue again every failed or cancelled job the filter of the JSON body matches."""
    return _bulk("retry")


@routes.post("/jobs/cancel")
def cancel_jobs() -> Response:
    """Cancel every queued or scheduled job the filter of the JSON body matches."""
    return _bulk("cancel")


@routes.post("/jobs/delete")
def delete_jobs() -> Response:
    """Forget every finished job the filter of the JSON body matches (waiting and running jobs stay)."""
    return _bulk("delete")


# -- queues --------------------------------------------------------------------------
def _pause_or_resume(name: str, pause: bool) -> Response:
    queue = _queue()
    try:
        changed = queue.pause(name) if pause else queue.resume(name)
    except ConfigurationError as exc:
        raise APIError(501, str(exc)) from None
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    return json_response({"queue": name, "paused": pause, "changed": changed})


@routes.post("/queues/<name>/pause")
def pause_queue(name: str) -> Response:
    """Start no job of the queue, in every process sharing the store, until it is resumed."""
    return _pause_or_resume(name, True)


@routes.post("/queues/<name>/resume")
def resume_queue(name: str) -> Response:
    """Start the jobs of a paused queue again."""
    return _pause_or_resume(name, False)


# -- the process -------------------------------------------------------------------
@routes.get("/threads")
def threads() -> Response:
    """This process, this app's consumer, and every thread with whose consumer it is."""
    queue = _queue()
    owners: dict[int, tuple[str, str]] = {}
    for q in all_queues():
        for name, idents in q.pools.idents.items():
            for ident in idents:
                owners[ident] = (q.app.name, name)
    listing = []
    for t in threading.enumerate():
        owner = owners.get(t.ident) if t.ident is not None else None
        listing.append({
            "name": t.name,
            "ident": t.ident,
            "daemon": t.daemon,
            "alive": t.is_alive(),
            "is_consumer": owner is not None and owner[0] == queue.app.name,
            "consumer_of": None if owner is None else owner[0],
            "queue": None if owner is None else owner[1],
        })
    return json_response({"pid": os.getpid(), "app": queue.app.name, "consumer": queue.consumer_info(),
                          "threads": listing, "amqp": queue.transport.info(), "paused": sorted(queue.paused())})


@routes.get("/periodic")
def periodic() -> Response:
    """Each periodic task: its schedule, time zone, next run, last run and its job;
    the scheduler of this process, and in memory mode which process holds the schedule."""
    return json_response(_queue().scheduler.info())


@routes.get("/stats")
def stats() -> Response:
    return json_response(_queue().stats())


@routes.get("/limits")
def limits() -> Response:
    """Every rate and concurrency limit in use: task, key, limit, in use, waiting (see docs/limits.md)."""
    return json_response({"limits": _queue().limit_uses()})


@routes.get("/health")
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
    unwell = queue.transport.health()
    if unwell is not None:
        return error_response(503, unwell)
    return json_response({"status": "ok", "pid": os.getpid(), "consumer_alive": info["alive"],
                          "depth": queue.storage.depth(),
                          "threads": sum(1 for t in info["threads"] if t["alive"]), "amqp": queue.transport.info()})


@routes.get("/metrics")
def metrics() -> Response:
    """Prometheus text format (the ``metrics`` extra; 501 without it, naming the pip command)."""
    from .metrics import response

    return response(_queue())

