"""The example's pages: an index with a form per kind of job.

Each form posts to a view that queues a job with the module-level
:func:`flask_memqueue.enqueue` (which uses the current app's queue) and
redirects back to the index, which links to the new job's status.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from flask_memqueue import Job, enqueue

from .tasks import build_report, doomed, flaky, mq

bp = Blueprint("example", __name__)


@bp.get("/")
def index() -> str:
    return render_template("index.html", job_id=request.args.get("job"))


@bp.post("/jobs/<kind>")
def start_job(kind: str) -> Response:
    job: Job
    if kind == "report":
        job = enqueue(build_report, steps=request.form.get("steps", 5, type=int))
    elif kind == "flaky":
        job = enqueue(flaky, failures=request.form.get("failures", 2, type=int))
    elif kind == "doomed":
        job = enqueue(doomed)
    elif kind == "message":
        job = mq.produce(request.form.get("message", ""), topic=request.form.get("topic") or None)
    else:
        abort(404)
    return redirect(url_for(".index", job=job.id), code=303)
