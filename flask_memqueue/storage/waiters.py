"""``Job.wait()`` and ``join()`` on a store that processes share.

A job this process finishes wakes its waiters at once, whichever object each
waits on (the outcome is copied onto it first); a job another process runs is
polled for (its record read) every ``poll`` seconds, or woken sooner by a
backend that hears of finished jobs (Redis pub/sub calls :meth:`PollingEvent.set`).
``join()`` sleeps on one condition that every settled job notifies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..job import Job
from .records import copy_outcome


class PollingEvent(threading.Event):
    """The waiter of one ``Job.wait()`` call on a job another process may run.

    Set at once when this process finishes the job (its outcome is copied onto
    the waiting object first); otherwise every ``poll()`` seconds it calls
    ``refresh(job)`` (which reads the record and, once the job is finished,
    copies the outcome onto ``job`` and returns True) and is set then.
    """

    def __init__(self, job: Job, refresh: Callable[[Job], bool], poll: Callable[[], float]) -> None:
        super().__init__()
        self.job = job
        self._refresh = refresh
        self._poll = poll

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = self._poll()
            left = poll if deadline is None else min(poll, deadline - time.monotonic())
            if super().wait(max(0.0, left)):
                return True
            if self._refresh(self.job):
                self.set()
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


class Waiters:
    """The waiters of one store in this process, by job id, and the condition ``join()`` sleeps on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, list[PollingEvent]] = {}
        #: Notified whenever a job settles here (``join()`` sleeps on it).
        self.settled = threading.Condition(threading.Lock())

    def add(self, event: PollingEvent) -> None:
        with self._lock:
            self._events.setdefault(event.job.id, []).append(event)

    def waiting_for(self, job_id: str) -> bool:
        """Whether something here waits for ``job_id`` (no lock: a waiter added meanwhile polls)."""
        return job_id in self._events

    def finished(self, job: Job) -> None:
        """``job`` finished here: give its outcome to every object waited on, and wake them."""
        events: list[PollingEvent] | tuple[()] = ()
        if job.id in self._events:  # nearly always not: no lock then (a waiter added meanwhile polls)
            with self._lock:
                events = self._events.pop(job.id, ())
        for event in events:
            if event.job is not job:
                copy_outcome(job, event.job)
            event.set()
        self.notify()

    def notify(self) -> None:
        """Something settled: every ``join()`` looks again now."""
        with self.settled:
            self.settled.notify_all()

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, or until :meth:`notify`."""
        with self.settled:
            self.settled.wait(seconds)


__all__ = ["PollingEvent", "Waiters"]
