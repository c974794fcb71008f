"""Time limits and aborts of the jobs that run in this process: one watchdog thread per app.

**Time limits** are a hook around execution (:class:`TimeLimits`, installed
by the extension once some task, call or ``MEMQUEUE_TIME_LIMIT`` sets a
limit, so that apps without limits keep the hook-free hot path) plus the
:class:`Watchdog`: the hook registers the job's deadline and how to
interrupt it (a :class:`Watch`); the watchdog sleeps on one
``Condition.wait(timeout)`` until the earliest deadline, then calls the
watch's ``interrupt`` with :class:`~flask_memqueue.TimeLimitExceeded` (for a
thread: an asynchronous exception, ``PyThreadState_SetAsyncExc``; another
execution strategy passes its own callback, e.g. one that cancels a
coroutine). If the job still runs ``MEMQUEUE_GRACE_PERIOD`` later, its thread
is **given up**: the outcome is recorded here, once, and a new thread takes
the consumer's place, so the queue keeps its declared concurrency. The
decision and the job's own return are serialised by the watchdog's lock
(:meth:`Watchdog.unwatch`), so a late return never overwrites what was
recorded.

**Aborts**: ``job.abort()`` records the request in the store
(:meth:`Storage.request_abort <flask_memqueue.storage.Storage.request_abort>`)
and, for a job running here, on the job at once. The watchdog of the
process that runs the job reads the requests of its running jobs every
:data:`ABORT_POLL` s (:meth:`Storage.abort_requests
<flask_memqueue.storage.Storage.abort_requests>`); ``current_job.abort_requested``
turns true, and a job still running ``MEMQUEUE_GRACE_PERIOD`` later gets
:class:`~flask_memqueue.JobAborted`. However it then ends, it ends ``aborted``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import JobAborted, TimeLimitExceeded
from ..hooks import Hook
from ..isolation import runs_isolated

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..consumer import Consumer
    from ..job import Job
    from .pools import ConsumerPools
    from .store import StoreHandle

logger = logging.getLogger("flask_memqueue")

#: Seconds between two reads of the abort requests of the jobs running here (a
#: store other processes share); also the longest the watchdog sleeps while idle.
ABORT_POLL = 0.5

#: How a job is interrupted: called with the exception class to raise in it.
Interrupt = Callable[[type[BaseException]], None]


def exception_for(base: type[TimeLimitExceeded], message: str, job_key: Any) -> type[TimeLimitExceeded]:
    """A subclass of ``base`` whose instances carry ``message`` and the job they were meant for.

    ``PyThreadState_SetAsyncExc`` takes a class and instantiates it without
    arguments; this class does so with the message. ``job_key`` lets the
    consumer tell a late delivery (meant for the job before) from its own.
    """

    def __init__(self: BaseException) -> None:
        base.__init__(self, message)

    return type(base.__name__, (base,), {
        "__init__": __init__, "__module__": base.__module__, "__qualname__": base.__qualname__,
        "job_key": job_key,
    })


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the thread ``ident`` at its next Python bytecode; False if it is gone."""
    import ctypes  # here, not at import: an app that sets no limit never loads it

    found = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))
    if found > 1:  # cannot happen for a real ident; undo, as the C API asks
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        return False
    return bool(found)


def clear_in_thread(ident: int) -> None:
    """Withdraw an asynchronous exception not yet delivered to the thread ``ident``."""
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


def seconds(value: float) -> str:
    """``30`` for 30.0, ``0.5`` for 0.5: how limits read in messages."""
    return f"{value:g}"


def limit_of(job: Job[Any], config: Config) -> float | None:
    """The job's time limit: its call's, else its task's, else ``MEMQUEUE_TIME_LIMIT``."""
    limit = job.options.time_limit
    if limit is None:
        limit = getattr(job.task, "time_limit", None)
    if limit is None:
        limit = config.time_limit
    return limit


class Watch:
    """One running job with a deadline, as the hook registered it."""

    __slots__ = ("job", "consumer", "ident", "limit", "deadline", "interrupt", "fired", "abandoned")

    def __init__(self, job: Job[Any], consumer: Consumer | None, ident: int, limit: float,
                 interrupt: Interrupt | None) -> None:
        self.job = job
        #: The pool's place that runs it (None: ``mq.run_once()`` in a caller's thread).
        self.consumer = consumer
        self.ident = ident
        self.limit = limit
        self.deadline = time.monotonic() + limit
        #: None: raise in the thread ``ident`` (and withdraw it if the job returned first).
        self.interrupt = interrupt
        #: True once the exception was raised in the job.
        self.fired = False
        #: True once the thread was given up (the outcome is recorded by the watchdog).
        self.abandoned = False


class _Abort:
    """An abort asked of a job running here: when the exception comes if it runs on."""

    __slots__ = ("job", "consumer", "force_at")

    def __init__(self, job: Job[Any], consumer: Consumer, force_at: float) -> None:
        self.job = job
        self.consumer = consumer
        self.force_at = force_at


class Watchdog:
    """The time limits and aborts of one app's jobs in this process (one thread, started on need)."""

    def __init__(self, app: Flask, config: Config, store: StoreHandle, pools: ConsumerPools) -> None:
        self.app = app
        self.config = config
        self.store = store
        self.pools = pools
        self.cond = threading.Condition()
        self._watches: dict[int, Watch] = {}
        self._aborts: dict[int, _Abort] = {}  # by id() of the job object
        self.thread: threading.Thread | None = None
        self._stopping = False
        self._next_poll = 0.0
        #: Threads given up so far (``/stats``).
        self.abandoned = 0

    # -- what the hook and the job desk call ------------------------------------------------
    def watch(self, job: Job[Any], limit: float, interrupt: Interrupt | None = None) -> Watch:
        """Watch ``job`` (running in the calling thread) until :meth:`unwatch`."""
        watch = Watch(job, self.pools.of_this_thread(), threading.get_ident(), limit, interrupt)
        with self.cond:
            self._watches[id(watch)] = watch
            self.cond.notify()
        self.ensure()
        return watch

    def unwatch(self, watch: Watch) -> bool:
        """The job returned or raised: stop watching it. True if its thread was given up
        already (the watchdog recorded the outcome; the caller must write nothing)."""
        with self.cond:
            self._watches.pop(id(watch), None)
            if watch.fired and not watch.abandoned and watch.interrupt is None:
                clear_in_thread(watch.ident)  # fired as the job returned: not for whatever runs next
            return watch.abandoned

    def abort_here(self, job: Job[Any], reason: str) -> bool:
        """If ``job`` (this id) runs in this process: ask it to stop now. True if it does."""
        for consumer in self.pools.all():
            current = consumer.current
            if current is not None and consumer.alive and current.id == job.id:
                self._note_abort(consumer, current, reason)
                return True
        return False

    # -- the thread -----------------------------------------------------------------------
    def ensure(self) -> None:
        """Start the thread if it does not run (it ends by itself once nothing runs here)."""
        if self.thread is not None and self.thread.is_alive():
            return
        with self.cond:
            if self._stopping or (self.thread is not None and self.thread.is_alive()):
                return
            thread = threading.Thread(target=self._run, name=f"memqueue-watchdog[{self.app.name}]", daemon=True)
            thread.start()
            self.thread = thread

    def started(self) -> None:
        """The consumers started: with a store that records aborts for other processes, watch
        for those of the jobs that will run here."""
        storage = self.store.storage
        if storage.capabilities.shared and storage.capabilities.abort_flags:
            self.ensure()

    def stop(self, timeout: float | None = 1.0) -> None:
        """End the thread (shutdown)."""
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                self._poll_aborts()
                with self.cond:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    give_up, wait = self._check(now)
                    if not give_up and not self._watches and not self._aborts and not self._busy():
                        if not any(c.alive for c in self.pools.all()):
                            self.thread = None
                            return  # nothing runs here: the next watch, abort or start brings it back
                    if not give_up:
                        self.cond.wait(wait)
                for watch in give_up:
                    self._give_up(watch)
        except BaseException:  # never silent: the next watch or abort starts a new one
            logger.critical("the watchdog of %r stopped", self.app.name, exc_info=True)
            with self.cond:
                self.thread = None

    def _busy(self) -> bool:
        return any(c.current is not None for c in self.pools.all())

    def _check(self, now: float) -> tuple[list[Watch], float]:
        """Fire what is due (lock held); the watches to give up, and how long to sleep."""
        grace = self.config.grace_period
        wait = ABORT_POLL
        give_up: list[Watch] = []
        for watch in list(self._watches.values()):
            if not watch.fired:
                if now >= watch.deadline:
                    self._fire(watch, now)
                else:
                    wait = min(wait, watch.deadline - now)
                    continue
            if now >= watch.deadline + grace:
                if watch.consumer is not None and self.pools.owns(watch.consumer):
                    watch.abandoned = True
                    watch.consumer.abandon()
                    del self._watches[id(watch)]
                    give_up.append(watch)
                    continue
                watch.deadline = now  # not a pool's thread: it keeps it; say so every grace period
                logger.warning("job %s (%s) still runs past its time limit of %s s (not in a consumer thread of"
                               " the pool, so no thread is given up)", watch.job.id, watch.job.name,
                               seconds(watch.limit))
            else:
                wait = min(wait, watch.deadline + grace - now)
        for key, abort in list(self._aborts.items()):
            consumer, job = abort.consumer, abort.job
            if consumer.current is not job or job.finished:
                del self._aborts[key]
            elif now >= abort.force_at:
                del self._aborts[key]
                exc = exception_for(JobAborted, f"aborted: {job._outcome().abort}", job.key)
                if consumer.ident is not None and consumer.current is job:
                    raise_in_thread(consumer.ident, exc)
                    if consumer.current is not job:  # it ended meanwhile: not for the next one
                        clear_in_thread(consumer.ident)
            else:
                wait = min(wait, abort.force_at - now)
        return give_up, max(wait, 0.0)

    def _fire(self, watch: Watch, now: float) -> None:
        watch.fired = True
        exc = exception_for(TimeLimitExceeded, f"time limit of {seconds(watch.limit)} s exceeded", watch.job.key)
        logger.warning("job %s (%s) exceeded its time limit of %s s; interrupting it", watch.job.id,
                       watch.job.name, seconds(watch.limit))
        try:
            if watch.interrupt is not None:
                watch.interrupt(exc)
            else:
                raise_in_thread(watch.ident, exc)
        except Exception:
            logger.exception("interrupting job %s failed", watch.job.id)

    def _give_up(self, watch: Watch) -> None:
        """Record the job of a thread given up (once: the watch is gone), and replace the thread."""
        consumer = watch.consumer
        assert consumer is not None
        job = watch.job
        grace = self.config.grace_period
        frame = sys._current_frames().get(watch.ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        self.abandoned += 1
        replacement = self.pools.replace(consumer)
        logger.error(
            "job %s (%s) still ran %s s after its time limit of %s s: its thread %r is given up (it ends when"
            " the job returns; whatever it returns is ignored)%s. Where it was:\n%s",
            job.id, job.name, seconds(grace), seconds(watch.limit),
            consumer.thread.name if consumer.thread is not None else watch.ident,
            "" if replacement is None else ", and a new thread takes its place", stack,
        )
        message = (f"time limit of {seconds(watch.limit)} s exceeded (the job still ran {seconds(grace)} s"
                   " later; its thread was given up)")
        consumer.settle_given_up(job, TimeLimitExceeded(message), stack)

    # -- aborts -----------------------------------------------------------------------------
    def _note_abort(self, consumer: Consumer, job: Job[Any], reason: str) -> None:
        out = job._outcome()
        if out.abort is None:
            out.abort = reason
            logger.warning("job %s (%s): %s; asking it to stop", job.id, job.name, reason)
        if runs_isolated(job):  # its child is killed after the grace period (runtime/children.py)
            consumer.interrupted = True
            return
        if job.task.strategy is not None:
            return  # a coroutine shares its thread with others: it is asked (abort_requested), never forced
        consumer.interrupted = True
        with self.cond:
            if id(job) not in self._aborts:
                self._aborts[id(job)] = _Abort(job, consumer, time.monotonic() + self.config.grace_period)
                self.cond.notify()
        self.ensure()

    def _poll_aborts(self) -> None:
        """Every ABORT_POLL s while jobs run here: read their abort requests from the store."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + ABORT_POLL
        storage = self.store.storage
        if not storage.capabilities.shared or not storage.capabilities.abort_flags:
            return  # a store only this process uses: requests reach the job directly
        running = {}
        for consumer in self.pools.all():
            job = consumer.current
            if job is not None and consumer.alive and not job.abort_requested:
                running[job.id] = (consumer, job)
        if not running:
            return
        try:
            asked = storage.abort_requests(running)
        except Exception as exc:  # an outage: the consumers report it; try again next time
            logger.debug("reading the abort requests of %r failed: %s", self.app.name, exc)
            return
        for job_id, reason in asked.items():
            consumer, job = running[job_id]
            if consumer.current is job:
                self._note_abort(consumer, job, reason)


class TimeLimits(Hook):
    """The hook that gives a job with a time limit its deadline (see the module's text)."""

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        queue = app.extensions.get("memqueue")
        if queue is None:
            return call()
        if runs_isolated(job):  # a child process: killed at the limit (runtime/children.py)
            return call()
        if job.task.strategy is not None:  # a coroutine: its strategy cancels it at the limit (aio.limited)
            return call()
        limit = limit_of(job, queue.config)
        if limit is None:
            return call()
        watchdog: Watchdog = queue.limits
        watch = watchdog.watch(job, limit)
        try:
            return call()
        finally:
            watchdog.unwatch(watch)


__all__ = ["ABORT_POLL", "TimeLimits", "Watch", "Watchdog", "clear_in_thread", "exception_for", "limit_of",
           "raise_in_thread"]
