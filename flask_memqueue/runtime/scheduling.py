"""The scheduler's place: where one app's periodic-task thread runs in this process.

It starts the :class:`~flask_memqueue.periodic.Scheduler`'s guarded thread
when periodic tasks are registered (where the consumers start, never in the
reloader's watcher), hears when it ends, and stops it at shutdown. A tick's
job is queued through :attr:`SchedulerPlace.queue_tick`, which the producer
provides.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..periodic import Scheduler
from .guard import start_guarded

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..registry import Registry, Task
    from ..storage import Storage
    from .store import StoreHandle

logger = logging.getLogger("flask_memqueue")


def in_reloader_watcher() -> bool:
    """True in a process run by the ``flask`` command outside the reloader's serving child.

    That is the reloader's watcher (which only restarts children), and also
    ``flask shell``/``flask routes``: none of them should run a consumer
    they were not asked for. The serving child has ``WERKZEUG_RUN_MAIN``.
    """
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


class SchedulerPlace:
    """The scheduler thread of one app in this process (the scheduler's host)."""

    def __init__(self, app: Flask, config: Config, registry: Registry, store: StoreHandle,
                 lock: threading.Lock) -> None:
        self.app = app
        self.config = config
        self.registry = registry
        self.store = store
        #: The pools' lock: the thread's ident is recorded under it.
        self.lock = lock
        #: Queues a tick's job (the producer's ``enqueue_tick``); True if it claimed the tick.
        self.queue_tick: Callable[[Task[..., Any], float], bool] = lambda task, tick: False
        #: Told when the thread ends: ``on_exit(crashed)`` (the supervisor listens).
        self.on_exit: Callable[[bool], None] = lambda crashed: None
        #: The schedule of the periodic tasks in this process (its thread starts with the
        #: consumers); made by :meth:`open`, once the store is open (it asks the store
        #: whether processes share it).
        self.scheduler: Scheduler = None  # type: ignore[assignment]  # set by open(), before anyone reads it

    def open(self) -> None:
        """Make the scheduler, now that the store is open."""
        self.scheduler = Scheduler(self)

    @property
    def storage(self) -> Storage:
        return self.store.storage

    def wanted(self, closed: bool) -> bool:
        """True if a scheduler thread should run here: periodic tasks are registered,
        ``MEMQUEUE_PERIODIC`` is on, and the queue is neither eager nor shut down."""
        return bool(self.registry.periodic) and self.config.periodic and not self.config.eager and not closed

    def ensure(self, *, closed: bool, worker: bool, serving: bool = False) -> bool:
        """Start the scheduler thread if it should run and does not. Idempotent and thread-safe.

        Never in a process the ``flask`` command runs outside the reloader's
        serving child (the watcher, ``flask shell``) unless a request of its
        own server asks (``serving``) or it is a worker. Returns True if nothing
        more is to be done here (it runs, or it should not run), False if it
        should run and could not start.
        """
        scheduler = self.scheduler
        if scheduler.alive or not self.wanted(closed):
            return True
        if not serving and not worker and in_reloader_watcher():
            return False
        with self.lock:
            if scheduler.alive:
                return True
            error = start_guarded(scheduler, f"memqueue-scheduler[{self.app.name}]")
            if error is not None:
                scheduler.error = error
                logger.error("cannot start the scheduler thread of %r: %s", self.app.name, error)
                return False
        return True

    # -- the scheduler's host ----------------------------------------------------------------
    def enqueue_tick(self, task: Task[..., Any], tick: float) -> bool:
        return self.queue_tick(task, tick)

    def scheduler_exited(self, scheduler: Scheduler, ident: int, crashed: bool) -> None:
        """Called by the scheduler thread as its loop ends."""
        with self.lock:
            if scheduler.ident != ident:
                return
            scheduler.alive = False
            scheduler.ident = None
        self.on_exit(crashed)

    # -- shutdown ------------------------------------------------------------------------------
    def stop(self, wait: bool, timeout: float | None) -> None:
        """No new tick from now on; with ``wait``, let the thread end (up to ``timeout``);
        give the host lock up (another process of the app takes the schedule at its next tick)."""
        self.scheduler.stop()
        if wait:
            self.scheduler.join(timeout)
        self.scheduler.release()
