"""Blinker signals, sent with the app as sender and the job as ``job=``.

Connect with ``job_failed.connect(fn, app)`` to hear one app only. Each is
sent only when somebody listens, so an unused signal costs nothing per job.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A job was queued or scheduled (sent after it is in the store).
job_enqueued = _signals.signal("memqueue-job-enqueued")
#: The consumer is about to call the job, inside the app context.
job_started = _signals.signal("memqueue-job-started")
#: The job returned; ``job.result`` holds what it returned.
job_succeeded = _signals.signal("memqueue-job-succeeded")
#: The job raised and has no retries left (``job.error``, ``job.traceback``).
#: A failure that will be retried sends ``job_retrying`` instead.
job_failed = _signals.signal("memqueue-job-failed")
#: The job raised and is scheduled to run again (``job.eta``).
job_retrying = _signals.signal("memqueue-job-retrying")
#: A waiting job was cancelled (``job.cancel()``, the dashboard, ``POST /jobs/<id>/cancel``,
#: or a shutdown without a journal that left it unrun).
job_cancelled = _signals.signal("memqueue-job-cancelled")
