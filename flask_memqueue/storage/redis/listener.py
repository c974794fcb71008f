"""``Job.wait()`` and ``join()`` in any process, woken by pub/sub.

The ids of finished jobs are published on ``P:done`` by the script that
finished them (one message per script: a claim that records sixteen outcomes
publishes once). While anything in this process waits on a job another
process may run, or a ``join()`` runs, a background thread listens there: it
refreshes the waiters of each id it hears (and all of them after it
(re)subscribed: a finish may have been published while it was not
listening), and wakes every ``join()``, which counts again. The waiters' own
slow poll remains as the safety net of a lost notification.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ...exceptions import MemQueueError
from ...job import Job
from ..waiters import PollingEvent
from .client import Client

logger = logging.getLogger("flask_memqueue")


class Listener:
    """One store's pub/sub thread and the waiters it serves.

    :param refresh: reads a job's record; True (after copying the outcome onto
        the job) once it is finished.
    :param poll: the waiters' own poll interval, for the log of an outage.
    """

    def __init__(self, client: Client, channel: str, refresh: Callable[[Job], bool], poll: float, name: str) -> None:
        self._client = client
        #: Bumped by every message heard (and every (re)subscription): ``join()`` counts again.
        self.generation = 0
        self._heard = threading.Condition(threading.Lock())
        self._followers = 0
        self._channel = channel
        self._refresh = refresh
        self._poll = poll
        self._name = name
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._watched: dict[str, list[PollingEvent]] = {}
        self._thread: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._closing = threading.Event()
        self._pubsub: Any = None

    def watch(self, event: PollingEvent) -> bool:
        """Wake ``event`` when its job's id is published; True once the thread is subscribed
        (a finish published before that is the caller's to look for)."""
        with self._lock:
            self._watched.setdefault(event.job.id, []).append(event)
        return self._start()

    def _start(self) -> bool:
        if self._closing.is_set() or self._pid != os.getpid():
            return False
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._listen, name=self._name, daemon=True)
                    self._thread.start()
        return self._subscribed.wait(1.0)

    def follow(self) -> bool:
        """A ``join()`` starts: listen (if not yet). True once subscribed (then
        :meth:`wait_after` is woken by every finish; else the caller polls)."""
        with self._heard:
            self._followers += 1
        return self._start()

    def unfollow(self) -> None:
        with self._heard:
            self._followers -= 1

    def wait_after(self, generation: int, timeout: float) -> None:
        """Sleep up to ``timeout`` s unless a message was heard since :attr:`generation` was
        ``generation`` (or until one is)."""
        with self._heard:
            if self.generation == generation:
                self._heard.wait(timeout)

    def _bump(self) -> None:
        with self._heard:
            self.generation += 1
            self._heard.notify_all()

    def close(self) -> None:
        self._closing.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    # -- the thread -------------------------------------------------------------------------
    def _listen(self) -> None:
        """Wake this process's waiters when any process finishes their job."""
        failing: str | None = None
        failures = 0
        while not self._closing.is_set():
            try:
                if self._pubsub is None:
                    self._subscribe()
                    if failing is not None:
                        logger.warning("job waiters hear from %s again (%s)", self._client.url, failing)
                        failing, failures = None, 0
                    self._bump()
                    self._refresh_watched(None)  # finishes published while not listening
                self._receive()
            except Exception as exc:
                if self._drop() or self._closing.is_set():
                    return
                failures += 1
                if failing is None:
                    failing = f"{type(exc).__name__}: {exc}"
                    shown = exc if isinstance(exc, MemQueueError) else self._client.error(exc, "listening")
                    logger.error("job waiters cannot listen to %s: %s; they poll every %g s until it works",
                                 self._client.url, shown, self._poll)
                self._closing.wait(min(5.0, 0.1 * 2 ** min(failures, 6)))

    def _subscribe(self) -> None:
        r: Any = self._client.r  # (Any: pubsub() has annotations from redis-py 8.2 on, not before)
        pubsub = r.pubsub()
        self._pubsub = pubsub
        pubsub.subscribe(self._channel)
        while not self._closing.is_set():  # the confirmation
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                break
        self._subscribed.set()

    def _receive(self) -> None:
        message = self._pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "message":
            self._bump()
            for job_id in message["data"].split():
                self._refresh_watched(job_id)
        elif message is None:
            self._forget_set_events()

    def _drop(self) -> bool:
        """After a failure: drop the subscription (a new one is made). True if closing."""
        self._subscribed.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass
        return self._closing.is_set()

    def _refresh_watched(self, job_id: str | None) -> None:
        with self._lock:
            if job_id is None:
                events = [e for es in self._watched.values() for e in es]
            else:
                events = list(self._watched.get(job_id, ()))
        for event in events:
            if not event.is_set() and self._refresh(event.job):
                event.set()
        self._forget_set_events()

    def _forget_set_events(self) -> None:
        with self._lock:
            for jid in [j for j, es in self._watched.items() if all(e.is_set() for e in es)]:
                del self._watched[jid]


__all__ = ["Listener"]
