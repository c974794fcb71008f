"""Leases, and the progress of running jobs.

An owner (a process) is alive while its key ``P:l:<owner>`` exists. Every
claim sets it for ``lease`` seconds, and the heartbeat thread renews it every
``lease / 3`` while the process lives, however long its jobs run: a live
worker's jobs are never taken over. A lapsed lease makes the owner's running
jobs anyone's to take over (its late outcome is then discarded and logged).

The same thread writes the progress of the jobs this process runs
(``current_job.set_progress``) within :data:`PROGRESS_INTERVAL` of the change,
so another process reads it at once, tells Redis which jobs claimed ahead
have started (a job claimed ahead that never started is given back, not
counted, if its owner dies), and writes the outcomes consumers still hold
(``consumers.py``) once they are :data:`~.consumers.FLUSH_AFTER` old. It
starts with the first job this process claims, and a newly claimed job wakes
it: until then it may be asleep until its next renewal (a third of the lease,
ten seconds by default).

Each renewal also reads which jobs Redis holds as running for this owner: one
that this process does not know of (no consumer runs it, holds it claimed
ahead, or has its outcome to write) at two renewals in a row is an orphan, a
claim whose outcome Redis lost (a failover to a replica that had not received
it) or whose reply never came back: it is taken over as a dead owner's job is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...exceptions import MemQueueError
from ...job import Job
from .client import Client
from .records import tag

logger = logging.getLogger("flask_memqueue")

#: Seconds between two writes of a running job's progress (``current_job.set_progress``).
PROGRESS_INTERVAL = 0.1


class Heartbeat:
    """One store's heartbeat thread and the jobs it runs here.

    :param client: the store's client (scripts ``renew`` and ``progress``).
    :param owner: this process as an owner.
    :param lease: seconds the lease lasts without renewal.
    :param name: the thread's name.
    :param chores: called on every turn (the consumers write the outcomes they held back).
    :param orphans: called with the ids Redis holds as running for this owner at a renewal
        (the store takes over the ones it does not know of).
    """

    def __init__(self, client: Client, owner: str, lease: float, name: str,
                 chores: Callable[[], None] | None = None, orphans: Callable[[list[str]], None] | None = None) -> None:
        self._client = client
        self._chores = chores
        self._orphans = orphans
        self._owner = owner
        self._lease = lease
        self._lease_ms = str(int(lease * 1000))
        self._name = name
        self._lock = threading.Lock()
        # Running jobs claimed here, and the progress last written for each.
        self._running: dict[str, Job] = {}
        self._written: dict[str, tuple[float | None, str | None]] = {}
        # Jobs claimed ahead that started here, not yet said to Redis.
        self._started: list[str] = []
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the jobs it runs -------------------------------------------------------------------
    def track(self, job: Job, *, started: bool = False) -> None:
        """``job`` was claimed here and runs: from now on its progress reaches Redis within
        :data:`PROGRESS_INTERVAL`. Starts the thread (the lease must be renewed while a
        job runs), and wakes it if nothing ran here: it may be asleep until its next
        renewal then. While jobs run it looks every PROGRESS_INTERVAL anyway, so a busy
        consumer does not wake it once per job. ``started``: the job may have been claimed
        ahead (in a batch, or handed over); Redis is told it started with the next turn
        (if it still runs then: an outcome written says more)."""
        with self._lock:
            idle = not self._running
            self._running[job.id] = job  # before the wake-up: the thread sees it
            if started:
                self._started.append(job.id)
            start = self._thread is None and not self._closing.is_set()
            if start:
                self._thread = threading.Thread(target=self._beat, name=self._name, daemon=True)
        if start:
            self._thread.start()  # type: ignore[union-attr]
        elif idle:
            self._wake.set()

    def untrack(self, job_ids: Iterable[str]) -> None:
        """These jobs' outcomes were written: no more progress to write for them."""
        with self._lock:
            for jid in job_ids:
                self._running.pop(jid, None)
                self._written.pop(jid, None)

    def running(self) -> set[str]:
        """The ids of the jobs running here now."""
        with self._lock:
            return set(self._running)

    def runs(self, job_id: str) -> bool:
        return job_id in self._running

    def progress(self, job_id: str) -> tuple[float | None, str | None] | None:
        """The progress of a job running here (the object's, newer than any record), or None."""
        job = self._running.get(job_id)
        return None if job is None else (job.progress, job.progress_message)

    def stop(self) -> None:
        self._closing.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    # -- the thread -------------------------------------------------------------------------
    def _beat(self) -> None:
        """Renew the lease every lease/3 and write progress while jobs run. An outage is
        logged once, and its end once."""
        next_renew = 0.0
        failing: str | None = None
        while not self._closing.is_set():
            try:
                next_renew = self._renew_if_due(next_renew)
                self._write_progress()
                if self._chores is not None:
                    self._chores()
                if failing is not None:
                    logger.warning("the heartbeat reaches %s again (%s)", self._client.url, failing)
                    failing = None
            except MemQueueError as exc:
                if failing is None:
                    failing = str(exc)
                    logger.error("the heartbeat cannot renew this process's lease: %s; it keeps trying", exc)
                next_renew = time.monotonic() + min(1.0, self._lease / 3)
            except Exception:  # pragma: no cover - a bug: the heartbeat must not die of it
                logger.exception("the heartbeat of %s failed", self._client.url)
            wait = max(0.0, next_renew - time.monotonic())
            if self._running:
                wait = min(wait, PROGRESS_INTERVAL)
            if self._wake.wait(wait):
                self._wake.clear()  # a track() after this is seen by the next turn: its job is in _running
                # Woken by a job that starts: its progress is due within PROGRESS_INTERVAL, not at
                # once. Waiting that long first costs no promise, leaves the job's first moments to
                # it alone, and a job that ends by then needs no write at all (its outcome says more).
                self._closing.wait(PROGRESS_INTERVAL)

    def _renew_if_due(self, next_renew: float) -> float:
        now = time.monotonic()
        if now < next_renew:
            return next_renew
        had, ids = self._client.run("renew", [self._owner, self._lease_ms], "renewing the lease")
        if self._orphans is not None:
            self._orphans(ids)
        if not had and self._running:
            logger.warning(
                "the lease of %s on %s had lapsed (no renewal reached Redis for %g s): its running jobs"
                " may have been taken over by another worker; their outcome here is discarded if so",
                self._owner, self._client.url, self._lease,
            )
        return now + self._lease / 3

    def _write_progress(self) -> None:
        with self._lock:
            changed = []
            for jid, job in self._running.items():
                now = (job.progress, job.progress_message)
                if now[0] is not None and self._written.get(jid) != now:
                    changed.append((jid, now))
            started = [jid for jid in self._started if jid in self._running]
            self._started = []
        if not changed and not started:
            return
        args: list[Any] = [self._owner, len(started), *started]
        for jid, (progress, message) in changed:
            args += [jid, repr(progress), tag(message)]
        try:
            self._client.run("progress", args, "writing progress")
        except BaseException:
            with self._lock:
                self._started[:0] = started
            raise
        with self._lock:
            for jid, now in changed:
                if jid in self._running:
                    self._written[jid] = now


__all__ = ["PROGRESS_INTERVAL", "Heartbeat"]
