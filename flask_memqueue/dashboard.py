"""The dashboard: HTML pages and forms on the ``memqueue`` blueprint.

``GET <prefix>/`` shows the queue at a glance (consumer, depth, counts,
throughput, recent jobs); ``<prefix>/ui/...`` holds a job's page, the sign-in
form and the actions (cancel, retry, purge). Everything is rendered on the
server, so the page works with JavaScript off; with it on, a few lines of
script poll the JSON routes (``/stats`` and ``/jobs``) and update the page
in place.

The same access rule as the JSON API guards every page (``_authorize`` in
:mod:`.views`); pages only answer its refusals in HTML. Every form posts a
CSRF token (:mod:`.access`). Job data is only ever shown through Jinja's
autoescaping or the script's ``textContent``, and a Content-Security-Policy
with a per-response nonce refuses any script the page did not put there.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from . import access
from .exceptions import ConfigurationError, QueueClosed
from .job import Job, JobStatus, isotime
from .routes import APIError, RouteTable
from .state import AppQueue
from .views import (
    error_response,
    group_arg,
    group_members,
    job_dicts,
    job_or_404,
    json_response,
    parse_json,
    preferred_form,
    queue_arg,
    shorten,
    status_arg,
    whole_number,
)

#: The pages' routes and hooks, put on a blueprint by :func:`~flask_memqueue.blueprint.make_blueprint`.
routes = RouteTable()

#: Jobs one page of the dashboard's table shows.
PER_PAGE = 25
#: Seconds between the script's refreshes unless ``?refresh=`` says otherwise.
DEFAULT_REFRESH = 2.0
#: Characters of arguments, result or traceback a job's page shows at most.
SHOW_LIMIT = 20_000
#: Cookie carrying the outcome of the last action to the page shown after the redirect.
NOTICE_COOKIE = "memqueue_notice"
#: Characters of a notice's text kept; what we write stays far below a browser's 4 KB per cookie.
NOTICE_TEXT_LIMIT = 300
#: A notice cookie longer than this is none of ours and is not read at all.
NOTICE_COOKIE_LIMIT = 4096
#: What ``?refresh=`` may look like: seconds, ASCII digits, at most six before and after the point.
_SECONDS = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")

STATUSES = [s.value for s in JobStatus]
_WAITING = {"queued", "scheduled", "deferred"}  # what Cancel takes (a deferred job too)
#: Jobs a workflow page shows at most (a walk of its links stops there, and says so).
WORKFLOW_LIMIT = 500
_RETRYABLE = {"failed", "cancelled", "aborted"}


def _queue() -> AppQueue:
    return current_app.extensions["memqueue"]  # type: ignore[no-any-return]


# -- formatting (the page's script mirrors these two) ----------------------------
def fmt_time(iso: str | None) -> str:
    """An ISO time from ``Job.to_dict()`` as ``HH:MM:SS`` in UTC (with the date if not today)."""
    if not iso:
        return "—"
    when = _dt.datetime.fromisoformat(iso).astimezone(_dt.timezone.utc)
    if when.date() == _dt.datetime.now(_dt.timezone.utc).date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    """A duration a person reads at a glance: ``850 ms``, ``3.4 s``, ``2 min 05 s``, ``1 h 03 min``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _shown(value: Any) -> str:
    """Arguments or a result as indented JSON text, cut to :data:`SHOW_LIMIT` characters.

    ``Job.to_dict()`` made them JSON-safe already (a repr for anything else).
    """
    text = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    return _cut(text)


def _cut(text: str | None) -> str:
    if text is None:
        return ""
    if len(text) > SHOW_LIMIT:
        return text[:SHOW_LIMIT] + f"\n… ({len(text) - SHOW_LIMIT} more characters not shown)"
    return text


def chart(throughput: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of an inline SVG chart of jobs finished per time bucket (the script redraws them)."""
    peak = max((b["jobs"] for b in throughput), default=0)
    height, width = 60.0, 600.0
    step = width / max(1, len(throughput))
    bars = []
    for i, bucket in enumerate(throughput):
        # Any bucket with a job gets a visible bar, however small next to the peak.
        h = max(1.5, bucket["jobs"] / peak * height) if bucket["jobs"] else 0.0
        when = _dt.datetime.fromtimestamp(bucket["t"], _dt.timezone.utc).strftime("%H:%M:%S")
        bars.append({"x": round(i * step + 1, 2), "y": round(height - h, 2), "w": round(step - 2, 2),
                     "h": round(h, 2), "label": f"{when}: {bucket['jobs']} job(s)"})
    span = len(throughput) * (throughput[1]["t"] - throughput[0]["t"]) if len(throughput) > 1 else 0
    return {"bars": bars, "peak": peak, "total": sum(b["jobs"] for b in throughput),
            "minutes": round(span / 60), "width": width, "height": height}


def consumer_state(stats: dict[str, Any]) -> tuple[str, str]:
    """(css class, words) for the consumer: what a person needs to know first."""
    info = stats["consumer"]
    if stats["closed"]:
        return "dead", "Shut down"
    if stats["eager"]:
        return "idle", "Eager mode: jobs run inline at enqueue"
    if not info["enabled"]:
        return "idle", "No consumer in this process (MEMQUEUE_CONSUMER = False)"
    if info["alive"]:
        return ("busy", "Running a job") if info["current"] else ("ok", "Alive, waiting for jobs")
    if info["starts"]:
        return "dead", "Dead: it stopped and could not be restarted"
    return "idle", "Not started yet: it starts on the first enqueue or request"


# -- page plumbing ---------------------------------------------------------------------
def _render(template: str, **context: Any) -> bytes:
    """A page as UTF-8 bytes, whatever the job data in it holds.

    Job data may hold lone surrogates (``"\\ud800"`` is valid JSON, so a
    message can carry one), which UTF-8 cannot encode: encoding the page
    here, with escapes for them, keeps one such job from making every
    page that shows it a 500.
    """
    return render_template(template, **context).encode("utf-8", "backslashreplace")


def _error_page(status: int, message: str, headers: dict[str, str]) -> ResponseReturnValue:
    """How a page answers a refusal or an error: the sign-in form for a 401, else a short page."""
    if status == 401:
        return _sign_in_page(401, None, _safe_next(request.full_path if request.method == "GET" else None))
    body = _render("memqueue/error.html", status=status, message=message, **_common())
    return body, status, headers


_page = access.page(_error_page)


def _index_error(status: int, message: str, headers: dict[str, str]) -> ResponseReturnValue:
    """The dashboard's own URL answers JSON to a client that does not ask for HTML (see
    :func:`index`): its errors, too."""
    if _wants_page():
        return _error_page(status, message, headers)
    return error_response(status, message, headers)


def _wants_page() -> bool:
    return preferred_form() == "text/html"


def _common() -> dict[str, Any]:
    """Context every page template uses."""
    queue = _queue()
    token = queue.config.token
    nonce = getattr(g, "_memqueue_nonce", None)
    if nonce is None:
        nonce = g._memqueue_nonce = secrets.token_urlsafe(16)
    return {
        "app_name": queue.app.name,
        "csrf_token": access.csrf_token(),
        "csrf_field": access.CSRF_FIELD,
        "csp_nonce": nonce,
        "token_set": bool(token),
        "signed_in": token is not None and access.session_ok(token),
        "fmt_time": fmt_time,
        "fmt_duration": fmt_duration,
    }


@routes.after_request
def _page_headers(response: Response) -> Response:
    """Pages get a strict CSP (nonce'd script only), no framing, no caching, and the CSRF cookie."""
    if access.view_marker(access.PAGE_ATTR) is None:
        return response
    nonce = getattr(g, "_memqueue_nonce", "")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    access.save_csrf_cookie(response)
    if getattr(g, "_memqueue_notice_shown", False):
        access.delete_cookie(response, NOTICE_COOKIE)
    return response


def _require_csrf() -> None:
    """Every form of the dashboard proves it was served by us, signed in or not.

    Without a token (a debug app) nothing else would stop another site's
    page from posting to a form's URL in a developer's browser.
    """
    if not access.csrf_ok():
        raise APIError(403, "This form's security token is missing or wrong (it expired, or the form came"
                            " from another site). Go back, reload the dashboard and try again.")


def _home() -> str:
    return url_for("memqueue.index")


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path of this dashboard, else the dashboard: never an open redirect."""
    home = _home()
    if not target or not target.startswith(home) or "//" in target or "\\" in target:
        return home
    return target.rstrip("?")


def _notice(response: Response, kind: str, text: str) -> Response:
    if len(text) > NOTICE_TEXT_LIMIT:
        text = text[: NOTICE_TEXT_LIMIT - 1] + "…"
    raw = base64.urlsafe_b64encode(json.dumps({"k": kind, "m": text}).encode()).decode()
    access.set_cookie(response, NOTICE_COOKIE, raw, 60)
    return response


def _take_notice() -> dict[str, str] | None:
    """The notice the last action left, if the cookie holds one as :func:`_notice` writes it.

    The cookie is input like any other (anyone can set it in their own
    browser, a sibling site may set it for ours): it is read only if it is
    short, and used only if it is exactly a dict of two short strings.
    Anything else is ignored (and deleted), never an error.
    """
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    g._memqueue_notice_shown = True
    if len(raw) > NOTICE_COOKIE_LIMIT:
        return None
    try:
        data = parse_json(base64.urlsafe_b64decode(raw.encode("ascii")))
    except ValueError:  # also binascii.Error, UnicodeError, and what parse_json refuses
        return None
    if not (isinstance(data, dict) and data.keys() == {"k", "m"}
            and isinstance(data["k"], str) and isinstance(data["m"], str)):
        return None
    kind, text = data["k"], data["m"]
    return {"kind": kind if kind in ("ok", "error") else "error", "text": text[:NOTICE_TEXT_LIMIT]}


def _back(kind: str, text: str) -> Response:
    """Post/redirect/get: back to the page the form was on, with what happened."""
    return _notice(redirect(_safe_next(request.form.get("next")), 303), kind, text)


# -- pages ------------------------------------------------------------------------------
def _refresh() -> float:
    """``?refresh=`` in seconds: plain ASCII decimals only (``float()`` also takes "nan", "1_0" and "½")."""
    raw = request.args.get("refresh")
    if not raw:
        return DEFAULT_REFRESH
    if not _SECONDS.fullmatch(raw):
        raise APIError(400, f"refresh must be a number of seconds like 2 or 0.5 (0 = off), not {shorten(raw)}")
    value = float(raw)
    if value != 0 and not 0.2 <= value <= 3600:
        raise APIError(400, f"refresh must be 0 (off) or between 0.2 and 3600 seconds, not {shorten(raw)}")
    return value


def _page_number() -> int:
    return whole_number("page", request.args.get("page") or "1", 1, 10**6)


if TYPE_CHECKING:
    from .jobfilter import JobFilter

#: The search form's fields (the job filter's, besides status and queue, which have their links;
#: and ``group``, a group's members, which combines with them).
SEARCH_FIELDS = ("task", "q", "since", "until", "group")


def _search() -> JobFilter | None:
    """The job filter of the search form, or None when no search field is filled in."""
    values = {name: request.args.get(name) for name in SEARCH_FIELDS if name != "group"}
    if not any(values.values()):
        return None
    from .jobfilter import FilterError, parse_filter  # on first use: a plain enqueue never needs it

    try:
        return parse_filter({**values, "status": request.args.get("status"), "queue": request.args.get("queue")},
                            strict=False)
    except FilterError as exc:
        raise APIError(400, str(exc)) from None


def _listing(status: JobStatus | None, only: str | None, offset: int,
             flt: JobFilter | None) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """``(jobs of this page, how many match, counts by status)`` of the page's filters."""
    queue = _queue()
    shown = queue.storage.counts(only) if only is not None else queue.storage.counts()
    group = group_arg()
    if group is not None:  # the group's members that the other fields match, in member order
        members = group_members(group, flt)
        return job_dicts(members[offset:offset + PER_PAGE]), len(members), shown
    if flt is not None:
        return job_dicts(queue.find_jobs(flt, PER_PAGE, offset)), queue.count_jobs(flt), shown
    total = shown[status.value] if status is not None else sum(shown.values())
    return job_dicts(queue.storage.jobs(status, PER_PAGE, offset, queue=only)), total, shown


def _linker(status: JobStatus | None, only: str | None) -> Callable[..., str]:
    """``link(**changes)`` for the dashboard's template: this page's URL with ``changes``."""

    def link(**changes: Any) -> str:
        args: dict[str, Any] = {"status": status.value if status else None, "queue": only, "page": None,
                                "refresh": request.args.get("refresh"),
                                **{name: request.args.get(name) for name in SEARCH_FIELDS}}
        args.update(changes)
        return url_for("memqueue.index", **{k: v for k, v in args.items() if v not in (None, "", 1)})

    return link


def _gauge(depth: int, maxsize: int) -> dict[str, Any]:
    """How full the queue is, for the gauge: ``fill`` (0..1, None without a limit), its width and words."""
    fill = min(1.0, depth / maxsize) if maxsize else None
    # A queue with jobs in it never shows an empty gauge, nor "0.0% full".
    gauge_width = 0.0 if not depth or fill is None else max(1.0, round(fill * 100, 1))
    fill_text = "under 0.1%" if depth and fill is not None and fill < 0.001 else f"{(fill or 0) * 100:.1f}%"
    return {"fill": fill, "gauge_width": gauge_width, "fill_text": fill_text}


@routes.get("/")
@access.page(_index_error)
def index() -> ResponseReturnValue:
    """The dashboard; a client that does not ask for HTML gets the list of routes instead."""
    if not _wants_page():
        return json_response({"routes": sorted(
            str(rule) for rule in current_app.url_map.iter_rules() if rule.endpoint.startswith("memqueue.")
        )})
    status = status_arg()
    only = queue_arg()
    page_no = _page_number()
    refresh = _refresh()
    flt = _search()
    queue = _queue()
    stats = queue.stats()
    counts = stats["counts"]
    offset = (page_no - 1) * PER_PAGE
    jobs, total, shown = _listing(status, only, offset, flt)
    state_class, state_words = consumer_state(stats)
    return _render(
        "memqueue/dashboard.html",
        stats=stats,
        consumer=stats["consumer"],
        state_class=state_class,
        state_words=state_words,
        counts=counts,
        shown_counts=shown,
        statuses=STATUSES,
        status=status.value if status else None,
        queues=stats["queues"],
        only=only,
        total_jobs=sum(shown.values()),
        **_gauge(stats["depth"], stats["maxsize"]),
        chart=chart(stats["throughput"]),
        jobs=jobs,
        total=total,
        offset=offset,
        per_page=PER_PAGE,
        page=page_no,
        pages=max(1, math.ceil(total / PER_PAGE)),
        link=_linker(status, only),
        refresh=refresh,
        here=request.full_path.rstrip("?"),
        notice=_take_notice(),
        waiting=_WAITING,
        retryable=_RETRYABLE,
        now_iso=isotime(time.time()),
        periodic=queue.scheduler.info() if queue.registry.periodic else None,
        search={name: request.args.get(name) or "" for name in SEARCH_FIELDS},
        searched=flt.to_dict() if flt is not None else None,
        **_common(),
    )


@routes.get("/ui/jobs/<job_id>")
@_page
def job_page(job_id: str) -> ResponseReturnValue:
    """One job: its arguments (cut to a readable length), result, error and traceback."""
    data = job_or_404(job_id).to_dict()
    return _render(
        "memqueue/job.html",
        in_workflow=bool(data["group"] or data["depends_on"] or data["dependents"]),
        job=data,
        args_text=_shown(data["args"]),
        kwargs_text=_shown(data["kwargs"]) if data["kwargs"] else None,
        result_text=_shown(data["result"]) if data["status"] == "succeeded" else None,
        traceback_text=_cut(data["traceback"]),
        refresh=_refresh(),
        here=request.full_path.rstrip("?"),
        notice=_take_notice(),
        waiting=_WAITING,
        retryable=_RETRYABLE,
        **_common(),
    )


# -- workflows ----------------------------------------------------------------------------
def _walk(start: list[Job]) -> tuple[list[Job], dict[str, list[str]], bool]:
    """The jobs linked to ``start`` (its parents, dependents and groups, transitively), at most
    :data:`WORKFLOW_LIMIT`: ``(jobs, dependents by id, cut short)``. One dependents read and
    one group read per step of the walk, not per job."""
    queue = _queue()
    found: dict[str, Job] = {j.id: j for j in start[:WORKFLOW_LIMIT]}
    children: dict[str, list[str]] = {}
    groups: set[str] = set()
    frontier = list(found)
    while frontier and len(found) < WORKFLOW_LIMIT:
        children.update(queue.storage.dependents_many(frontier))
        wanted: list[str] = []
        for job_id in frontier:
            job = found[job_id]
            wanted += [*(job.options.after or ()), *children.get(job_id, ())]
            if job.options.group and job.options.group not in groups:
                groups.add(job.options.group)
                for member in (queue.storage.group_jobs(job.options.group) or [])[:WORKFLOW_LIMIT - len(found)]:
                    found.setdefault(member.id, member)
                    wanted.append(member.id)
        frontier = []
        for job_id in dict.fromkeys(wanted):
            if len(found) >= WORKFLOW_LIMIT:
                break
            if job_id not in found:
                other = queue.get_job(job_id)
                if other is not None:
                    found[job_id] = other
                    frontier.append(job_id)
            elif job_id not in children:
                frontier.append(job_id)
    if frontier:
        children.update(queue.storage.dependents_many([i for i in found if i not in children]))
    return _in_steps(list(found.values())), children, len(found) >= WORKFLOW_LIMIT or len(start) > WORKFLOW_LIMIT


def _in_steps(jobs: list[Job]) -> list[Job]:
    """``jobs`` parents first: by the longest chain of parents among them, then as they came."""
    ids = {j.id for j in jobs}
    step: dict[str, int] = {}
    left = list(jobs)
    while left:
        later = []
        for job in left:
            parents = [p for p in job.options.after or () if p in ids and p != job.id]
            if all(p in step for p in parents):
                step[job.id] = 1 + max((step[p] for p in parents), default=-1)
            else:
                later.append(job)
        if len(later) == len(left):  # a cycle cannot be made; a cut walk may miss a parent: show the rest last
            for job in later:
                step[job.id] = len(jobs)
            break
        left = later
    order = {j.id: i for i, j in enumerate(jobs)}
    return sorted(jobs, key=lambda j: (step[j.id], order[j.id]))


def _workflow_page(title: str, start: list[Job], group: str | None) -> ResponseReturnValue:
    from .job import group_status

    jobs, children, cut = _walk(start)
    rows = job_dicts(jobs)
    for row in rows:
        row["dependents"] = children.get(row["id"], [])
    members = [j for j in jobs if group is not None and j.options.group == group]
    return _render(
        "memqueue/workflow.html", title=title, jobs=rows, group=group, cut=cut, limit=WORKFLOW_LIMIT,
        group_status=group_status(members) if members else None,
        counts={s: sum(1 for r in rows if r["status"] == s) for s in STATUSES},
        refresh=_refresh(), **_common(),
    )


@routes.get("/ui/groups/<group_id>")
@_page
def group_page(group_id: str) -> ResponseReturnValue:
    """A group's page: its members and what waits on them (a chord's callback), with their states."""
    members = _queue().storage.group_jobs(group_id)
    if not members:
        raise APIError(404, f"no group {shorten(group_id, 100)}: it never existed here, or its jobs were forgotten")
    return _workflow_page(f"Group {group_id}", members, group_id)


@routes.get("/ui/jobs/<job_id>/workflow")
@_page
def workflow_page(job_id: str) -> ResponseReturnValue:
    """The workflow a job belongs to: every job linked to it, parents first, with their states."""
    return _workflow_page(f"Workflow of job {job_id}", [job_or_404(job_id)], None)


# -- actions ----------------------------------------------------------------------------
@routes.post("/ui/jobs/<job_id>/cancel")
@_page
def cancel_action(job_id: str) -> ResponseReturnValue:
    """The dashboard's Cancel button (the JSON API's is ``POST /jobs/<id>/cancel``)."""
    _require_csrf()
    job = _queue().get_job(job_id)
    if job is None:
        return _back("error", f"Job {job_id} is not known here (any more); nothing was cancelled.")
    if not job.cancel():
        return _back("error", f"Job {job_id} ({job.name}) is {job.status.value}: only a waiting job can be"
                              " cancelled, and a running one cannot be interrupted.")
    return _back("ok", f"Cancelled job {job_id} ({job.name}).")


@routes.post("/ui/jobs/<job_id>/abort")
@_page
def abort_action(job_id: str) -> ResponseReturnValue:
    """The job page's Abort button (the JSON API's is ``POST /jobs/<id>/abort``)."""
    _require_csrf()
    queue = _queue()
    job = queue.get_job(job_id)
    if job is None:
        return _back("error", f"Job {job_id} is not known here (any more); nothing was aborted.")
    if not queue.jobs.abort(job, by=f"the dashboard ({request.remote_addr or 'unknown'})"):
        return _back("error", f"Job {job_id} ({job.name}) is {job.status.value}: only a waiting or running job can"
                              " be aborted.")
    if job.finished:
        return _back("ok", f"Job {job_id} ({job.name}) is {job.status.value}.")
    return _back("ok", f"Job {job_id} ({job.name}) is asked to stop; it ends aborted.")


@routes.post("/ui/jobs/<job_id>/retry")
@_page
def retry_action(job_id: str) -> ResponseReturnValue:
    """The dashboard's Retry button: a failed or cancelled job is queued again."""
    _require_csrf()
    queue = _queue()
    job = queue.get_job(job_id)
    if job is None:
        return _back("error", f"Job {job_id} is not known here (any more); nothing was retried.")
    try:
        done = queue.requeue(job)
    except QueueClosed as exc:
        return _back("error", f"Job {job_id} was not retried: {exc}.")
    if not done:
        return _back("error", f"Job {job_id} ({job.name}) is {job.status.value}: only a failed or cancelled"
                              " job can be retried.")
    return _back("ok", f"Job {job_id} ({job.name}) is queued again.")


@routes.post("/ui/purge")
@_page
def purge_action() -> ResponseReturnValue:
    """The dashboard's Purge button: forget every finished job."""
    _require_csrf()
    n = _queue().storage.purge_finished()
    return _back("ok", f"Purged {n} finished job{'' if n == 1 else 's'}.")


@routes.post("/ui/queues/<name>/pause")
@_page
def pause_action(name: str) -> ResponseReturnValue:
    """The dashboard's Pause button of a queue's row."""
    return _pause_or_resume(name, True)


@routes.post("/ui/queues/<name>/resume")
@_page
def resume_action(name: str) -> ResponseReturnValue:
    """The dashboard's Resume button of a queue's row."""
    return _pause_or_resume(name, False)


def _pause_or_resume(name: str, pause: bool) -> ResponseReturnValue:
    _require_csrf()
    queue = _queue()
    try:
        changed = queue.pause(name) if pause else queue.resume(name)
    except ConfigurationError as exc:
        return _back("error", str(exc))
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    if pause:
        return _back("ok", f"Queue {name} is paused: it keeps taking jobs and starts none, in every process,"
                           " until you resume it." if changed else f"Queue {name} was paused already.")
    return _back("ok", f"Queue {name} runs again." if changed else f"Queue {name} was not paused.")


_ACTION_WORDS = {"retry": ("Retry", "queued again"), "cancel": ("Cancel", "cancelled"), "delete": ("Delete", "deleted")}


@routes.post("/ui/jobs/act")
@_page
def act_action() -> ResponseReturnValue:
    """Retry, cancel or delete every job the search matches: first a page that says how many
    and asks to confirm, then (``confirmed=yes``) the action, back with what was done."""
    _require_csrf()
    from .jobfilter import ACTIONS, FilterError, parse_filter

    action = request.form.get("action", "")
    if action not in ACTIONS:
        raise APIError(400, f"action must be one of {', '.join(ACTIONS)}")
    try:
        flt = parse_filter({name: request.form.get(name) for name in ("task", "q", "status", "queue", "since",
                                                                       "until")})
    except FilterError as exc:
        raise APIError(400, str(exc)) from None
    queue = _queue()
    verb, done = _ACTION_WORDS[action]
    if request.form.get("confirmed") != "yes":
        return _render("memqueue/confirm.html", action=action, verb=verb, matched=queue.count_jobs(flt),
                       fields=flt.to_dict(), next_url=_safe_next(request.form.get("next")), **_common())
    try:
        n = queue.act_on(flt, action)
    except QueueClosed as exc:
        return _back("error", f"Nothing was retried: {exc}.")
    return _back("ok", f"{n} job{'' if n == 1 else 's'} {done} (of those matching {flt.to_dict() or 'everything'}).")


# -- signing in -------------------------------------------------------------------------
def _sign_in_page(status: int, error: str | None, next_url: str) -> ResponseReturnValue:
    problem = None
    try:
        access.session_value("probe")
    except access.NoSecretKey as exc:  # say so before anyone types the token
        problem = str(exc)
    body = _render("memqueue/sign_in.html", error=error, problem=problem, next_url=next_url, **_common())
    return body, status, {"WWW-Authenticate": 'Bearer realm="memqueue"'} if status == 401 else {}


@routes.route("/ui/sign-in", methods=["GET", "POST"])
@access.public
@_page
def sign_in() -> ResponseReturnValue:
    """Trade ``MEMQUEUE_TOKEN`` for the signed sign-in cookie, once per browser."""
    token = _queue().config.token
    if not token:
        return redirect(_home(), 303)  # nothing to sign in to: the app has no token
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if access.session_ok(token):
            return redirect(next_url, 303)
        return _sign_in_page(200, None, next_url)
    _require_csrf()
    sent = request.form.get("token", "")
    if not hmac.compare_digest(sent.strip().encode(), token.encode()):
        return _sign_in_page(401, "That is not this app's MEMQUEUE_TOKEN.", next_url)
    try:
        value = access.session_value(token)
    except access.NoSecretKey as exc:
        return _sign_in_page(500, str(exc), next_url)
    response = redirect(next_url, 303)
    access.set_cookie(response, access.SESSION_COOKIE, value, access.SESSION_MAX_AGE)
    return response


@routes.post("/ui/sign-out")
@_page
def sign_out() -> ResponseReturnValue:
    """Forget the sign-in cookie in this browser."""
    _require_csrf()
    response = redirect(_home(), 303)
    access.delete_cookie(response, access.SESSION_COOKIE)
    return response
