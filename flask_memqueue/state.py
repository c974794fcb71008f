"""Per-app, per-process state: :class:`AppQueue`, the front of one app's queue in one process.

One :class:`AppQueue` lives in ``app.extensions["memqueue"]`` for every app
that ``init_app`` bound. It holds no logic of its own: it builds the rooms
of :mod:`flask_memqueue.runtime` (the store handle, the consumer pools, the
scheduler's place, the supervisor, the producer, the job desk, the
transport), builds them again in a forked child, and hands on what the
extension, the routes and the CLI ask.

Nothing here is global but three hooks: one that resets every queue in a
forked child (gunicorn ``--preload``), one that drains every queue at
interpreter exit, and one that stops every queue before a signal kills the
development server.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .runtime import shutdown as _shutdown
from .runtime import stats as _stats
from .runtime.children import Children
from .runtime.jobs import Jobs
from .runtime.limits import Watchdog
from .runtime.pools import ConsumerPools
from .runtime.producer import Producer, is_ours
from .runtime.scheduling import SchedulerPlace, in_reloader_watcher
from .runtime.store import StoreHandle
from .runtime.supervisor import Supervisor
from .runtime.transport import StoreTransport, Transport, open_transport

if TYPE_CHECKING:
    from flask import Flask

    from .amqp import Published
    from .config import Config
    from .consumer import Consumer
    from .hooks import Hooks
    from .job import Job
    from .jobfilter import JobFilter
    from .options import JobOptions
    from .periodic import Scheduler
    from .registry import Registry
    from .storage import Storage
    from .task import Task

logger = logging.getLogger("flask_memqueue")

_QUEUES: weakref.WeakSet[AppQueue] = weakref.WeakSet()


class MetricsExporter(Protocol):
    """What the queue keeps of its app's metrics (:class:`flask_memqueue.metrics.Metrics`)."""

    def render(self) -> tuple[bytes, str]: ...


class AppQueue:
    """Everything flask-memqueue keeps for one app in one process: the front of its rooms."""

    #: Queue a call of ``task`` (``options`` None: the task's own): the producer's
    #: :meth:`~flask_memqueue.runtime.producer.Producer.enqueue`, bound here per
    #: process so that the hot path makes no extra call.
    enqueue: Callable[..., Job]

    def __init__(self, mq: Any, registry: Registry, app: Flask, config: Config) -> None:
        #: The extension object that bound the app.
        self.mq = mq
        #: The app whose context every job runs in.
        self.app = app
        self._config = config
        self.registry = registry
        #: The hooks around each job (the extension's, shared by its apps).
        self.hooks: Hooks = mq.hooks
        #: The app's Prometheus metrics (:mod:`flask_memqueue.metrics`), if on and installed.
        self.metrics: MetricsExporter | None = None
        # The MEMQUEUE_* values init_app read (see Producer.warn_config_changed).
        self._config_read = {key: value for key, value in app.config.items() if is_ours(key)}
        #: Messages as jobs of the store (what eager mode always uses).
        self.store_transport: Transport = StoreTransport(self)
        #: How messages travel (:mod:`flask_memqueue.runtime.transport`): chosen once, by
        #: :meth:`open_transport` in ``init_app``.
        self.transport: Transport = self.store_transport
        self._fresh_process()
        _QUEUES.add(self)

    def open_transport(self) -> None:
        """Choose how messages travel (``MEMQUEUE_AMQP_URL``), once; the store is closed if that fails.

        :raises ConfigurationError: the URL cannot be used, or its client is missing.
        """
        try:
            self.transport = self.supervisor.transport = open_transport(self, self)
        except BaseException:
            self.store.close()
            raise

    def _fresh_process(self, threads: dict[str, int] | None = None) -> None:
        """Build the rooms that belong to one process (again after a fork)."""
        app, config, registry = self.app, self._config, self.registry
        #: The store, and this process's id prefix (:mod:`flask_memqueue.runtime.store`).
        self.store = StoreHandle(app, config, registry.task_named)
        #: The consumer threads, a pool per queue.
        self.pools = ConsumerPools(app, config, self.store, self.hooks)
        #: Where the scheduler of periodic tasks runs.
        self.scheduling = SchedulerPlace(app, config, registry, self.store, self.pools.lock)
        #: What should run here, started lazily; the ``closed`` flag.
        self.supervisor = Supervisor(app, config, registry, self.store, self.pools, self.scheduling, self.transport)
        #: Time limits and aborts of the jobs running here (:mod:`flask_memqueue.runtime.limits`).
        self.limits = Watchdog(app, config, self.store, self.pools)
        self.supervisor.limits = self.limits
        #: The warm child processes of isolated jobs (:mod:`flask_memqueue.runtime.children`).
        old = getattr(self, "children", None)
        self.children = Children(app, config)
        if old is not None:  # a forked child: the app's ref (found by init_app) stays, the parent's children not
            self.children.app_ref = old.app_ref
            old.after_fork()
        #: What a job asks of its queue, and the job-level verbs.
        self.jobs = Jobs(app, config, self.store, self.pools, self.supervisor, self.limits)
        self.store.open(self.jobs)
        self.scheduling.open()
        #: Jobs in: every enqueue passes here.
        self.producer = Producer(app, config, registry, self.hooks, self.store, self.jobs, self.pools,
                                 self.supervisor, self._config_read)
        self.scheduling.queue_tick = self.producer.enqueue_tick
        self.enqueue = self.producer.enqueue

    @property
    def config(self) -> Config:
        """The validated ``MEMQUEUE_*`` settings (the ``memqueue_eager`` fixture replaces them)."""
        return self._config

    @config.setter
    def config(self, value: Config) -> None:
        self._config = value
        for room in (self.store, self.pools, self.scheduling, self.supervisor, self.jobs, self.producer,
                     self.limits, self.children):
            room.config = value

    # -- enqueue and produce ----------------------------------------------------------------
    def new_job(self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                options: JobOptions | None = None) -> Job:
        """A job as :meth:`enqueue` makes it, handed to no store (see :meth:`Producer.new_job
        <flask_memqueue.runtime.producer.Producer.new_job>`)."""
        return self.producer.new_job(task, args, kwargs, options)

    def route(self) -> Transport:
        """The one routing rule of messages: the transport chosen at ``init_app``, except in
        eager mode, where a message runs inline as a job of the store."""
        return self.store_transport if self._config.eager else self.transport

    def produce(self, task: Task[..., Any], message: Any) -> Job | Published:
        """Send ``message`` to the handler ``task`` (see :meth:`route`)."""
        return self.route().publish(task, message)

    @property
    def storage_shared(self) -> bool:
        """True if other processes see this app's store (the store transport's ``shared``)."""
        return self.store.storage.capabilities.shared

    # -- running -------------------------------------------------------------------------------
    def ensure_consumer(self, *, draining: bool = False, serving: bool = False) -> bool:
        """Start every thread that should run and does not (:meth:`Supervisor.ensure
        <flask_memqueue.runtime.supervisor.Supervisor.ensure>`)."""
        return self.supervisor.ensure(draining=draining, serving=serving)

    def ensure_scheduler(self, *, serving: bool = False) -> bool:
        """Start the scheduler thread if it should run and does not."""
        return self.supervisor.ensure_scheduler(serving=serving)

    def become_worker(self, threads: dict[str, int]) -> None:
        """Run exactly these queues with these thread counts (``flask memqueue worker``)."""
        self.pools.become_worker(threads)

    def run_once(self, timeout: float | None = 0.0, queue: str | None = None) -> bool:
        """Run one due job in the calling thread (see :meth:`ConsumerPools.run_once
        <flask_memqueue.runtime.pools.ConsumerPools.run_once>`)."""
        return self.pools.run_once(timeout, queue)

    # -- jobs ------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def requeue(self, job: Job) -> bool:
        return self.jobs.requeue(job)

    def join(self, timeout: float | None = None, queue: str | None = None) -> bool:
        return self.jobs.join(timeout, queue)

    # -- steering (issue 24: flask_memqueue/runtime/control.py) -----------------------------------
    def enqueue_many(self, calls: Any) -> list[Job]:
        """Queue every call object in one step of the store (see :meth:`MemQueue.enqueue_many
        <flask_memqueue.MemQueue.enqueue_many>`)."""
        from .runtime import control  # imported on first use: the hot path's process stays as small

        return control.enqueue_many(self, calls)

    def pause(self, name: str) -> bool:
        from .runtime import control

        return control.pause(self, name)

    def resume(self, name: str) -> bool:
        from .runtime import control

        return control.resume(self, name)

    def paused(self) -> set[str]:
        from .runtime import control

        return control.paused(self)

    def find_jobs(self, flt: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        """The jobs ``flt`` matches, newest first."""
        return self.store.storage.find(flt, limit, offset)

    def count_jobs(self, flt: JobFilter) -> int:
        return self.store.storage.count_matching(flt)

    def act_on(self, flt: JobFilter, action: str) -> int:
        """``"retry"``, ``"cancel"`` or ``"delete"`` every job ``flt`` matches; how many changed."""
        from .runtime import control

        return control.act_on(self, flt, action)

    # -- the end ---------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop taking jobs; with ``wait``, run what waits; stop the threads. True if nothing
        was left unrun (see :func:`flask_memqueue.runtime.shutdown.shutdown`)."""
        return _shutdown.shutdown(self, wait, timeout)

    def stop_for_signal(self, name: str) -> None:
        """The process is about to die of signal ``name``: log what becomes of every job, stop."""
        _shutdown.stop_for_signal(self, name)

    def _after_fork_in_child(self) -> None:
        """A forked child owns none of its parent's jobs or threads.

        The jobs it inherited are still queued in the parent, which runs
        them; running them here too would run them twice. So the child starts
        empty, with new locks, a new id prefix and no consumer (one starts on
        first use).
        """
        inherited = self.store.inherited()
        self._fresh_process()
        if inherited:
            logger.debug("forked child %d left %d inherited job(s) to its parent", self.pid, inherited)

    # -- what the routes show ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return _stats.stats(self)

    def consumer_info(self) -> dict[str, Any]:
        return _stats.consumer_info(self)

    def limit_uses(self) -> list[dict[str, Any]]:
        return _stats.limit_uses(self)

    def queues_info(self) -> dict[str, dict[str, Any]]:
        return _stats.queues_info(self)

    def throughput(self) -> list[dict[str, Any]]:
        return _stats.throughput(self.pools)

    # -- the rooms' state, read through the front (tests and older code read these names) ---------
    @property
    def storage(self) -> Storage:
        """The app's store in this process."""
        return self.store.storage

    @storage.setter
    def storage(self, value: Storage) -> None:  # a test (or a wrapper) may put another store in front
        self.store.storage = value

    @property
    def storage_url(self) -> str:
        """The store's URL as people may see it: any password replaced by ``***``."""
        return self.store.url

    @property
    def pid(self) -> int:
        return self.store.pid

    @property
    def token(self) -> str:
        return self.store.token

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` ran: enqueue raises QueueClosed."""
        return self.supervisor.closed

    @property
    def worker(self) -> bool:
        """True in a ``flask memqueue worker`` process."""
        return self.pools.worker

    @property
    def consumer_alive(self) -> bool:
        return self.supervisor.alive

    @property
    def start_error(self) -> str | None:
        return self.pools.start_error

    @property
    def starts(self) -> int:
        return self.pools.starts

    @property
    def lock(self) -> threading.Lock:
        return self.pools.lock

    @property
    def threads(self) -> dict[str, int]:
        return self.pools.threads

    @property
    def consumer(self) -> Consumer:
        return self.pools.consumer

    @property
    def consumer_ident(self) -> int | None:
        return self.pools.consumer_ident

    @property
    def consumer_idents(self) -> dict[str, list[int]]:
        return self.pools.idents

    @property
    def consumer_thread(self) -> threading.Thread | None:
        return self.pools.consumer_thread

    def all_consumers(self) -> list[Consumer]:
        return self.pools.all()

    def live_threads(self) -> list[threading.Thread]:
        return self.pools.live_threads()

    @property
    def scheduler(self) -> Scheduler:
        return self.scheduling.scheduler

    def __repr__(self) -> str:
        return f"<AppQueue {self.app.name!r} {self.store.url} pid={self.pid}>"


def _in_reloader_watcher() -> bool:  # the name extension.py and older code import
    return in_reloader_watcher()


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
            queue.supervisor.close()
            queue.pools.start_error = f"{type(exc).__name__}: {exc}"
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
