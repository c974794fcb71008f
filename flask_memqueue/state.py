"""Per-app, per-process state: the store, the consumer threads and their guard.

One :class:`AppQueue` lives in ``app.extensions["memqueue"]`` for every app
that ``init_app`` bound. Nothing here is global but two hooks: one that
resets every queue in a forked child (gunicorn ``--preload``), and one that
drains every queue at interpreter exit.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import secrets
import threading
import time
import warnings
import weakref
from time import time as _time
from typing import TYPE_CHECKING, Any, Protocol

from .consumer import Consumer
from .exceptions import ConfigurationError, MemQueueConfigWarning, QueueClosed, QueueFull, UnknownQueueError
from .job import DEFAULT_QUEUE, Job, JobOptions, JobStatus, job_options, queued_job
from .periodic import Scheduler
from .registry import Registry, Task, missing_task
from .signals import job_cancelled, job_enqueued
from .storage import (
    SHARED_STORE_EXAMPLE,
    TRANSACTIONAL_STORE_EXAMPLE,
    Storage,
    StoreContext,
    open_storage,
    redact_url,
)

if TYPE_CHECKING:
    from flask import Flask

    from .amqp import AmqpState
    from .config import Config

logger = logging.getLogger("flask_memqueue")

_QUEUES: weakref.WeakSet[AppQueue] = weakref.WeakSet()
QUEUED = JobStatus.QUEUED
_new = object.__new__


class MetricsExporter(Protocol):
    """What the queue keeps of its app's metrics (:class:`flask_memqueue.metrics.Metrics`)."""

    def render(self) -> tuple[bytes, str]: ...


class AppQueue:
    """Everything flask-memqueue keeps for one app in one process."""

    def __init__(self, mq: object, registry: Registry, app: Flask, config: Config) -> None:
        #: The extension object that bound the app.
        self.mq = mq
        #: The app whose context every job runs in.
        self.app = app
        #: The validated ``MEMQUEUE_*`` settings.
        self.config = config
        self.registry = registry
        # Stand-in tasks for names this process does not know, one per name.
        self._missing: dict[str, Task[..., Any]] = {}
        #: Guards starting and stopping the consumer.
        self.lock = threading.Lock()
        #: Consumer threads this process runs per named queue (MEMQUEUE_QUEUES, or
        #: the worker's --queues/--threads); 0 declares a queue without consuming it.
        self.threads: dict[str, int] = dict(config.queues)
        # Queue names an enqueue may use: see declared_queues().
        self._declared: frozenset[str] = frozenset()
        #: A ``flask memqueue worker`` process: consumes whatever MEMQUEUE_CONSUMER says.
        self.worker = False
        # Queues other processes declared in a shared store, and until when that is fresh.
        self._known: frozenset[str] = frozenset()
        self._known_until = 0.0
        # The queues registered tasks name, and the registry's version when they were read.
        self._task_queues: tuple[int, frozenset[str]] = (-1, frozenset())
        # The MEMQUEUE_* values init_app read, to warn at the first enqueue
        # about a key changed later (which would otherwise do nothing, silently).
        self._config_read = {key: value for key, value in app.config.items() if _is_ours(key)}
        self._config_checked = False
        #: The app's Prometheus metrics (:mod:`flask_memqueue.metrics`), if on and installed.
        self.metrics: MetricsExporter | None = None
        #: Messages over RabbitMQ (:mod:`flask_memqueue.amqp`), if ``MEMQUEUE_AMQP_URL`` is set.
        self.amqp: AmqpState | None = None
        self._fresh_process()
        _QUEUES.add(self)

    def _fresh_process(self) -> None:
        """Set up everything that belongs to one process (again after a fork)."""
        #: The process this state belongs to.
        self.pid = os.getpid()
        #: Prefix of this process's job ids, new in every process.
        self.token = secrets.token_hex(4)
        self.started_at = time.time()
        self._ids = itertools.count(1)
        self.storage: Storage = self._make_storage()
        #: One Consumer per thread, per queue: the pools' places.
        self.pools: dict[str, list[Consumer]] = {}
        self._make_pools()
        #: True while every consumer thread that should run here is alive:
        #: one attribute read on every enqueue and request (a dead thread is
        #: replaced by the next of them).
        self.consumer_alive = False
        #: Set by shutdown(); enqueue raises QueueClosed after it.
        self.closed = False
        #: Consumer threads started in this process (one per place, + restarts).
        self.starts = 0
        #: Why the consumer could not be started, if it could not.
        self.start_error: str | None = None
        #: The schedule of the periodic tasks in this process (its thread starts with the consumers).
        self.scheduler = Scheduler(self)

    def _make_storage(self) -> Storage:
        """Open the store ``MEMQUEUE_STORAGE`` names (a backend's errors name their key)."""
        c = self.config
        context = StoreContext(
            namespace=self.app.name,
            token=self.token,
            host=self,
            task=self.task_named,
            base_dir=self.app.instance_path,
            maxsize=c.maxsize,
            max_finished=c.max_finished,
            result_ttl=c.result_ttl,
            local_jobs=c.consumer or self.app.testing,
            config_key=c.storage_key,
            development=bool(self.app.debug or self.app.testing),
        )
        return open_storage(c.storage, c.storage_options, context)

    def _make_pools(self) -> None:
        """One Consumer per thread of every queue in :attr:`threads` (none alive yet)."""
        self.pools = {name: [Consumer(self, name, i) for i in range(n)] for name, n in self.threads.items()}
        pool = self.pools.get(DEFAULT_QUEUE)
        #: The default queue's first consumer: it runs eager jobs and
        #: ``mq.run_once()``, and ``/stats`` shows it as "the consumer".
        self.consumer: Consumer = pool[0] if pool else Consumer(self, DEFAULT_QUEUE, 0)
        self._declared = frozenset(self.threads) | frozenset(self.config.queues)

    def become_worker(self, threads: dict[str, int]) -> None:
        """Run exactly these queues with these thread counts (``flask memqueue worker
        --queues/--threads``), even where ``MEMQUEUE_CONSUMER = False``; before any
        consumer thread started."""
        with self.lock:
            if any(c.alive for c in self.all_consumers()):
                raise RuntimeError("become_worker() must come before the consumer threads start")
            self.worker = True
            self.threads = dict(threads)
            self._make_pools()

    def all_consumers(self) -> list[Consumer]:
        """Every place of every pool, queue by queue."""
        return [c for pool in self.pools.values() for c in pool]

    def declared_queues(self) -> frozenset[str]:
        """The queues an enqueue may name: this process's ``MEMQUEUE_QUEUES`` (and the
        worker's ``--queues``), plus, with a store that other processes share,
        every queue a registered task or handler names (``@mq.task(queue=...)``:
        a worker, which imports the same tasks, consumes it) and every queue a
        process consuming that store declared there in the last minute (a
        worker's ``--queues``). The store is asked at most once a second."""
        declared = self._declared
        storage = self.storage
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
        shared = self.storage.capabilities.shared
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

    def task_named(self, name: str) -> Task[..., Any]:
        """The task registered as ``name``; for a name this process does not know, a
        stand-in whose job fails saying which module to import."""
        task = self.registry.tasks.get(name)
        if task is None:
            task = self._missing.get(name)
            if task is None:
                task = self._missing[name] = missing_task(name)
        return task

    # -- enqueue ---------------------------------------------------------------
    def enqueue(
        self,
        task: Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        eta: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> Job:
        """Queue a call of ``task`` (at Unix time ``eta`` if given), in the task's
        queue with its priority unless ``queue``/``priority`` say otherwise.

        With ``unique_key``, a live job holding that key is returned instead
        (nothing is queued, no signal is sent).

        :raises UnknownQueueError: no process declares that queue.
        """
        if self.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        if not self._config_checked:
            self.warn_config_changed()
        # new_job(), inlined (the hot path): a call without options shares its task's JobOptions.
        if kwargs or not task.min_args <= len(args) <= task.max_args:
            task.check_call(args, kwargs)  # refused here rather than failing in the worker
        if queue is None and priority is None and unique_key is None:
            options = task.job_options
        else:
            options = self._options(task, queue, priority, unique_key)
        name = options.queue
        if name not in self._declared and name not in self.declared_queues():
            raise self._undeclared(name)
        # queued_job(), inlined: its nine slots on a bare object (no class call, no function call)
        job = _new(Job)
        job.key = next(self._ids)
        job._queue = self
        job.task = task
        job.args = args
        job.kwargs = kwargs or None
        job.status = QUEUED
        job.enqueued_at = _time()
        job._out = None
        job.options = options
        if self.config.eager:
            return self._run_eagerly(job)
        if unique_key is None:  # the hot path first
            if eta is None:
                self.storage.put(job)
            else:
                job.mark_scheduled(eta)
                self.storage.schedule(job)
        else:
            if eta is not None:
                job.mark_scheduled(eta)
            holder = self.storage.put_unique(job)
            if holder is not job:
                return holder
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        if not self.consumer_alive:
            self.ensure_consumer()
        return job

    def enqueue_in_session(
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, eta: float | None,
        queue: str | None, priority: int | None, unique_key: str | None, session: Any,
    ) -> Job:
        """:meth:`enqueue` through ``session`` (``options(session=...)``): the job is inserted
        in the caller's open transaction and commits or rolls back with it."""
        if self.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        job = self.new_job(task, args, kwargs, eta, queue, priority, unique_key)
        if self.config.eager:
            return self._run_eagerly(job)
        if not self.storage.capabilities.transactional:
            raise ConfigurationError(
                f"options(session=...) inserts the job in your database transaction, which only a store in that"
                f" database can do (MEMQUEUE_STORAGE = {TRANSACTIONAL_STORE_EXAMPLE!r}); this app's store is"
                f" {self.storage_url}."
                " Use options(on_commit=db.session) instead: the job is queued once the session commits"
            )
        holder = self.storage.put_in_transaction(job, session)
        if holder is not job:
            return holder
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        if not self.consumer_alive:
            self.ensure_consumer()
        return job

    def enqueue_on_commit(
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, eta: float | None,
        queue: str | None, priority: int | None, session: Any,
    ) -> Job:
        """:meth:`enqueue` once ``session`` commits (``options(on_commit=...)``); nothing if it
        rolls back. Returns the job now (not in the store yet); see :mod:`flask_memqueue.oncommit`."""
        from . import oncommit

        if self.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        job = self.new_job(task, args, kwargs, eta, queue, priority)

        def put() -> None:
            try:
                if self.config.eager:
                    self._run_eagerly(job)
                    return
                if eta is None:
                    self.storage.put(job)
                else:
                    self.storage.schedule(job)
            except Exception as exc:
                logger.error("job %s (%s) was not queued after its session committed: %s", job.id, job.name, exc)
                job.mark_cancelled(time.time(), f"not queued after the commit: {exc}")
                return
            if job_enqueued.receivers:
                job_enqueued.send(self.app, job=job)
            if not self.consumer_alive:
                self.ensure_consumer()

        def drop() -> None:
            job.mark_cancelled(time.time(), "cancelled: the session rolled back, so the job was never queued")

        oncommit.defer(session, put, drop)
        return job

    def warn_config_changed(self) -> None:
        """Warn (:class:`MemQueueConfigWarning`) about each ``MEMQUEUE_*`` key changed since init_app.

        Runs once, at the first enqueue: a test that sets ``MEMQUEUE_EAGER``
        after ``create_app()`` learns why nothing ran inline.
        """
        self._config_checked = True
        now = {key: value for key, value in self.app.config.items() if _is_ours(key)}
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

    def new_job(
        self,
        task: Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        eta: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> Job:
        """A job as :meth:`enqueue` makes it (same id sequence, same check of its
        queue), handed to no store (the pytest plugin's ``memqueue_captured``
        records such jobs).

        :raises TypeError: the task's function could not take these arguments
            (:meth:`Task.check_call`): refused here rather than failing in the worker.
        """
        if kwargs or not task.min_args <= len(args) <= task.max_args:
            task.check_call(args, kwargs)
        options = self._options(task, queue, priority, unique_key)
        name = options.queue
        if name not in self._declared and name not in self.declared_queues():
            raise self._undeclared(name)
        job = queued_job(self, next(self._ids), task, args, kwargs or None, _time(), options)
        if eta is not None:
            job.mark_scheduled(eta)
        return job

    @staticmethod
    def _options(task: Task[..., Any], queue: str | None, priority: int | None, unique_key: str | None) -> JobOptions:
        """The options of a call: the task's own, with what the call says instead."""
        if queue is None and priority is None and unique_key is None:
            return task.job_options
        return job_options(
            task.queue if queue is None else queue, task.priority if priority is None else priority, unique_key
        )

    def _run_eagerly(self, job: Job) -> Job:
        """MEMQUEUE_EAGER: run the job here and now, retries included (without their delays)."""
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        job.mark_running()
        try:
            while True:
                self.consumer.execute(job)
                if job.status is not JobStatus.SCHEDULED:
                    break
        finally:
            self.storage.finish(job)
        return job

    # -- the consumer threads -----------------------------------------------------
    def ensure_consumer(self, *, draining: bool = False, serving: bool = False) -> bool:
        """Start every consumer thread that should run and does not. Idempotent and thread-safe.

        Returns True if every queue's pool runs afterwards. None does in an
        enqueue-only process (``MEMQUEUE_CONSUMER = False``), in eager mode,
        after shutdown, or when a thread cannot be started (then
        :attr:`start_error` says why and ``/health`` answers 503); a process
        whose queues all have 0 threads runs none either.

        The scheduler of periodic tasks starts here too (:meth:`ensure_scheduler`);
        ``serving`` says a request of this process's server asks.
        """
        if self.consumer_alive:
            return True
        # An enqueue-only process passes here on every enqueue: no call without periodic tasks.
        scheduled = self.ensure_scheduler(serving=serving) if self.registry.periodic else True
        if (self.closed and not draining) or self.config.eager or not (self.config.consumer or self.worker):
            return False
        if self.amqp is not None and not self.closed:
            self.amqp.ensure_consumers()
        with self.lock:
            if self.consumer_alive:
                return True
            consumers = self.all_consumers()
            if not consumers:
                return False
            for consumer in consumers:
                if consumer.alive:
                    continue
                error = _start_guarded(consumer, self._thread_name(consumer))
                if error is not None:
                    self.start_error = error
                    logger.error("cannot start a consumer thread of %r: %s", self.app.name, error)
                    return False
                self.starts += 1
            # The one flag read per request and enqueue also covers the scheduler:
            # while it should run and does not, the next request starts it.
            self.consumer_alive = scheduled
            self.start_error = None
        if self.storage.capabilities.shared:  # other processes may now enqueue to these queues
            try:
                self.storage.declare_queues(name for name, pool in self.pools.items() if pool)
            except Exception as exc:  # the consumers back off on the store themselves; they redeclare
                logger.debug("declaring the queues of %r failed: %s", self.app.name, exc)
        return True

    # -- the scheduler -----------------------------------------------------------------
    def scheduler_wanted(self) -> bool:
        """True if a scheduler thread should run here: periodic tasks are registered,
        ``MEMQUEUE_PERIODIC`` is on, and the queue is neither eager nor shut down."""
        return bool(self.registry.periodic) and self.config.periodic and not self.config.eager and not self.closed

    def ensure_scheduler(self, *, serving: bool = False) -> bool:
        """Start the scheduler thread if it should run and does not. Idempotent and thread-safe.

        Where the consumers start: the first request, the first enqueue,
        ``MEMQUEUE_AUTOSTART``, ``flask memqueue worker``. Never in a process the
        ``flask`` command runs outside the reloader's serving child (the watcher,
        ``flask shell``) unless a request of its own server asks (``serving``):
        the watcher serves none. Returns True if nothing more is to be done here
        (it runs, or it should not run), False if it should run and could not start.
        """
        scheduler = self.scheduler
        if scheduler.alive or not self.scheduler_wanted():
            return True
        if not serving and not self.worker and _in_reloader_watcher():
            return False
        with self.lock:
            if scheduler.alive:
                return True
            error = _start_guarded(scheduler, f"memqueue-scheduler[{self.app.name}]")
            if error is not None:
                scheduler.error = error
                logger.error("cannot start the scheduler thread of %r: %s", self.app.name, error)
                return False
        return True

    def scheduler_exited(self, scheduler: Scheduler, ident: int, crashed: bool) -> None:
        """Called by the scheduler thread as its loop ends."""
        with self.lock:
            if scheduler.ident != ident:
                return
            scheduler.alive = False
            scheduler.ident = None
            self.consumer_alive = False  # the next request or enqueue starts a new one

    def enqueue_tick(self, task: Task[..., Any], tick: float) -> bool:
        """Claim ``tick`` of the periodic ``task`` and queue its job, in one step of the store.

        False if a process claimed that tick (or a later one) already. A full
        store claims nothing: the tick is logged as skipped.
        """
        job = Job(self, next(self._ids), task, (), None, _time(), QUEUED, options=task.job_options.replace(tick=tick))
        try:
            claimed = self.storage.claim_tick(task.name, tick, job)
        except (QueueFull, QueueClosed) as exc:
            logger.warning("periodic task %s: the tick %s was not queued: %s", task.name, job.to_dict()["tick"], exc)
            return False
        if not claimed:
            return False
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        if not self.consumer_alive:
            self.ensure_consumer()
        return True

    def _thread_name(self, consumer: Consumer) -> str:
        if consumer.queue_name == DEFAULT_QUEUE and len(self.pools.get(DEFAULT_QUEUE, ())) == 1:
            return f"memqueue-consumer[{self.app.name}]"
        return f"memqueue-consumer[{self.app.name}:{consumer.queue_name}#{consumer.index}]"

    def consumer_exited(self, consumer: Consumer, ident: int, crashed: bool) -> None:
        """Called by a consumer thread as its loop ends."""
        with self.lock:
            if consumer.ident != ident:
                return
            consumer.alive = False
            consumer.ident = None
            self.consumer_alive = False
        if crashed and not self.closed:
            self.ensure_consumer()  # nothing queued waits for the next request

    @property
    def consumer_idents(self) -> dict[str, list[int]]:
        """The idents of the legitimate consumer threads, per queue."""
        return {
            name: [c.ident for c in pool if c.alive and c.ident is not None] for name, pool in self.pools.items()
        }

    @property
    def consumer_ident(self) -> int | None:
        """The ident of the default queue's first consumer thread, if it runs."""
        c = self.consumer
        return c.ident if c.alive else None

    @property
    def consumer_thread(self) -> threading.Thread | None:
        """The default queue's first consumer thread, if it is alive."""
        c = self.consumer
        thread = c.thread
        return thread if c.alive and thread is not None and thread.is_alive() else None

    def live_threads(self) -> list[threading.Thread]:
        """Every consumer thread of this app that is alive."""
        return [c.thread for c in self.all_consumers() if c.alive and c.thread is not None and c.thread.is_alive()]

    def _consumer_of_this_thread(self) -> Consumer | None:
        me = threading.get_ident()
        for consumer in self.all_consumers():
            if consumer.alive and consumer.ident == me:
                return consumer
        return None

    def run_once(self, timeout: float | None = 0.0, queue: str | None = None) -> bool:
        """Run one due job in the calling thread: of ``queue``, or of any queue
        (the default queue first, then the others by name; a ``timeout`` waits
        for the default queue only). False if there was none."""
        if queue is not None and queue != DEFAULT_QUEUE:
            return Consumer(self, queue).run_once(timeout)
        if queue is None:
            if self.consumer.run_once(0.0):
                return True
            others = (set(self.threads) | set(self.storage.queue_counts())) - {DEFAULT_QUEUE}
            for name in sorted(others):
                if Consumer(self, name).run_once(0.0):
                    return True
            if not timeout:
                return False
        return self.consumer.run_once(timeout)

    # -- jobs ------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        if not isinstance(job_id, str):  # the same answer from every store
            raise TypeError(f"a job id is a string, like the one Job.id gives, not {type(job_id).__name__}")
        return self.storage.get(job_id)

    def cancel(self, job: Job) -> bool:
        done = self.storage.cancel(job)
        if done and job_cancelled.receivers:
            job_cancelled.send(self.app, job=job)
        return done

    def requeue(self, job: Job) -> bool:
        if self.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        done = self.storage.requeue(job)
        if done and not self.consumer_alive:
            self.ensure_consumer()
        return done

    def _refuse_self_wait(self, what: str, queue: str | None = None) -> None:
        """A job waiting for its own queue (``queue``; None: every queue) could wait for itself, forever."""
        consumer = self._consumer_of_this_thread()
        if consumer is not None and (queue is None or queue == consumer.queue_name):
            raise RuntimeError(
                f"{what} was called from inside a job of queue {consumer.queue_name!r} of app"
                f" {self.app.name!r}: its consumer threads run one job each, so it could wait for"
                " itself. Enqueue a follow-up job instead."
            )

    def job_waiter(self, job: Job) -> threading.Event | None:
        """The event ``job.wait()`` waits on (starting the consumers if they should run)."""
        self._refuse_self_wait("Job.wait()", job.queue)
        if self.config.consumer and not self.consumer_alive and not self.closed:
            self.ensure_consumer()
        return self.storage.waiter(job)

    def join(self, timeout: float | None = None, queue: str | None = None) -> bool:
        """Wait until no job waits or runs (in ``queue``, or in every queue); False on timeout.

        Also False at once when jobs wait in a queue that nobody here can run
        (its threads cannot be started, or it has none here) and no other
        process shares the store.
        """
        self._refuse_self_wait("join()", queue)
        storage = self.storage
        if not self.consumer_alive and storage.depth(queue):
            self.ensure_consumer()
        if not storage.capabilities.shared:
            for name, row in storage.queue_counts().items():
                if (queue is None or name == queue) and (row["queued"] or row["scheduled"]) \
                        and not any(c.alive for c in self.pools.get(name, ())):
                    return False  # nobody here runs them, and nobody else can
        return storage.join(timeout, queue=queue)

    # -- shutdown --------------------------------------------------------------
    def shutdown(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop taking jobs; with ``wait``, run what waits; stop the consumer.

        Returns True if nothing was left unrun. With a store whose jobs do not
        outlive the process (memory), jobs still waiting at the end are marked
        cancelled and logged; with a persistent one they stay in the store for
        the next start.
        """
        if wait:
            self._refuse_self_wait("shutdown(wait=True)")
        self.closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        self.scheduler.stop()  # no new tick from now on
        if wait:
            self.scheduler.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self.scheduler.release()  # another process of the app takes the schedule at its next tick
        drained = True
        persistent = self.storage.capabilities.persistent
        if wait and not persistent:  # a persistent store keeps waiting jobs: no drain
            self.ensure_consumer(draining=True)
            # Run what is due in every queue that has threads here (jobs scheduled for
            # later, and those of a queue nobody here runs, are cancelled below).
            for name, row in self.storage.queue_counts().items():
                if not any(c.alive for c in self.pools.get(name, ())):
                    if row["queued"] or row["scheduled"]:
                        drained = False  # nobody can run them: do not wait for nothing
                    continue
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                drained = self.storage.join(remaining, due_only=True, queue=name) and drained
        consumers = self.all_consumers()
        for consumer in consumers:
            consumer.stop()
        if self.amqp is not None:  # after the message each holds; unacknowledged ones go back to the broker
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            drained = self.amqp.stop(remaining if wait else 0.0) and drained
        self.storage.wake()
        if wait:
            me = threading.current_thread()
            for consumer in consumers:
                thread = consumer.thread
                if thread is None or thread is me:
                    continue
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                running = consumer.current
                if thread.is_alive() and running is not None:  # still running when the time was up: say so
                    drained = False
                    logger.warning(
                        "app %r shut down while job %s (%s) was still running; %s", self.app.name, running.id,
                        running.name, "if the process ends now, another process takes it over once this one is"
                        " gone" if persistent else "if the process ends now, it is interrupted and lost",
                    )
        if not persistent:
            left = self.storage.drop_waiting()
            if left:
                drained = False
                now = time.time()
                for job in left:
                    job.mark_cancelled(now, "cancelled: the queue shut down before the job ran")
                    self.storage.finish(job)  # readable as cancelled; wakes its waiters
                    if job_cancelled.receivers:
                        job_cancelled.send(self.app, job=job)
                shown = ", ".join(f"{job.id} ({job.name})" for job in left[:10])
                if len(left) > 10:
                    shown += f" and {len(left) - 10} more"
                logger.warning(
                    "app %r shut down with %d job(s) not run; they were cancelled: %s."
                    " Set MEMQUEUE_STORAGE to a persistent store (%s) to keep waiting"
                    " jobs across restarts.",
                    self.app.name, len(left), shown, SHARED_STORE_EXAMPLE,
                )
        self.storage.close()
        return drained

    def stop_for_signal(self, name: str) -> None:
        """The process is about to die of signal ``name``: log what becomes of every job, stop.

        Called by the SIGTERM handler of a development server process
        (:mod:`flask_memqueue.sigterm`), from its helper thread. Nothing is
        waited for: the process dies right after, as it would have without us.
        """
        for consumer in self.all_consumers():
            current = consumer.current
            if current is None:
                continue
            logger.warning(
                "%s: job %s (%s) of app %r was running and is interrupted; %s", name, current.id, current.name,
                self.app.name, "the store runs it again once another process finds this one dead"
                if self.storage.capabilities.persistent
                else "it is lost (set MEMQUEUE_STORAGE to a persistent store to keep jobs across restarts)",
            )
        if self.storage.capabilities.persistent:
            waiting = self.storage.depth()
            if waiting:
                logger.warning(
                    "%s: %d waiting job(s) of app %r stay in the store %s for the next start",
                    name, waiting, self.app.name, self.storage_url,
                )
        else:
            logger.warning("%s: the queue of app %r stops; waiting jobs are cancelled", name, self.app.name)
        self.shutdown(wait=False)  # memory: marks the waiting jobs cancelled and logs them

    def _after_fork_in_child(self) -> None:
        """A forked child owns none of its parent's jobs or threads.

        The jobs it inherited are still queued in the parent, which runs
        them; running them here too would run them twice. So the child starts
        empty, with new locks, a new id prefix and no consumer (one starts on
        first use).
        """
        # never use the parent's connection (or socket)
        inherited = 0 if self.storage.capabilities.reopen_after_fork else self.storage.depth()
        self.lock = threading.Lock()
        self._fresh_process()
        if inherited:
            logger.debug("forked child %d left %d inherited job(s) to its parent", self.pid, inherited)

    # -- introspection -----------------------------------------------------------
    @property
    def storage_url(self) -> str:
        """The store's URL as people may see it: any password replaced by ``***``."""
        return redact_url(self.config.storage)

    def consumer_info(self) -> dict[str, Any]:
        """The consumer threads: totals, the default queue's first thread, and every thread."""
        consumers = self.all_consumers()
        thread = self.consumer_thread
        info: dict[str, Any] = {
            "name": thread.name if thread else None,
            "ident": thread.ident if thread else None,
            "alive": thread is not None,
            "jobs_done": sum(c.jobs_done for c in consumers),
            "attempts": sum(c.attempts for c in consumers),
            "starts": self.starts,
            "enabled": bool(self.config.consumer and not self.config.eager),
            "error": self.start_error,
            "store_error": next((c.store_error for c in consumers if c.store_error), None),
            "current": _current(self.consumer),
            "threads": [
                {
                    "queue": c.queue_name,
                    "index": c.index,
                    "name": c.thread.name if c.thread is not None and c.alive else None,
                    "ident": c.ident if c.alive else None,
                    "alive": c.alive,
                    "jobs_done": c.jobs_done,
                    "starts": c.starts,
                    "current": _current(c),
                }
                for c in consumers
            ],
        }
        return info

    def queues_info(self) -> dict[str, dict[str, Any]]:
        """Per queue: the threads this process runs for it (0 in a process that only
        enqueues) and how many are alive, who consumes it, and its jobs in the store.

        ``consumed_by`` is ``"this process"``, ``"other processes"`` (a store
        other processes share, where one declared the queue in the last minute:
        a ``flask memqueue worker``, a web process with threads),
        ``"inline (eager mode)"``, or ``"nobody"`` (its jobs wait until a
        process consumes it).
        """
        counts = self.storage.queue_counts()
        eager = self.config.eager
        runs_here = (self.config.consumer or self.worker) and not eager
        elsewhere = self.storage.known_queues() if self.storage.capabilities.shared else set()
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(set(self.threads) | set(counts), key=lambda n: (n != DEFAULT_QUEUE, n)):
            row = counts.get(name, {"queued": 0, "scheduled": 0, "running": 0})
            pool = self.pools.get(name, [])
            threads = self.threads.get(name, 0) if runs_here else 0
            if eager:
                consumed_by = "inline (eager mode)"
            elif threads:
                consumed_by = "this process"
            else:
                consumed_by = "other processes" if name in elsewhere else "nobody"
            out[name] = {
                "threads": threads,
                "alive": sum(1 for c in pool if c.alive),
                "declared": name in self._declared,
                "consumed_by": consumed_by,
                "depth": row["queued"] + row["scheduled"],
                **row,
            }
        return out

    def throughput(self) -> list[dict[str, Any]]:
        """Jobs finished per time bucket, every consumer thread added up."""
        total: list[dict[str, Any]] | None = None
        for consumer in self.all_consumers() or [self.consumer]:
            rows = consumer.throughput()
            if total is None:
                total = rows
            else:
                for mine, theirs in zip(total, rows, strict=False):
                    mine["jobs"] += theirs["jobs"]
        return total or []

    def stats(self) -> dict[str, Any]:
        counts = self.storage.counts()
        return {
            "app": self.app.name,
            "pid": self.pid,
            "storage": self.storage_url,
            "counts": counts,
            "depth": self.storage.depth(),
            "maxsize": self.config.maxsize,
            "queues": self.queues_info(),
            "consumer": self.consumer_info(),
            "consumer_alive": self.consumer_thread is not None,
            "uptime": round(time.time() - self.started_at, 3),
            "eager": self.config.eager,
            "closed": self.closed,
            "throughput": self.throughput(),
            "amqp": self.amqp.info() if self.amqp is not None else None,
        }


def _current(consumer: Consumer) -> dict[str, Any] | None:
    current = consumer.current
    if current is None:
        return None
    started = current.started_at
    return {
        "id": current.id,
        "task": current.name,
        "queue": current.queue,
        "running_for": None if started is None else round(time.time() - started, 3),
    }


class _Guarded(Protocol):
    """A loop run by one legitimate thread (a Consumer, the Scheduler): the guard's fields."""

    thread: threading.Thread | None
    ident: int | None
    alive: bool
    starts: int

    def run(self) -> None: ...

    def reset(self) -> None: ...


def _start_guarded(runner: _Guarded, name: str) -> str | None:
    """Start ``runner``'s thread and record it as the legitimate one (queue lock held).

    Returns why it could not be started (``"can't start new thread"``), else None.
    """
    thread = threading.Thread(target=runner.run, name=name, daemon=True)
    runner.reset()
    try:
        thread.start()
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {exc}"
    runner.thread = thread
    runner.ident = thread.ident
    runner.alive = True
    runner.starts += 1
    return None


_MISSING: Any = object()


def _is_ours(key: object) -> bool:
    return isinstance(key, str) and key.startswith("MEMQUEUE_")


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else repr(value)


def _in_reloader_watcher() -> bool:
    """True in a process run by the ``flask`` command outside the reloader's serving child.

    That is the reloader's watcher (which only restarts children), and also
    ``flask shell``/``flask routes``: none of them should run a consumer
    they were not asked for. The serving child has ``WERKZEUG_RUN_MAIN``.
    """
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


def all_queues() -> list[AppQueue]:
    """Every queue of every app bound in this process (``/threads`` names their consumers)."""
    return list(_QUEUES)


def _after_fork_in_child() -> None:
    """Reset every queue in a forked child; one that cannot be reset never stops the others.

    A queue shut down before the fork stays shut down (nothing is reopened
    for it: its journal may be gone or damaged by now). A queue whose store
    cannot be reopened here is closed and says why, instead of raising out of
    the fork hook, which left every later queue with its parent's state (a
    consumer believed alive that the child does not have, so jobs never ran).
    """
    for queue in list(_QUEUES):
        if queue.closed:
            continue
        try:
            queue._after_fork_in_child()
        except Exception as exc:
            queue.closed = True
            queue.start_error = f"{type(exc).__name__}: {exc}"
            logger.error("forked child %d: the queue of %r is closed: %s", os.getpid(), queue.app.name, exc)


def _stop_all_for_signal(name: str) -> None:
    """Every queue of this process: the process dies of signal ``name`` next."""
    pid = os.getpid()
    for queue in list(_QUEUES):
        if queue.pid == pid and not queue.closed:
            try:
                queue.stop_for_signal(name)
            except Exception:  # pragma: no cover - the next queue still gets its say
                logger.exception("%s: stopping the queue of %r failed", name, queue.app.name)


def _shutdown_all() -> None:
    """At interpreter exit: drain every queue of this process, bounded."""
    pid = os.getpid()
    for queue in list(_QUEUES):
        if queue.pid != pid or queue.closed:
            continue
        try:
            queue.shutdown(wait=True, timeout=queue.config.shutdown_timeout)  # journal: the job in hand only
        except Exception:  # pragma: no cover - never fail interpreter exit
            logger.exception("shutting down the queue of %r at exit failed", queue.app.name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_all)
