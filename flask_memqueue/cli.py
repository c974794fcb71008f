"""``flask memqueue ...``: commands that work on a store that processes share.

An in-memory queue lives inside the serving process only, so there is
nothing a separate ``flask`` process could show or run; the commands say so.
With a store that processes share (a journal file, a server) they read and
write it; ``worker`` runs its jobs.

These commands never start a consumer thread: ``jobs``, ``retry`` and
``purge`` only touch records (a job queued again is run by whichever
consumer claims it); ``worker`` runs the queue's consumer threads and
supervises them from its main thread.

A store that fails (Redis down or refusing the password, a damaged journal
that ``init_app`` refuses) ends every command with one line, ``Error: ...``,
and exit status 1, never a traceback. The group is also a ``flask.commands``
plugin (pyproject.toml), so ``flask memqueue`` exists even when the app's
``init_app`` raised, and can say why. That is also why this module imports
nothing of the package at import time: Flask loads plugins for every
``flask`` command of every app in the environment.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click
from flask import current_app
from flask.cli import ScriptInfo

if TYPE_CHECKING:
    from .consumer import Consumer
    from .jobfilter import JobFilter
    from .state import AppQueue

F = TypeVar("F", bound=Callable[..., Any])


def with_app(f: F) -> F:
    """:func:`flask.cli.with_appcontext`, where a :class:`~flask_memqueue.MemQueueError`
    (loading the app, or during the command) ends the command with ``Error: <one line>``.

    Loading the app runs ``init_app``, which opens the store: a damaged journal
    raises there. A shared store's server is first reached by the command
    itself: Redis down or a wrong password raise there.
    """

    @click.pass_context
    def decorator(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        from .exceptions import MemQueueError

        try:
            if not current_app:
                app = ctx.ensure_object(ScriptInfo).load_app()
                ctx.with_resource(app.app_context())
            return ctx.invoke(f, *args, **kwargs)
        except MemQueueError as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise click.ClickException(lines[0]) from exc

    return functools.update_wrapper(decorator, f)  # type: ignore[return-value]


def _queue(*, amqp_will_do: bool = False) -> AppQueue:
    """The app's queue, refused where this command could not see its jobs.

    ``amqp_will_do``: the command is also useful when the app's messages
    travel where other processes take them (RabbitMQ: the worker consumes
    them), whatever its store.
    """
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    if queue is None:
        raise click.ClickException(f"the app {current_app.name!r} has no MemQueue; call mq.init_app(app)")
    if amqp_will_do and queue.transport.shared:
        return queue
    if not queue.storage.capabilities.shared:
        from .storage import SHARED_STORE_EXAMPLE

        raise click.ClickException(
            f"this app's store ({queue.storage_url}) lives inside the serving process: another process"
            " cannot see or run its jobs. Use the HTTP routes (/memqueue/jobs, /memqueue/stats) of the"
            f" running app, or set MEMQUEUE_STORAGE to a shared store, like {SHARED_STORE_EXAMPLE!r}."
        )
    return queue


@click.group("memqueue")
def memqueue_cli() -> None:
    """Look at and run the jobs of this app's shared store (MEMQUEUE_STORAGE: the SQLite
    journal, Redis, ...), and list its periodic tasks."""


#: The columns of ``flask memqueue jobs`` (tab-separated, like ``periodic``'s).
JOBS_HEADER = "id\tstatus\ttask\tattempts\terror"


def filter_fields(f: F) -> F:
    """The options of the one job filter: ``--task --q --status --queue --since --until``."""
    for name, text in reversed((
        ("task", "Jobs of this task (its registered name)."),
        ("q", "Jobs whose arguments or error contain this text."),
        ("status", "Jobs of this status (or several: failed,cancelled)."),
        ("queue", "Jobs of this named queue."),
        ("since", "Jobs enqueued at or after this time (ISO 8601 or Unix time)."),
        ("until", "Jobs enqueued at or before this time (ISO 8601 or Unix time)."),
    )):
        f = click.option(f"--{name}", f"{name}_", default=None, help=text)(f)
    return f


def filter_options(f: F) -> F:
    """:func:`filter_fields` and ``--yes`` (the bulk actions)."""
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for a confirmation.")(filter_fields(f))


def _given(values: dict[str, str | None]) -> dict[str, str]:
    """The filter options given (their names without the trailing ``_``)."""
    return {k.rstrip("_"): v for k, v in values.items() if v not in (None, "")}


def _parse(given: dict[str, str]) -> JobFilter:
    """:func:`~flask_memqueue.jobfilter.parse_filter`; a bad value is a usage error (exit 2)."""
    from .jobfilter import FilterError, parse_filter

    try:
        return parse_filter(given)
    except FilterError as exc:
        raise click.UsageError(str(exc)) from None


@memqueue_cli.command("jobs")
@filter_fields
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--group", "group", metavar="ID", help="Only the members of this group (Group.id), in member order.")
@with_app
def jobs_command(limit: int, group: str | None, **values: str | None) -> None:
    """List jobs, newest first: a header row, then one tab-separated row per job. The filter
    options are those of ``cancel``, ``retry`` and ``delete`` (and of ``GET /memqueue/jobs``)."""
    from .job import JobStatus

    queue = _queue()
    given = _given(values)
    flt = _parse(given)
    one_status = list(given) == ["status"] and flt.statuses is not None and len(flt.statuses) == 1
    if group is not None:
        members = queue.storage.group_jobs(group)
        if members is None:
            raise click.ClickException(f"no group {group!r} in the store (its jobs were forgotten, or never there)")
        jobs = [j for j in members if flt.matches(j)][:limit]
    elif given and not one_status:
        jobs = queue.find_jobs(flt, limit, 0)
    else:  # no filter, or one status: the store's own listing
        jobs = queue.storage.jobs(JobStatus(flt.statuses[0]) if flt.statuses else None, limit, 0)
    if not jobs:
        shown = " ".join(f"--{k} {v!r}" for k, v in given.items())
        click.echo(f"no {flt.statuses[0]} jobs" if one_status and flt.statuses
                   else f"no jobs match {shown}" if given else "no jobs")
        return
    click.echo(JOBS_HEADER)
    for job in jobs:
        click.echo(f"{job.id}\t{job.status.value}\t{job.name}\t{job.attempts}\t{job.error or ''}")


def _act(action: str, job_id: str | None, yes: bool, values: dict[str, str | None]) -> None:
    """``retry|cancel|delete``: one job by id, or every job the filter options match."""
    queue = _queue()
    given = _given(values)
    if job_id is not None:
        if given:
            raise click.UsageError(f"give a JOB_ID or filter options ({', '.join('--' + k for k in given)}), not both")
        _act_on_one(queue, action, job_id)
        return
    if not given:
        raise click.UsageError(
            f"say which jobs to {action}: a JOB_ID, or filter options (--task, --q, --status, --queue, --since,"
            " --until), e.g. --status failed --task send_email"
        )
    flt = _parse(given)
    shown = " ".join(f"--{k} {v!r}" for k, v in given.items())
    matched = queue.count_jobs(flt)
    if not yes:
        click.confirm(f"{matched} job(s) match {shown}; {action} every one of them that can be?", abort=True)
    n = queue.act_on(flt, action)
    click.echo(f"{action}: {n} job(s) changed of {matched} matching {shown}")


def _act_on_one(queue: AppQueue, action: str, job_id: str) -> None:
    job = queue.storage.get(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id!r} in the journal (purged, or never there)")
    verbs: dict[str, tuple[Callable[[Any], bool], str]] = {
        "retry": (queue.storage.requeue, "only a failed or cancelled job can be retried"),
        "cancel": (queue.jobs.cancel, "only a queued or scheduled job can be cancelled"),
        "delete": (queue.storage.delete, "only a finished job can be deleted (cancel a waiting one first)"),
    }
    verb, rule = verbs[action]
    if not verb(job):
        raise click.ClickException(f"job {job_id} is {job.status.value}; {rule}")
    click.echo(f"{job.id}\t{'deleted' if action == 'delete' else job.status.value}\t{job.name}")


@memqueue_cli.command("retry")
@click.argument("job_id", required=False)
@filter_options
@with_app
def retry_command(job_id: str | None, yes: bool, **values: str | None) -> None:
    """Queue failed or cancelled jobs again (their attempts start from 0): JOB_ID, or every
    job the filter options match (after a confirmation that says how many, unless --yes)."""
    _act("retry", job_id, yes, values)


@memqueue_cli.command("cancel")
@click.argument("job_id", required=False)
@filter_options
@with_app
def cancel_command(job_id: str | None, yes: bool, **values: str | None) -> None:
    """Cancel queued or scheduled jobs: JOB_ID, or every job the filter options match."""
    _act("cancel", job_id, yes, values)


@memqueue_cli.command("delete")
@click.argument("job_id", required=False)
@filter_options
@with_app
def delete_command(job_id: str | None, yes: bool, **values: str | None) -> None:
    """Forget finished jobs (waiting and running ones are never deleted): JOB_ID, or every
    job the filter options match."""
    _act("delete", job_id, yes, values)


@memqueue_cli.command("pause")
@click.argument("name")
@with_app
def pause_command(name: str) -> None:
    """Pause the queue NAME: jobs are still queued, none starts, in every process (within a
    second), until `flask memqueue resume NAME`; running jobs go on. Kept across restarts."""
    queue = _queue()
    try:
        changed = queue.pause(name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"queue {name} paused" + ("" if changed else " (it was paused already)"))


@memqueue_cli.command("resume")
@click.argument("name")
@with_app
def resume_command(name: str) -> None:
    """Resume the paused queue NAME."""
    queue = _queue()
    try:
        changed = queue.resume(name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"queue {name} resumed" + ("" if changed else " (it was not paused)"))


@memqueue_cli.command("abort")
@click.argument("job_id")
@with_app
def abort_command(job_id: str) -> None:
    """Stop a job: cancel it if it waits, or ask it to stop wherever it runs (it ends aborted)."""
    import getpass
    import socket

    queue = _queue()
    job = queue.storage.get(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id!r} in the store (purged, or never there)")
    who = f"flask memqueue abort ({getpass.getuser()}@{socket.gethostname()})"
    if not queue.jobs.abort(job, by=who):
        raise click.ClickException(f"job {job_id} is {job.status.value}; only a waiting or running job can be aborted")
    state = job.status.value if job.finished else "asked to stop"
    click.echo(f"{job.id}\t{state}\t{job.name}")


@memqueue_cli.command("purge")
@click.option("--finished", is_flag=True, help="Forget every succeeded, failed and cancelled job.")
@with_app
def purge_command(finished: bool) -> None:
    """Forget finished jobs (waiting and running ones are never purged)."""
    if not finished:
        raise click.UsageError("say what to purge: --finished (succeeded, failed and cancelled jobs)")
    n = _queue().storage.purge_finished()
    click.echo(f"purged {n} finished job(s)")


@memqueue_cli.command("periodic")
@with_app
def periodic_command() -> None:
    """List the periodic tasks: schedule, time zone, next run, last run and its job.

    Works with every store: with the memory store it reads the state file the
    process holding the schedule writes (the jobs themselves live in that process).
    """
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    if queue is None:
        raise click.ClickException(f"the app {current_app.name!r} has no MemQueue; call mq.init_app(app)")
    info = queue.scheduler.info()
    if not info["tasks"]:
        click.echo("no periodic tasks are registered (@mq.periodic) in this app")
        return
    sched = info["scheduler"]
    if info["mode"] == "shared store":
        click.echo(f"schedule: run by every process sharing {queue.storage_url}; each tick is claimed once")
    elif sched["holder_pid"]:
        click.echo(f"schedule: held by process {sched['holder_pid']} on this host ({sched['lock_file']})")
    else:
        click.echo(f"schedule: no process holds it now ({sched['lock_file']})")
    click.echo("task\tschedule\ttimezone\tnext run\tlast run\tjob\tstatus")
    for t in info["tasks"]:
        last = t["last_run"] or {}
        click.echo("\t".join([
            t["name"], t["schedule"], t["timezone"] or "-", t["next_run"] or "-", last.get("tick") or "-",
            last.get("job_id") or "-", last.get("status") or "-",
        ]))


@memqueue_cli.group("db")
def db_group() -> None:
    """The tables of a database store (PostgreSQL): create, migrate, print their SQL."""


def _schema_queue() -> AppQueue:
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    if queue is None:
        raise click.ClickException("this app has no MemQueue; call mq.init_app(app)")
    if queue.storage.schema_sql() is None:
        from .storage import TRANSACTIONAL_STORE_EXAMPLE

        raise click.ClickException(
            f"this app's store ({queue.storage_url}) has no tables to manage; `flask memqueue db` is for"
            f" a database store (MEMQUEUE_STORAGE = {TRANSACTIONAL_STORE_EXAMPLE!r})"
        )
    return queue


@db_group.command("upgrade")
@with_app
def db_upgrade_command() -> None:
    """Create the memqueue tables, or migrate them to this version. Safe to run from several
    processes at once (an advisory lock serialises them) and again (it does nothing then)."""
    queue = _schema_queue()
    versions = queue.storage.upgrade_schema()  # a MemQueueError: with_app prints it in one line
    assert versions is not None
    before, after = versions
    if before == after:
        click.echo(f"{queue.storage_url}: the memqueue schema is current (version {after}); nothing to do")
    else:
        click.echo(f"{queue.storage_url}: the memqueue schema went from version {before} to {after}")


@db_group.command("sql")
@with_app
def db_sql_command() -> None:
    """Print the SQL of `db upgrade` (one transaction; it applies only the missing
    migrations), to paste into a migration of your own (Alembic, Flyway...)."""
    sql = _schema_queue().storage.schema_sql()
    assert sql is not None
    click.echo(sql, nl=False)


@memqueue_cli.group("dead")
def dead_group() -> None:
    """RabbitMQ's dead letters (MEMQUEUE_AMQP_URL): messages whose handler failed for good,
    waiting in <queue>.dead. QUEUE is a handler's queue (memqueue.orders) or its topic (orders)."""


def _dead_letters() -> Any:
    queue: AppQueue | None = current_app.extensions.get("memqueue")
    if queue is None:
        raise click.ClickException(f"the app {current_app.name!r} has no MemQueue; call mq.init_app(app)")
    dead = queue.transport.dead_letters()
    if dead is None:
        raise click.ClickException(
            "this app's messages do not go through RabbitMQ (MEMQUEUE_AMQP_URL is not set): a message whose"
            " handler failed for good is a failed job; see flask memqueue jobs --status failed"
        )
    return dead


#: The columns of ``flask memqueue dead list``.
DEAD_HEADER = "id\tattempts\terror\tmessage"


@dead_group.command("list")
@click.argument("queue")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@with_app
def dead_list_command(queue: str, limit: int) -> None:
    """List the dead letters of QUEUE, oldest first, without consuming them."""
    dead = _dead_letters()
    count, letters = dead.list(queue, limit)
    click.echo(f"{count} dead letter(s) in {dead.resolve(queue)}.dead")
    if letters:
        click.echo(DEAD_HEADER)
    for letter in letters:
        shown = letter.to_dict()
        click.echo(f"{letter.id}\t{letter.attempts}\t{letter.error or ''}\t{shown['preview']}")


@dead_group.command("show")
@click.argument("queue")
@click.argument("letter_id", metavar="ID")
@with_app
def dead_show_command(queue: str, letter_id: str) -> None:
    """Show one dead letter of QUEUE whole, as JSON: body, headers, error and traceback."""
    import json

    letter = _dead_letters().get(queue, letter_id)
    click.echo(json.dumps(letter.to_dict(full=True), indent=2, ensure_ascii=False))


@dead_group.command("requeue")
@click.argument("queue")
@click.argument("letter_id", metavar="[ID]", required=False)
@click.option("--all", "every", is_flag=True, help="Requeue every dead letter waiting now.")
@with_app
def dead_requeue_command(queue: str, letter_id: str | None, every: bool) -> None:
    """Send the dead letter ID of QUEUE (or --all of them) back to QUEUE, with its retries reset.
    At least once: each is published with confirms before its dead letter is removed."""
    if (letter_id is None) == (not every):
        raise click.UsageError("give the ID of one dead letter, or --all (not both)")
    dead = _dead_letters()
    n = dead.requeue(queue, None if every else letter_id)
    click.echo(f"requeued {n} dead letter(s) to {dead.resolve(queue)}")


@memqueue_cli.command("worker")
@click.option(
    "--queues", "queues_opt", metavar="NAMES",
    help="Comma-separated queues to consume (default: those MEMQUEUE_QUEUES gives threads).",
)
@click.option(
    "--threads", type=click.IntRange(1, 256), default=None,
    help="Consumer threads per queue (default: MEMQUEUE_QUEUES's count, or 1).",
)
@with_app
def worker_command(queues_opt: str | None, threads: int | None) -> None:
    """Run the store's jobs in this process until SIGTERM or Ctrl-C.

    For apps whose web processes only enqueue (``MEMQUEUE_CONSUMER = False``
    there, or 0 threads for a queue in ``MEMQUEUE_QUEUES``). The first
    SIGTERM/SIGINT stops after the jobs in hand; a second one stops at once
    (the interrupted jobs are taken up again later).
    """
    queue = _queue(amqp_will_do=True)
    if not queue.storage.capabilities.shared and queues_opt is None:
        plan = {}  # RabbitMQ only: no other process could have queued jobs in this one's memory
    else:
        plan = worker_threads(queue.config.queues, queues_opt, threads)
    shown = ", ".join(f"{name} ({n} thread{'' if n == 1 else 's'})" for name, n in plan.items()) or "none"
    messages = queue.transport.summary()
    if messages is not None:
        shown += f"; {messages}"
    click.echo(
        f"memqueue worker {os.getpid()}: running the jobs of {queue.app.name!r}"
        f" from {queue.storage_url}; queues: {shown}",
        err=True,
    )
    if queues_opt is not None:
        for name in unnamed_queues(queue, plan):
            click.echo(
                f"memqueue worker {os.getpid()}: warning: no task and no MEMQUEUE_QUEUES names the queue"
                f" {name!r}. This worker consumes it, but only a call with options(queue={name!r}) puts jobs"
                f" there. Queues are named by MEMQUEUE_QUEUES (0 threads in a process that only enqueues)"
                f" and by tasks, @mq.task(queue=...); check the spelling of --queues.",
                err=True,
            )
    run_worker(queue, plan)
    click.echo(f"memqueue worker {os.getpid()}: stopped", err=True)


def unnamed_queues(queue: AppQueue, plan: dict[str, int]) -> list[str]:
    """The queues of ``plan`` that neither MEMQUEUE_QUEUES nor a registered task or handler names."""
    named = set(queue.config.queues) | {task.queue for task in queue.registry.tasks.values()}
    return [name for name in plan if name not in named]


def worker_threads(configured: dict[str, int], queues: str | None, threads: int | None) -> dict[str, int]:
    """The queues a worker consumes and the threads of each, from its options and MEMQUEUE_QUEUES."""
    if queues is None:
        names = [name for name, n in configured.items() if n > 0] or ["default"]
    else:
        names = [name.strip() for name in queues.split(",") if name.strip()]
        if not names:
            raise click.BadParameter("name at least one queue, like --queues emails,default", param_hint="--queues")
        from .options import check_queue_name

        for name in names:
            try:
                check_queue_name(name, "--queues")
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--queues") from None
    return {name: threads if threads is not None else max(1, configured.get(name, 1)) for name in names}


#: The worker exits with an error after this many consecutive failures of its
#: store (with the consumer's backoff, 0.1 + 0.2 + ... + 10 s: about 30 s), or
#: this many consecutive crashes of its loops that ran no job in between. A
#: process supervisor (systemd, Kubernetes) then sees it fail and can say so,
#: where a worker retrying for ever would look healthy and run nothing.
WORKER_MAX_FAILURES = 10
#: Seconds between two looks of the worker's main thread at its pool.
SUPERVISE_INTERVAL = 0.1


def run_worker(queue: AppQueue, plan: dict[str, int] | None = None) -> None:
    """Consume ``queue`` with a pool of threads per queue (``plan``) until a signal stops it.

    The main thread supervises: the pools are the queue's own guarded
    consumer threads (the same ident guard as in a web process); a loop that
    crashed is started again (after a backoff unless it ran a job); a stop
    request is honoured after the jobs in hand. The signal handler only sets
    flags (no lock may be taken in it); the main thread, which sees them
    within :data:`SUPERVISE_INTERVAL`, stops the pools.

    :raises click.ClickException: the store failed, or the loops crashed,
        :data:`WORKER_MAX_FAILURES` times in a row (the command exits 1).
    """
    queue.become_worker(worker_threads(queue.config.queues, None, None) if plan is None else plan)
    consumers = queue.all_consumers()
    stop: list[bool] = []  # set by the handler
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(True)
        for consumer in consumers:
            consumer.stopping = True
        for signo, handler in previous.items():  # a second signal stops at once
            signal.signal(signo, handler)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, on_signal)
    # A server's outage ends by itself (the worker resumes then); a broken file does not.
    limit = None if queue.storage.capabilities.outages_end else WORKER_MAX_FAILURES
    for consumer in consumers:
        consumer.max_store_failures = limit
        consumer.stop_on_refusal = True  # a refused password is no outage: never retried for ever
    try:
        _Supervision(queue, consumers, stop).run()
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)
        queue.shutdown(wait=True, timeout=queue.config.shutdown_timeout)


class _Supervision:
    """The worker's main thread while it runs: it looks at the pools every
    :data:`SUPERVISE_INTERVAL` s and starts what ended, or gives up saying why."""

    def __init__(self, queue: AppQueue, consumers: list[Consumer], stop: list[bool]) -> None:
        self.queue = queue
        self.consumers = consumers
        self.stop = stop
        self.crashes = 0  # consecutive crashes of the loops without a job run in between
        self.seen: dict[int, int] = {}  # jobs done per place at its last start

    def run(self) -> None:
        self._start()
        while not self.stop:
            dead = [c for c in self.consumers if not c.alive]
            if dead:
                self._give_up_if_told(dead)
                if not self._restart(dead):
                    break
            if not self.queue.scheduler.alive:  # periodic tasks: a scheduler that ended is started again
                self.queue.ensure_scheduler()
            _sleep_unless(self.stop, SUPERVISE_INTERVAL)

    def _start(self) -> None:
        queue = self.queue
        if not queue.ensure_consumer() and queue.start_error:  # the pools, and the transport's consumers
            raise click.ClickException(f"cannot start the consumer threads: {queue.start_error}")
        self.seen = {id(c): c.jobs_done for c in self.consumers}

    def _give_up_if_told(self, dead: list[Consumer]) -> None:
        """A loop that gave up (the store refused this app, or failed too often) ends the worker."""
        refused = next((c.gave_up for c in dead if c.refused), None)
        if refused is not None:
            raise click.ClickException(
                f"{refused.rstrip('.')}. This is a configuration error, not an outage: the worker stops; fix"
                f" {self.queue.config.storage_key} (or the server's users), then start it again"
            )
        gave_up = next((c.gave_up for c in dead if c.gave_up is not None), None)
        if gave_up is not None:
            raise click.ClickException(
                f"{gave_up}. The worker stops (after {WORKER_MAX_FAILURES} consecutive failures);"
                " fix the store, then start it again"
            )

    def _restart(self, dead: list[Consumer]) -> bool:
        """These loops crashed (and logged why): start them again, after a backoff unless
        they ran a job since the last start. False if a stop request came during the backoff."""
        ran = any(c.jobs_done != self.seen.get(id(c), 0) for c in dead)
        self.crashes = 0 if ran else self.crashes + 1
        if self.crashes >= WORKER_MAX_FAILURES:
            raise click.ClickException(
                f"the consumer loops of {self.queue.app.name!r} crashed {self.crashes} times in a row without"
                " running a job (the log above says why); the worker stops"
            )
        if self.crashes:
            from .consumer import backoff_delay

            _sleep_unless(self.stop, backoff_delay(self.crashes))
            if self.stop:
                return False
        self._start()
        return True


def _sleep_unless(stop: list[bool], seconds: float) -> None:
    """Sleep ``seconds`` in slices, returning as soon as a signal asked to stop."""
    deadline = time.monotonic() + seconds
    while not stop:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, SUPERVISE_INTERVAL))
