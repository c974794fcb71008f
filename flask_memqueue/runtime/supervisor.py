"""What should run in this process for one app, started lazily and started again when it died.

The consumer pools, the scheduler thread and the transport's own consumers
(RabbitMQ's) start together, on the first enqueue or request (never in
``init_app``: Flask also loads the app in the reloader's watcher and in every
CLI command). :attr:`Supervisor.alive` is the one flag every enqueue and
request reads: while it is True nothing needs starting; a thread that ends
clears it, and the next enqueue or request starts what is missing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..registry import Registry
    from .limits import Watchdog
    from .pools import ConsumerPools
    from .scheduling import SchedulerPlace
    from .store import StoreHandle
    from .transport import Transport

logger = logging.getLogger("flask_memqueue")


class Supervisor:
    """Starts the app's threads in this process, hears when one ends, and knows when the queue closed."""

    def __init__(self, app: Flask, config: Config, registry: Registry, store: StoreHandle, pools: ConsumerPools,
                 place: SchedulerPlace, transport: Transport) -> None:
        self.app = app
        self.config = config
        self.registry = registry
        self.store = store
        self.pools = pools
        self.place = place
        self.transport = transport
        #: True while every thread that should run here is alive: one attribute read
        #: on every enqueue and request (a dead thread is replaced by the next of them).
        #: Never True while :attr:`closed` or in eager mode: the enqueue's hot path reads
        #: this one flag for all three.
        self.alive = False
        #: Set by :meth:`close`; enqueue raises QueueClosed after it.
        self.closed = False
        #: The watchdog of time limits and aborts (set by the front), told when the consumers start.
        self.limits: Watchdog | None = None
        pools.on_exit = self._consumer_exited
        place.on_exit = self._scheduler_exited

    def ensure(self, *, draining: bool = False, serving: bool = False) -> bool:
        """Start every thread that should run and does not. Idempotent and thread-safe.

        Returns True if every queue's pool runs afterwards. None does in an
        enqueue-only process (``MEMQUEUE_CONSUMER = False``), in eager mode,
        after shutdown, or when a thread cannot be started (then
        ``pools.start_error`` says why and ``/health`` answers 503); a
        process whose queues all have 0 threads runs none either. The
        scheduler of periodic tasks starts here too; ``serving`` says a
        request of this process's server asks.
        """
        if self.alive:
            return True
        pools = self.pools
        # An enqueue-only process passes here on every enqueue: no call without periodic tasks.
        scheduled = (
            self.place.ensure(closed=self.closed, worker=pools.worker, serving=serving)
            if self.registry.periodic else True
        )
        config = self.config
        if (self.closed and not draining) or config.eager or not (config.consumer or pools.worker):
            return False
        if not self.closed:
            self.transport.start()
        with pools.lock:
            if self.alive:
                return True
            if not pools.start():
                if pools.start_error is not None:
                    logger.error("cannot start a consumer thread of %r: %s", self.app.name, pools.start_error)
                return False
            # The one flag read per request and enqueue also covers the scheduler:
            # while it should run and does not, the next request starts it. A draining
            # shutdown starts the consumers, closed: the flag stays down.
            self.alive = scheduled and not self.closed
        self._declare()
        if self.limits is not None:
            self.limits.started()
        return True

    def close(self) -> None:
        """Take no more jobs: :meth:`enqueue <flask_memqueue.runtime.producer.Producer.enqueue>`
        raises QueueClosed from now on (both flags: its hot path reads :attr:`alive` alone)."""
        self.closed = True
        self.alive = False

    def _declare(self) -> None:
        """With a store other processes share: tell it which queues this process consumes."""
        storage = self.store.storage
        if not storage.capabilities.shared:
            return
        try:
            storage.declare_queues(name for name, pool in self.pools.by_queue.items() if pool)
        except Exception as exc:  # the consumers back off on the store themselves; they redeclare
            logger.debug("declaring the queues of %r failed: %s", self.app.name, exc)

    def ensure_scheduler(self, *, serving: bool = False) -> bool:
        """Start the scheduler thread alone if it should run and does not (the worker's supervision)."""
        return self.place.ensure(closed=self.closed, worker=self.pools.worker, serving=serving)

    def _consumer_exited(self, crashed: bool) -> None:
        self.alive = False  # the next request or enqueue starts a new one
        if crashed and not self.closed:
            self.ensure()  # nothing queued waits for the next request

    def _scheduler_exited(self, crashed: bool) -> None:
        self.alive = False
