"""Jobs in: every enqueue of one app in this process passes here, once.

:meth:`Producer.enqueue` makes the job (its task's call checked, its queue
declared), asks the ``on_enqueue`` hooks, and hands it to the store, or runs
it inline in eager mode. A call with options (a time, a unique key, a
SQLAlchemy session) takes :meth:`Producer.enqueue_with`; a plain call
(``task.delay()``, ``mq.enqueue()``) keeps to the inlined hot path.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from time import time as _time
from typing import TYPE_CHECKING, Any

from ..exceptions import (
    ConfigurationError,
    DependencyError,
    MemQueueConfigWarning,
    QueueClosed,
    QueueFull,
    UnknownQueueError,
    WorkflowsUnsupported,
)
from ..job import Job, JobStatus, Step, queued_job
from ..signals import job_enqueued
from ..storage import TRANSACTIONAL_STORE_EXAMPLE, Link

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..hooks import Hooks
    from ..options import JobOptions
    from ..registry import Registry, Task
    from .jobs import Jobs
    from .pools import ConsumerPools
    from .store import StoreHandle
    from .supervisor import Supervisor

logger = logging.getLogger("flask_memqueue")

QUEUED = JobStatus.QUEUED
SCHEDULED = JobStatus.SCHEDULED
_new = object.__new__
_MISSING: Any = object()


def is_ours(key: object) -> bool:
    """True for a ``MEMQUEUE_*`` config key."""
    return isinstance(key, str) and key.startswith("MEMQUEUE_")


class Producer:
    """Makes the jobs of one app in this process and queues them (see the module's text)."""

    def __init__(self, app: Flask, config: Config, registry: Registry, hooks: Hooks, store: StoreHandle,
                 jobs: Jobs, pools: ConsumerPools, supervisor: Supervisor, config_read: dict[str, Any]) -> None:
        self.app = app
        self.config = config
        self.registry = registry
        self.hooks = hooks
        self.store = store
        self.jobs = jobs
        self.pools = pools
        self.supervisor = supervisor
        self._ids = itertools.count(1)
        # Queues other processes declared in a shared store, and until when that is fresh.
        self._known: frozenset[str] = frozenset()
        self._known_until = 0.0
        # The queues registered tasks name, and the registry's version when they were read.
        self._task_queues: tuple[int, frozenset[str]] = (-1, frozenset())
        # The MEMQUEUE_* values init_app read, to warn at the first enqueue
        # about a key changed later (which would otherwise do nothing, silently).
        self._config_read = config_read
        self._config_checked = False

    def next_key(self) -> int:
        """The next number of this process's job sequence (a job's id is ``<token>-<number>``)."""
        return next(self._ids)

    # -- the hot path -------------------------------------------------------------------------
    def enqueue(
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
        options: JobOptions | None = None,
    ) -> Job:
        """Queue a call of ``task`` with ``options`` (None: the task's own, the hot path).

        With a unique key held by a live job, that job is returned instead
        (nothing is queued, no signal is sent).

        :raises UnknownQueueError: no process declares that queue.
        :raises TypeError: the task's function could not take these arguments.
        """
        supervisor = self.supervisor
        # The common case in one test: the consumers run (so the queue is open and not in
        # eager mode: Supervisor.alive says so) and the first enqueue checked the config.
        settled = supervisor.alive and self._config_checked
        if not settled:
            if supervisor.closed:
                raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
            if not self._config_checked:
                self.warn_config_changed()
        if options is not None and options is not task.job_options:
            return self.enqueue_with(task, args, kwargs, options)
        # new_job(), inlined: a call without options shares its task's JobOptions.
        if kwargs or not task.min_args <= len(args) <= task.max_args:
            task.check_call(args, kwargs)  # refused here rather than failing in the worker
        options = task.job_options
        name = options.queue
        if name not in self.pools.declared and name not in self.declared_queues():
            raise self._undeclared(name)
        # queued_job(), inlined: its nine slots on a bare object (no class call, no function call)
        job = _new(Job)
        job.key = next(self._ids)
        job._queue = self.jobs
        job.task = task
        job.args = args
        job.kwargs = kwargs or None
        job.status = QUEUED
        job.enqueued_at = _time()
        job._out = None
        job.options = options
        if self.hooks.enqueue:
            self.hooks.enqueued(self.app, job)
        if not settled and self.config.eager:
            return self.run_eagerly(job)
        self.store.storage.put(job)
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        if not settled and not supervisor.alive:  # (a consumer that died since is replaced by its exit)
            supervisor.ensure()
        return job

    # -- a call with options ----------------------------------------------------------------------
    def enqueue_with(
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, options: JobOptions
    ) -> Job:
        """:meth:`enqueue` for a call whose options say more than its task's: a time
        (``eta``), a unique key, a transaction (``session``) or a commit to wait for
        (``on_commit``)."""
        if options.depends_on is not None:
            jobs, _ = self.enqueue_workflow([Step(task, args, kwargs, options, options.depends_on,
                                                  (-1,) * len(options.depends_on))])
            return jobs[0]
        job = self.new_job(task, args, kwargs, options)
        if self.hooks.enqueue:
            self.hooks.enqueued(self.app, job)
        if options.session is not None:
            return self._in_session(job, options.session)
        if options.on_commit is not None:
            return self._on_commit(job, options.on_commit)
        if self.config.eager:
            return self.run_eagerly(job)
        storage = self.store.storage
        if job.unique_key is not None:
            holder = storage.put_unique(job)
            if holder is not job:
                return holder
        elif job.status is SCHEDULED:
            storage.schedule(job)
        else:
            storage.put(job)
        return self._queued(job)

    def _queued(self, job: Job) -> Job:
        """A job the store took: tell the receivers, start the consumers if they do not run."""
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        if not self.supervisor.alive:
            self.supervisor.ensure()
        return job

    def new_job(
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
        options: JobOptions | None = None,
    ) -> Job:
        """A job as :meth:`enqueue` makes it (same id sequence, same check of its call and
        its queue), handed to no store (the pytest plugin's ``memqueue_captured`` records
        such jobs). Scheduled if ``options.eta`` says when.

        :raises TypeError: the task's function could not take these arguments
            (:meth:`Task.check_call`): refused here rather than failing in the worker.
        """
        if kwargs or not task.min_args <= len(args) <= task.max_args:
            task.check_call(args, kwargs)
        if options is None:
            options = task.job_options
        name = options.queue
        if name not in self.pools.declared and name not in self.declared_queues():
            raise self._undeclared(name)
        job = queued_job(self.jobs, next(self._ids), task, args, kwargs or None, _time(), options.for_job())
        if options.eta is not None:
            job.mark_scheduled(options.eta)
        return job

    def _in_session(self, job: Job, session: Any) -> Job:
        """``options(session=...)``: the job is inserted in the caller's open transaction
        and commits or rolls back with it."""
        if self.config.eager:
            return self.run_eagerly(job)
        storage = self.store.storage
        if not storage.capabilities.transactional:
            raise ConfigurationError(
                f"options(session=...) inserts the job in your database transaction, which only a store in that"
                f" database can do (MEMQUEUE_STORAGE = {TRANSACTIONAL_STORE_EXAMPLE!r}); this app's store is"
                f" {self.store.url}."
                " Use options(on_commit=db.session) instead: the job is queued once the session commits"
            )
        holder = storage.put_in_transaction(job, session)
        if holder is not job:
            return holder
        return self._queued(job)

    def _on_commit(self, job: Job, session: Any) -> Job:
        """``options(on_commit=...)``: queued once ``session`` commits, never if it rolls back.
        Returns the job now (not in the store yet); see :mod:`flask_memqueue.oncommit`."""
        from .. import oncommit

        def put() -> None:
            try:
                if self.config.eager:
                    self.run_eagerly(job)
                    return
                if job.status is SCHEDULED:
                    self.store.storage.schedule(job)
                else:
                    self.store.storage.put(job)
            except Exception as exc:
                logger.error("job %s (%s) was not queued after its session committed: %s", job.id, job.name, exc)
                job.mark_cancelled(time.time(), f"not queued after the commit: {exc}")
                return
            self._queued(job)

        def drop() -> None:
            job.mark_cancelled(time.time(), "cancelled: the session rolled back, so the job was never queued")

        oncommit.defer(session, put, drop)
        return job

    def run_eagerly(self, job: Job) -> Job:
        """MEMQUEUE_EAGER: run the job here and now, retries included (without their delays)."""
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        job.mark_running()
        return self._run_inline(job)

    def _run_inline(self, job: Job) -> Job:
        """Run a running job here, its retries at once, and record its outcome."""
        try:
            while True:
                self.pools.consumer.execute(job)
                if job.status is not SCHEDULED:
                    break
        finally:
            self.store.storage.finish(job)
        if self.hooks.outcome:
            self.hooks.recorded(self.app, job)
        return job

    # -- workflows --------------------------------------------------------------------------------
    def enqueue_workflow(self, steps: list[Step]) -> tuple[list[Job], list[str]]:
        """Queue a workflow (see :mod:`flask_memqueue.workflows`) in one step of the store:
        its jobs, in the order of ``steps``, and the ids of the groups it made.

        :raises WorkflowsUnsupported: the store does not declare ``capabilities.workflows``.
        :raises DependencyError: a step waits on a job of another app, or on one the store does not hold.
        :raises QueueFull: the workflow does not fit (nothing was queued).
        :raises TypeError: a step's task could not take its arguments (with what it is given first).
        """
        if self.supervisor.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        storage = self.store.storage
        if not storage.capabilities.workflows:
            raise WorkflowsUnsupported(
                f"this app's store ({self.store.url}) cannot hold workflows (chains, groups, chords,"
                " depends_on=): it does not declare capabilities.workflows. Use the memory store"
                " (memory://), the SQLite journal (sqlite:///...), Redis (redis://...) or PostgreSQL"
                " (postgresql://...)"
            )
        group_ids: dict[int, str] = {}
        jobs: list[Job] = []
        links: list[Link] = []
        for step in steps:
            job, job_links = self._workflow_job(step, jobs, group_ids)
            jobs.append(job)
            links.extend(job_links)
        if self.hooks.enqueue:
            for job in jobs:
                self.hooks.enqueued(self.app, job)
        if self.config.eager:
            self._run_workflow_eagerly(jobs, links)
            return jobs, list(group_ids.values())
        storage.put_workflow(jobs, links)
        if job_enqueued.receivers:
            for job in jobs:
                job_enqueued.send(self.app, job=job)
        if not self.supervisor.alive:
            self.supervisor.ensure()
        return jobs, list(group_ids.values())

    def _workflow_job(self, step: Step, made: list[Job], group_ids: dict[int, str]) -> tuple[Job, list[Link]]:
        """The job of one step of a workflow, and its links to the jobs it waits on."""
        options = step.options
        if options.eta is not None and step.after:
            raise ValueError("a job that waits on others (depends_on=, a chain's link, a chord's callback)"
                             " runs once they finished: it cannot also be given a time (enqueue_in/enqueue_at)")
        if options.session is not None or options.on_commit is not None:
            raise ValueError("a workflow's jobs are queued by the store in one step: options(session=...) and"
                             " options(on_commit=...) do not apply to them; queue the workflow after your commit")
        extra = tuple(options.depends_on or ()) if options.depends_on is not step.after else ()
        after = (*step.after, *extra)
        positions = (*step.positions, *(-1,) * len(extra))
        call_args = step.args if step.bind is None else (None, *step.args)
        if step.kwargs or not step.task.min_args <= len(call_args) <= step.task.max_args:
            step.task.check_call(call_args, step.kwargs)
        group = None
        if step.group is not None:
            group = group_ids.get(step.group)
            if group is None:
                group = group_ids[step.group] = f"{self.jobs.token}-g{self.next_key()}"
        parents = tuple(self._parent_id(ref, made) for ref in after)
        job_opts = options.linked(parents or None, group, step.bind)
        if job_opts.queue not in self.pools.declared and job_opts.queue not in self.declared_queues():
            raise self._undeclared(job_opts.queue)
        job = queued_job(self.jobs, next(self._ids), step.task, step.args, step.kwargs or None, _time(), job_opts)
        if options.eta is not None:
            job.mark_scheduled(options.eta)
        if parents:
            job.status = JobStatus.DEFERRED
        return job, [Link(parent, job.id, pos) for parent, pos in zip(parents, positions, strict=True)]

    def _parent_id(self, ref: int | Job | str, made: list[Job]) -> str:
        """The id of the job a step waits on: an earlier step's, or a job of this app."""
        if isinstance(ref, int):
            return made[ref].id
        if isinstance(ref, Job):
            if ref._queue is not self.jobs:
                app = getattr(getattr(ref._queue, "app", None), "name", "?")
                raise DependencyError(
                    f"depends_on: job {ref.id} ({ref.name}) belongs to another app's queue ({app!r}), not to"
                    f" {self.app.name!r}'s; a job can only wait on jobs of its own app. Nothing was queued"
                )
            return ref.id
        return ref

    def _run_workflow_eagerly(self, jobs: list[Job], links: list[Link]) -> None:
        """MEMQUEUE_EAGER: the workflow goes into the store as in a worker's app (its links
        and groups written: ``mq.get_group()``, ``Job.dependents`` answer as there), then
        its jobs are taken and run here, each when the store releases it (a chain's links
        one after the other, a chord's members then its callback, with their results bound
        in by the store; a failure cancels what waits on it, as the store decides)."""
        storage = self.store.storage
        mine = {job.id for job in jobs}
        for link in links:
            if link.parent not in mine:
                parent = storage.get(link.parent)
                if parent is None or not parent.finished:
                    raise DependencyError(
                        f"depends_on: job {link.parent} has not run; in eager mode (MEMQUEUE_EAGER) a job"
                        " can only wait on jobs that ran already. Nothing was queued"
                    )
        storage.put_workflow(jobs, links)
        queues = list(dict.fromkeys(job.queue for job in jobs))
        ran = True
        while ran:  # each pass takes what the last one released (nothing else waits in eager mode)
            ran = False
            for name in queues:
                while (job := storage.take(0, queue=name)) is not None:
                    if job_enqueued.receivers:
                        job_enqueued.send(self.app, job=job)
                    self._run_inline(job)
                    ran = True
        for job in jobs:
            if not job.finished:
                storage.get(job.id)  # cancelled by the store (a parent failed): the handle reads it

    # -- periodic ticks ---------------------------------------------------------------------------
    def enqueue_tick(self, task: Task[..., Any], tick: float) -> bool:
        """Claim ``tick`` of the periodic ``task`` and queue its job, in one step of the store.

        False if a process claimed that tick (or a later one) already. A full
        store claims nothing: the tick is logged as skipped.
        """
        job = Job(self.jobs, next(self._ids), task, (), None, _time(), QUEUED,
                  options=task.job_options.replace(tick=tick))
        try:
            claimed = self.store.storage.claim_tick(task.name, tick, job)
        except (QueueFull, QueueClosed) as exc:
            logger.warning("periodic task %s: the tick %s was not queued: %s", task.name, job.to_dict()["tick"], exc)
            return False
        if not claimed:
            return False
        self._queued(job)
        return True

    # -- which queues an enqueue may name ----------------------------------------------------------
    def declared_queues(self) -> frozenset[str]:
        """The queues an enqueue may name: this process's ``MEMQUEUE_QUEUES`` (and the
        worker's ``--queues``), plus, with a store that other processes share,
        every queue a registered task or handler names (``@mq.task(queue=...)``:
        a worker, which imports the same tasks, consumes it) and every queue a
        process consuming that store declared there in the last minute (a
        worker's ``--queues``). The store is asked at most once a second."""
        declared = self.pools.declared
        storage = self.store.storage
        if storage.capabilities.shared:
            registry = self.registry
            if self._task_queues[0] != registry.version:  # a task was registered since the last look
                self._task_queues = (registry.version, frozenset(t.queue for t in registry.tasks.values()))
            declared = declared | self._task_queues[1]
            now = time.monotonic()
            if now >= self._known_until:
                self._known = frozenset(storage.known_queues())
                self._known_until = now + 1.0
            declared = declared | self._known
        return declared

    def _undeclared(self, name: str) -> UnknownQueueError:
        known = ", ".join(sorted(self.declared_queues()))
        shared = self.store.storage.capabilities.shared
        return UnknownQueueError(
            f"no process declares the queue {name!r}, so nothing would run its jobs (declared: {known})."
            f" Add it to MEMQUEUE_QUEUES, e.g. MEMQUEUE_QUEUES = {{'default': 1, {name!r}: 1}}"
            + (
                f" (with 0 threads in a process that only enqueues to it), name it in a task's"
                f" @mq.task(queue={name!r}), or start a worker with --queues {name} (a running"
                " worker declares its queues in the store)"
                if shared
                else ""
            )
        )

    def warn_config_changed(self) -> None:
        """Warn (:class:`MemQueueConfigWarning`) about each ``MEMQUEUE_*`` key changed since init_app.

        Runs once, at the first enqueue: a test that sets ``MEMQUEUE_EAGER``
        after ``create_app()`` learns why nothing ran inline.
        """
        self._config_checked = True
        now = {key: value for key, value in self.app.config.items() if is_ours(key)}
        for key in sorted(set(now) | set(self._config_read)):
            before, after = self._config_read.get(key, _MISSING), now.get(key, _MISSING)
            if before is _MISSING or after is _MISSING or before != after:
                warnings.warn(
                    f"{key} was changed on app.config after init_app ({_show(before)} -> {_show(after)});"
                    f" the queue of app {self.app.name!r} still uses {_show(before)}. flask-memqueue reads"
                    " its keys once, in init_app: set them before mq.init_app(app) (in your app factory,"
                    " or the config you pass it). In tests the memqueue_eager fixture switches eager mode.",
                    MemQueueConfigWarning,
                    stacklevel=4,
                )


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else repr(value)
