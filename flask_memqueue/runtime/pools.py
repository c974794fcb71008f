"""The consumer threads of one app in this process: a pool per named queue.

``MEMQUEUE_QUEUES`` (or a worker's ``--queues``/``--threads``) says how many
threads each queue gets here; each thread has a place (a
:class:`~flask_memqueue.consumer.Consumer`) whose loop is guarded by the
thread ident recorded under :attr:`ConsumerPools.lock`. The pools start the
places that are not running, hear when a loop ends (and tell whoever
supervises them), and answer which thread is whose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..consumer import Consumer
from ..options import DEFAULT_QUEUE
from .guard import start_guarded

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..hooks import Hooks
    from ..storage import Storage
    from .store import StoreHandle


class ConsumerPools:
    """The consumer threads of one app in this process (the consumers' host)."""

    def __init__(self, app: Flask, config: Config, store: StoreHandle, hooks: Hooks) -> None:
        #: The app whose context every job runs in.
        self.app = app
        #: The validated ``MEMQUEUE_*`` settings.
        self.config = config
        self.store = store
        #: The hooks around each job, shared by every app of the extension.
        self.hooks = hooks
        #: Guards starting and stopping the threads (the scheduler's too).
        self.lock = threading.Lock()
        #: Consumer threads this process runs per named queue (MEMQUEUE_QUEUES, or
        #: the worker's --queues/--threads); 0 declares a queue without consuming it.
        self.threads: dict[str, int] = dict(config.queues)
        #: A ``flask memqueue worker`` process: consumes whatever MEMQUEUE_CONSUMER says.
        self.worker = False
        #: Consumer threads started in this process (one per place, + restarts).
        self.starts = 0
        #: Why a thread could not be started, if one could not.
        self.start_error: str | None = None
        #: Told when a loop ends: ``on_exit(crashed)`` (the supervisor listens).
        self.on_exit: Callable[[bool], None] = lambda crashed: None
        #: True from :meth:`stop` to the next :meth:`start`: a given-up thread is not replaced.
        self.stopped = False
        self._make()

    def _make(self) -> None:
        """One Consumer per thread of every queue in :attr:`threads` (none alive yet)."""
        #: One Consumer per thread, per queue: the pools' places.
        self.by_queue: dict[str, list[Consumer]] = {
            name: [self._place(name, i) for i in range(n)] for name, n in self.threads.items()
        }
        pool = self.by_queue.get(DEFAULT_QUEUE)
        #: The default queue's first consumer: it runs eager jobs and
        #: ``mq.run_once()``, and ``/stats`` shows it as "the consumer".
        self.consumer: Consumer = pool[0] if pool else Consumer(self, DEFAULT_QUEUE, 0)
        #: The queues this process declares (an enqueue may always name them).
        self.declared: frozenset[str] = frozenset(self.threads) | frozenset(self.config.queues)

    def _place(self, name: str, index: int) -> Consumer:
        """The consumer of place ``index`` of queue ``name``: one that runs several async
        jobs at once on its event loop where ``async_concurrency`` says so."""
        concurrency = self.config.async_concurrency.get(name, 1)
        if concurrency > 1:
            from .aioconsumer import AsyncConsumer  # asyncio, loaded by the queues that run coroutines only

            return AsyncConsumer(self, name, index, concurrency)
        return Consumer(self, name, index)

    @property
    def storage(self) -> Storage:
        """The store the consumers take from."""
        return self.store.storage

    def become_worker(self, threads: dict[str, int]) -> None:
        """Run exactly these queues with these thread counts (``flask memqueue worker
        --queues/--threads``), even where ``MEMQUEUE_CONSUMER = False``; before any
        consumer thread started."""
        with self.lock:
            if any(c.alive for c in self.all()):
                raise RuntimeError("become_worker() must come before the consumer threads start")
            self.worker = True
            self.threads = dict(threads)
            self._make()

    def all(self) -> list[Consumer]:
        """Every place of every pool, queue by queue."""
        return [c for pool in self.by_queue.values() for c in pool]

    def runs(self, queue: str) -> bool:
        """True if a thread of this process runs ``queue`` now."""
        return any(c.alive for c in self.by_queue.get(queue, ()))

    # -- starting and ending ---------------------------------------------------------------
    def start(self) -> bool:
        """Start every place whose thread is not alive (:attr:`lock` held). False if one could
        not be started (:attr:`start_error` says why) or there is no place at all."""
        consumers = self.all()
        if not consumers:
            return False
        self.stopped = False
        for consumer in consumers:
            if consumer.alive:
                continue
            error = start_guarded(consumer, self._thread_name(consumer))
            if error is not None:
                self.start_error = error
                return False
            self.starts += 1
        self.start_error = None
        return True

    def _thread_name(self, consumer: Consumer) -> str:
        if consumer.queue_name == DEFAULT_QUEUE and len(self.by_queue.get(DEFAULT_QUEUE, ())) == 1:
            return f"memqueue-consumer[{self.app.name}]"
        return f"memqueue-consumer[{self.app.name}:{consumer.queue_name}#{consumer.index}]"

    def consumer_exited(self, consumer: Consumer, ident: int, crashed: bool) -> None:
        """Called by a consumer thread as its loop ends."""
        with self.lock:
            if consumer.ident != ident:
                return
            consumer.alive = False
            consumer.ident = None
        self.on_exit(crashed)

    def owns(self, consumer: Consumer) -> bool:
        """True if ``consumer`` is a place of one of the pools now (not a given-up one)."""
        pool = self.by_queue.get(consumer.queue_name, ())
        return consumer.index < len(pool) and pool[consumer.index] is consumer

    def replace(self, consumer: Consumer) -> Consumer | None:
        """Give up ``consumer``'s thread (a job in it outlived its time limit): a new place takes
        its index, with its counters, and its thread starts now, so the queue keeps its
        declared concurrency. The old thread is renamed ``memqueue-abandoned[...]`` and ends
        when its job returns. None if the place was not the pool's (or no thread could start)."""
        with self.lock:
            if not self.owns(consumer):
                return None
            fresh = Consumer(self, consumer.queue_name, consumer.index)
            fresh.attempts, fresh._retried, fresh.history = consumer.attempts, consumer._retried, consumer.history
            fresh._bucket_end, fresh._bucket_mark = consumer._bucket_end, consumer._bucket_mark
            fresh.starts = consumer.starts
            self.by_queue[consumer.queue_name][consumer.index] = fresh
            if self.consumer is consumer:
                self.consumer = fresh
            thread = consumer.thread
            if thread is not None:
                thread.name = thread.name.replace("memqueue-consumer[", "memqueue-abandoned[", 1)
            if self.stopped:
                return fresh  # shutting down: no new thread
            error = start_guarded(fresh, self._thread_name(fresh))
            if error is not None:
                self.start_error = error
                return None
            self.starts += 1
            return fresh

    def stop(self) -> list[Consumer]:
        """Make every loop end after the job in hand; returns the places."""
        self.stopped = True
        consumers = self.all()
        for consumer in consumers:
            consumer.stop()
        return consumers

    # -- which thread is whose -------------------------------------------------------------
    @property
    def idents(self) -> dict[str, list[int]]:
        """The idents of the legitimate consumer threads, per queue."""
        return {
            name: [c.ident for c in pool if c.alive and c.ident is not None] for name, pool in self.by_queue.items()
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
        return [c.thread for c in self.all() if c.alive and c.thread is not None and c.thread.is_alive()]

    def of_this_thread(self) -> Consumer | None:
        """The place the calling thread runs, if it is one of these consumers."""
        me = threading.get_ident()
        for consumer in self.all():
            if consumer.alive and consumer.ident == me:
                return consumer
        return None

    def refuse_self_wait(self, what: str, queue: str | None = None) -> None:
        """A job waiting for its own queue (``queue``; None: every queue) could wait for itself, forever."""
        consumer = self.of_this_thread()
        if consumer is not None and (queue is None or queue == consumer.queue_name):
            raise RuntimeError(
                f"{what} was called from inside a job of queue {consumer.queue_name!r} of app"
                f" {self.app.name!r}: its consumer threads run one job each, so it could wait for"
                " itself. Enqueue a follow-up job instead."
            )

    # -- one step, in the calling thread ---------------------------------------------------
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
