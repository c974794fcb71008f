"""Per-app, per-process state: the store, the consumer thread and its guard.

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
from typing import TYPE_CHECKING, Any, Protocol

from .consumer import Consumer
from .exceptions import MemQueueConfigWarning, QueueClosed
from .job import Job, JobStatus
from .registry import Registry, Task, missing_task
from .signals import job_cancelled, job_enqueued
from .storage import Storage, StoreContext, open_storage, redact_url

if TYPE_CHECKING:
    from flask import Flask

    from .amqp import AmqpState
    from .config import Config

logger = logging.getLogger("flask_memqueue")

_QUEUES: weakref.WeakSet[AppQueue] = weakref.WeakSet()


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
        self.consumer = Consumer(self)
        #: The ident of the one legitimate consumer thread, or None.
        self.consumer_ident: int | None = None
        self._thread: threading.Thread | None = None
        #: True from a successful start until the thread's loop exits: cheaper
        #: than Thread.is_alive() on every enqueue and request.
        self.consumer_alive = False
        #: Set by shutdown(); enqueue raises QueueClosed after it.
        self.closed = False
        #: Consumer threads started in this process (1 + restarts).
        self.starts = 0
        #: Why the consumer could not be started, if it could not.
        self.start_error: str | None = None

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
        )
        return open_storage(c.storage, c.storage_options, context)

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
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, eta: float | None = None
    ) -> Job:
        """Queue a call of ``task`` (at Unix time ``eta`` if given)."""
        if self.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        if not self._config_checked:
            self.warn_config_changed()
        job = Job(self, next(self._ids), task, args, kwargs or None, time.time())
        if self.config.eager:
            return self._run_eagerly(job)
        if eta is None:
            self.storage.put(job)
        else:
            job.mark_scheduled(eta)
            self.storage.schedule(job)
        if job_enqueued.receivers:
            job_enqueued.send(self.app, job=job)
        if not self.consumer_alive:
            self.ensure_consumer()
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
        self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, eta: float | None = None
    ) -> Job:
        """A job as :meth:`enqueue` makes it (same id sequence), handed to no store
        (the pytest plugin's ``memqueue_captured`` records such jobs)."""
        job = Job(self, next(self._ids), task, args, kwargs or None, time.time())
        if eta is not None:
            job.mark_scheduled(eta)
        return job

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

    # -- the consumer thread -------------------------------------------------------
    def ensure_consumer(self, *, draining: bool = False) -> bool:
        """Start the consumer thread unless it runs. Idempotent and thread-safe.

        Returns True if a consumer runs afterwards. It does not in an
        enqueue-only process (``MEMQUEUE_CONSUMER = False``), in eager mode,
        after shutdown, or when the thread cannot be started (then
        :attr:`start_error` says why and ``/health`` answers 503).
        """
        if self.consumer_alive:
            return True
        if (self.closed and not draining) or self.config.eager or not self.config.consumer:
            return False
        if self.amqp is not None and not self.closed:
            self.amqp.ensure_consumers()
        with self.lock:
            if self.consumer_alive:
                return True
            thread = threading.Thread(
                target=self.consumer.run,
                name=f"memqueue-consumer[{self.app.name}]",
                daemon=True,
            )
            self.consumer.reset()
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                self.start_error = f"{type(exc).__name__}: {exc}"
                logger.error("cannot start the consumer thread of %r: %s", self.app.name, exc)
                return False
            self._thread = thread
            self.consumer_ident = thread.ident
            self.consumer_alive = True
            self.start_error = None
            self.starts += 1
        return True

    def adopt_consumer_thread(self) -> None:
        """Make the calling thread this queue's one legitimate consumer
        (``flask memqueue worker`` consumes in its main thread)."""
        with self.lock:
            self.consumer_ident = threading.get_ident()
            self.consumer_alive = True

    def consumer_exited(self, ident: int, crashed: bool) -> None:
        """Called by a consumer thread as its loop ends."""
        with self.lock:
            if self.consumer_ident != ident:
                return
            self.consumer_alive = False
            self.consumer_ident = None
        if crashed and not self.closed:
            self.ensure_consumer()  # nothing queued waits for the next request

    @property
    def consumer_thread(self) -> threading.Thread | None:
        """The consumer thread, if one is alive."""
        thread = self._thread
        return thread if self.consumer_alive and thread is not None and thread.is_alive() else None

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

    def _refuse_self_wait(self, what: str) -> None:
        """A job of this queue waiting for this queue would wait for itself, forever."""
        if self.consumer_alive and threading.get_ident() == self.consumer_ident:
            raise RuntimeError(
                f"{what} was called from inside a job of app {self.app.name!r}: the consumer runs"
                " one job at a time, so it would wait for itself. Enqueue a follow-up job instead."
            )

    def job_waiter(self, job: Job) -> threading.Event | None:
        """The event ``job.wait()`` waits on (starting the consumer if it should run)."""
        self._refuse_self_wait("Job.wait()")
        if self.config.consumer and not self.consumer_alive and not self.closed:
            self.ensure_consumer()
        return self.storage.waiter(job)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job waits or runs; False on timeout.

        Also False at once when jobs wait and no consumer can run them here
        (it cannot be started, or this process has none and no journal).
        """
        self._refuse_self_wait("join()")
        if not self.consumer_alive and self.storage.depth():
            if not self.ensure_consumer() and not self.storage.capabilities.shared:
                return False
        return self.storage.join(timeout)

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
        drained = True
        persistent = self.storage.capabilities.persistent
        if wait and not persistent:  # a persistent store keeps waiting jobs: no drain
            if self.storage.depth() and not self.ensure_consumer(draining=True) and not self.consumer_alive:
                drained = False  # nobody can run them: do not wait for nothing
            else:  # what is due now; jobs scheduled for later are cancelled below
                drained = self.storage.join(timeout, due_only=True)
        self.consumer.stop()
        if self.amqp is not None:  # after the message each holds; unacknowledged ones go back to the broker
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            drained = self.amqp.stop(remaining if wait else 0.0) and drained
        self.storage.wake()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            running = self.consumer.current
            if thread.is_alive() and running is not None:  # still running when the time was up: say so
                drained = False
                logger.warning(
                    "app %r shut down while job %s (%s) was still running; %s", self.app.name, running.id,
                    running.name, "if the process ends now, another process takes it over once this one is gone"
                    if persistent else "if the process ends now, it is interrupted and lost",
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
                    " Set MEMQUEUE_STORAGE to a persistent store (sqlite:///jobs.db) to keep waiting"
                    " jobs across restarts.",
                    self.app.name, len(left), shown,
                )
        self.storage.close()
        return drained

    def stop_for_signal(self, name: str) -> None:
        """The process is about to die of signal ``name``: log what becomes of every job, stop.

        Called by the SIGTERM handler of a development server process
        (:mod:`flask_memqueue.sigterm`), from its helper thread. Nothing is
        waited for: the process dies right after, as it would have without us.
        """
        current = self.consumer.current
        if current is not None:
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
        thread = self.consumer_thread
        current = self.consumer.current
        info: dict[str, Any] = {
            "name": thread.name if thread else None,
            "ident": thread.ident if thread else None,
            "alive": thread is not None,
            "jobs_done": self.consumer.jobs_done,
            "attempts": self.consumer.attempts,
            "starts": self.starts,
            "enabled": bool(self.config.consumer and not self.config.eager),
            "error": self.start_error,
            "store_error": self.consumer.store_error,
            "current": None,
        }
        if current is not None:
            started = current.started_at
            info["current"] = {
                "id": current.id,
                "task": current.name,
                "running_for": None if started is None else round(time.time() - started, 3),
            }
        return info

    def stats(self) -> dict[str, Any]:
        counts = self.storage.counts()
        return {
            "app": self.app.name,
            "pid": self.pid,
            "storage": self.storage_url,
            "counts": counts,
            "depth": self.storage.depth(),
            "maxsize": self.config.maxsize,
            "consumer": self.consumer_info(),
            "consumer_alive": self.consumer_thread is not None,
            "uptime": round(time.time() - self.started_at, 3),
            "eager": self.config.eager,
            "closed": self.closed,
            "throughput": self.consumer.throughput(),
            "amqp": self.amqp.info() if self.amqp is not None else None,
        }


_MISSING: Any = object()


def _is_ours(key: object) -> bool:
    return isinstance(key, str) and key.startswith("MEMQUEUE_")


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else repr(value)


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
