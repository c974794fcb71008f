"""``flask memqueue ...``: commands that work on a journal.

An in-memory queue lives inside the serving process only, so there is
nothing a separate ``flask`` process could show or run; the commands say so.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .state import AppQueue


def _queue() -> AppQueue:
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    if queue is None:
        raise click.ClickException("this app has no MemQueue; call mq.init_app(app)")
    if not queue.storage.durable:
        raise click.ClickException(
            "this app's queue is in memory (MEMQUEUE_JOURNAL is not set): its jobs live only inside"
            " the serving process, so another process cannot see or run them. Use the HTTP routes"
            " (/memqueue/jobs, /memqueue/stats) of the running app, or set MEMQUEUE_JOURNAL."
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
