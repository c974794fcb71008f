"""``flask memqueue ...``: commands that work on a shared store (the SQLite journal, ...).

An in-memory queue lives inside the serving process only, so there is
nothing a separate ``flask`` process could show or run; the commands say so.
With a store that processes share (``MEMQUEUE_STORAGE = "sqlite:///jobs.db"``)
they read and write it; ``worker`` runs its jobs.

These commands never start a consumer thread: ``jobs``, ``retry`` and
``purge`` only touch records (a job queued again is run by whichever
consumer claims it), and ``worker`` consumes in its own main thread.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

import click
from flask import current_app
from flask.cli import with_appcontext

from .state import AppQueue


def _queue() -> AppQueue:
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    if queue is None:
        raise click.ClickException("this app has no MemQueue; call mq.init_app(app)")
    if not queue.storage.capabilities.shared:
        raise click.ClickException(
            f"this app's store ({queue.storage_url}) lives inside the serving process: another process"
            " cannot see or run its jobs. Use the HTTP routes (/memqueue/jobs, /memqueue/stats) of the"
            " running app, or set MEMQUEUE_STORAGE to a shared store, like 'sqlite:///jobs.db'."
        )
    return queue


@click.group("memqueue")
def memqueue_cli() -> None:
    """Look at and work the flask-memqueue journal."""


@memqueue_cli.command("jobs")
@click.option("--status", type=click.Choice(["queued", "scheduled", "running", "succeeded", "failed", "cancelled"]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@with_appcontext
def jobs_command(status: str | None, limit: int) -> None:
    """List jobs, newest first."""
    from .job import JobStatus

    queue = _queue()
    for job in queue.storage.jobs(JobStatus(status) if status else None, limit, 0):
        click.echo(f"{job.id}\t{job.status.value}\t{job.name}\t{job.attempts}\t{job.error or ''}")


@memqueue_cli.command("retry")
@click.argument("job_id")
@with_appcontext
def retry_command(job_id: str) -> None:
    """Queue a failed or cancelled job again (its attempts start from 0)."""
    queue = _queue()
    job = queue.storage.get(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id!r} in the journal (purged, or never there)")
    if not queue.storage.requeue(job):
        raise click.ClickException(
            f"job {job_id} is {job.status.value}; only a failed or cancelled job can be retried"
        )
    click.echo(f"{job.id}\t{job.status.value}\t{job.name}")


@memqueue_cli.command("purge")
@click.option("--finished", is_flag=True, help="Forget every succeeded, failed and cancelled job.")
@with_appcontext
def purge_command(finished: bool) -> None:
    """Forget finished jobs (waiting and running ones are never purged)."""
    if not finished:
        raise click.UsageError("say what to purge: --finished (succeeded, failed and cancelled jobs)")
    n = _queue().storage.purge_finished()
    click.echo(f"purged {n} finished job(s)")


@memqueue_cli.command("worker")
@with_appcontext
def worker_command() -> None:
    """Run the journal's jobs in this process until SIGTERM or Ctrl-C.

    For apps whose web processes only enqueue (``MEMQUEUE_CONSUMER = False``
    there). The first SIGTERM/SIGINT stops after the job in hand; a second
    one stops at once (the interrupted job is taken up again later).
    """
    queue = _queue()
    click.echo(
        f"memqueue worker {os.getpid()}: running the jobs of {queue.app.name!r}"
        f" from {queue.storage_url}",
        err=True,
    )
    run_worker(queue)
    click.echo(f"memqueue worker {os.getpid()}: stopped", err=True)


#: The worker exits with an error after this many consecutive failures of its
#: store (with the consumer's backoff, 0.1 + 0.2 + ... + 10 s: about 30 s), or
#: this many consecutive crashes of its loop that ran no job in between. A
#: process supervisor (systemd, Kubernetes) then sees it fail and can say so,
#: where a worker retrying for ever would look healthy and run nothing.
WORKER_MAX_FAILURES = 10


def run_worker(queue: AppQueue) -> None:
    """Consume ``queue`` in the calling (main) thread until a signal stops it.

    The calling thread becomes the queue's one legitimate consumer (the same
    ident guard as the consumer thread), so nothing in this process starts a
    second one. A crashed loop (a bug, or ``SystemExit`` in a job) is
    started again (after a backoff unless it ran a job); a stop request is
    honoured after the job in hand.

    :raises click.ClickException: the store failed, or the loop crashed,
        :data:`WORKER_MAX_FAILURES` times in a row (the command exits 1).
    """
    consumer = queue.consumer
    storage = queue.storage
    stop: list[bool] = []  # set by the handler: no lock may be taken there
    previous: dict[int, object] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(True)
        consumer.stopping = True
        if storage.capabilities.signal_safe_wake:
            storage.wake_from_signal_handler()
        for signo, handler in previous.items():  # a second signal stops at once
            signal.signal(signo, handler)  # type: ignore[arg-type]

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, on_signal)
    consumer.max_store_failures = WORKER_MAX_FAILURES
    crashes = 0
    try:
        while not stop:
            queue.adopt_consumer_thread()
            consumer.reset()
            if stop:
                break
            ran = consumer.jobs_done
            consumer.run()
            if consumer.gave_up is not None:
                raise click.ClickException(
                    f"{consumer.gave_up}. The worker stops (after {WORKER_MAX_FAILURES} consecutive failures);"
                    " fix the store, then start it again"
                )
            if stop:
                break
            # run() ended without a stop request: it crashed (and logged why).
            crashes = 0 if consumer.jobs_done != ran else crashes + 1
            if crashes >= WORKER_MAX_FAILURES:
                raise click.ClickException(
                    f"the consumer loop of {queue.app.name!r} crashed {crashes} times in a row without running a"
                    " job (the log above says why); the worker stops"
                )
            if crashes:
                consumer.back_off(crashes)
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)  # type: ignore[arg-type]
        queue.shutdown(wait=True, timeout=queue.config.shutdown_timeout)
