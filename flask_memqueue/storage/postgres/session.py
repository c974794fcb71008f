"""The process's session with the database: its lease, its session lock, finished jobs heard, progress.

One thread per store and process:

- **The lease.** Before its first claim a worker writes a row in
  ``memqueue_owners`` with a lease (server clock), renewed every ``lease / 3``
  while the process lives, however long its jobs run. A lapsed lease makes its
  running jobs anyone's to take over (its late outcome is then discarded, the
  first one recorded stands).
- **The session lock.** The thread's connection holds a session advisory lock,
  noted with the lease; when the server closes that session (the process
  died, its host vanished) the lock is gone from ``pg_locks`` and the jobs are
  taken over within a second, not a lease.
- **Finished jobs.** The same connection ``LISTEN``\\ s on the store's channel
  of finished jobs that somebody waits for, which wakes ``Job.wait()`` and
  ``join()`` here; after it (re)connects, everything is looked at again (a
  notification may have been sent while nobody listened).
- **Progress.** The progress of the jobs this process runs
  (``current_job.set_progress``) is written every :data:`PROGRESS_INTERVAL` s
  while it changes. The thread may be asleep until its next renewal (lease/3)
  or notification when nothing runs here: a claim that finds it so wakes it
  (a byte on a local socket pair it waits on beside its connection; an event
  with ``notify=false``), so a new job's progress is not late.

With ``notify=false`` there is no listening connection: the lease is renewed
through the pool, and waiters poll. An outage is logged once, and its end.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...exceptions import MemQueueError
from ...job import Job
from .connection import Connections
from .records import Progress
from .schema import ident
from .statements import WAKE, Statements

logger = logging.getLogger("flask_memqueue")

#: Seconds between two writes of a running job's progress.
PROGRESS_INTERVAL = 0.1
#: The longest the listening thread waits at once (it looks at ``closing`` between waits).
LISTEN_SLICE = 1.0


class Session:
    """One store's session thread and the jobs it runs here.

    :param owner: this process as an owner; ``lock_key`` its session advisory lock.
    :param done_channel: the channel of finished jobs somebody waits for.
    :param on_new_jobs: a job was queued (``'q:'``) or a wake-up sent (``'w:'``) somewhere.
    :param on_finished: the job of that id finished somewhere, or (None) any may have.
    """

    def __init__(self, connections: Connections, sql: Statements, *, namespace: str, owner: str, lock_key: int,
                 lease: float, notify: bool, done_channel: str, closing: threading.Event,
                 on_new_jobs: Callable[[], None], on_finished: Callable[[str | None], None]) -> None:
        self._connections = connections
        self._sql = sql
        self._namespace = namespace
        self._owner = owner
        self._lock_key = lock_key
        self._lease = lease
        self._notify = notify
        self._done_channel = done_channel
        self._closing = closing
        self._on_new_jobs = on_new_jobs
        self._on_finished = on_finished
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: The lease was written (before this process's first claim).
        self.registered = False
        #: Set while the thread listens (its session lock held).
        self.listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: Any = None
        self._wake = threading.Event()
        # Wake the listening thread's select() (a notification wakes it through its connection);
        # made when the thread starts, closed when it stops.
        self._waker: socket.socket | None = None
        self._woken: socket.socket | None = None
        # Running jobs claimed here, and the progress last written for each.
        self._running: dict[str, Job] = {}
        self._written: dict[str, Progress] = {}

    # -- the jobs it runs -------------------------------------------------------------------
    def track(self, job: Job) -> None:
        """``job`` was claimed here and runs: its progress is written from now on. If
        nothing ran here, the thread may be asleep until its next renewal: wake it (only
        then, so a busy consumer does not wake it once per job)."""
        with self._lock:
            idle = not self._running
            self._running[job.id] = job  # before the wake-up: the thread sees it
        if idle:
            self._poke()

    def _poke(self) -> None:
        """End the thread's current wait (a byte stays in the socket until it is read: a
        wake-up sent before the thread waits ends its next wait)."""
        self._wake.set()
        waker = self._waker
        if waker is not None:
            try:
                waker.send(b"w")
            except OSError:  # full (a wake-up is pending anyway) or closed (the store closed)
                pass

    def untrack(self, job_ids: Iterable[str]) -> None:
        """These jobs' outcomes were written: no more progress to write for them."""
        with self._lock:
            for jid in job_ids:
                self._running.pop(jid, None)
                self._written.pop(jid, None)

    def runs(self, job_id: str) -> bool:
        return job_id in self._running

    def progress(self, job_id: str) -> Progress | None:
        """The progress of a job running here (the object's, newer than any record), or None."""
        job = self._running.get(job_id)
        return None if job is None else (job.progress, job.progress_message)

    # -- the lease ---------------------------------------------------------------------------
    def register(self) -> None:
        """Write this process's lease before its first claim (its jobs are never ownerless)."""
        with self._connections.conn("writing this worker's lease") as conn:
            self._renew(conn)
        self.registered = True
        self.start()

    def _renew(self, conn: Any, locked: bool = False) -> bool:
        """Renew the lease; True if it had not lapsed."""
        row = conn.execute(
            self._sql.renew,
            (self._namespace, self._owner, self._lease, self._lock_key if locked else None, locked, locked, locked,
             self._namespace, self._owner),
        ).fetchone()
        return bool(row[0]) if row is not None and row[0] is not None else True

    def forget_lease(self) -> None:
        """At close: this process owns nothing any more (unless jobs of it still run)."""
        if not (self.registered and self._connections.pool_open):
            return
        try:
            with self._connections.pooled("forgetting this worker's lease") as conn:
                conn.execute(self._sql.forget_lease, (self._namespace, self._owner))
        except Exception:  # noqa: S110 - closing anyway; the lease lapses by itself
            pass

    # -- the thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or self._closing.is_set() or self._pid != os.getpid():
            return
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name=f"memqueue-postgres[{self._namespace}]", daemon=True)
            self._thread = thread
            self._woken, self._waker = socket.socketpair()
            for end in (self._waker, self._woken):
                end.setblocking(False)
        thread.start()

    def wake(self) -> None:
        """End the thread's current wait."""
        self._poke()

    def stop(self, timeout: float) -> None:
        """End the thread (``closing`` is set): a word on its channel ends a wait in its
        connection; then its connection is closed."""
        self._poke()
        thread = self._thread
        if self._listener is not None and self._connections.pool_open:
            try:
                with self._connections.pooled("closing") as conn:
                    conn.execute(WAKE, (self._done_channel,))
            except Exception:  # noqa: S110 - it ends within a second anyway
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._drop_listener()
        waker, woken, self._waker = self._waker, self._woken, None
        for end in (waker, woken):
            if end is not None:
                end.close()  # a thread still waiting (it did not end in time) fails, sees closing, ends

    def _run(self) -> None:
        """Hold the session lock, LISTEN for finished jobs, renew the lease every lease/3 and
        write running jobs' progress. An outage is logged once, and its end."""
        next_renew = 0.0
        failing: str | None = None
        failures = 0
        while not self._closing.is_set():
            try:
                next_renew = self._beat(next_renew)
                if failing is not None:
                    logger.warning("%s is reachable again (%s)", self._connections.url, failing)
                    failing, failures = None, 0
                self._wait(next_renew)
            except Exception as exc:
                self._drop_listener()
                if self._closing.is_set():
                    return
                failures += 1
                if failing is None:
                    failing = str(exc if isinstance(exc, MemQueueError) else self._connections.error(exc, "listening"))
                    logger.error("the session thread of %s cannot reach it: %s; it keeps trying",
                                 self._connections.url, failing)
                self._closing.wait(min(2.0, 0.05 * 2 ** min(failures, 6)))

    def _beat(self, next_renew: float) -> float:
        """(Re)connect the listener, renew the lease if due, write progress; the next renewal."""
        if self._notify and self._listener is None:
            self._listen()
            next_renew = 0.0
        now = time.monotonic()
        if self.registered and now >= next_renew:
            if self._listener is not None:
                had = self._renew(self._listener, locked=True)
            else:
                with self._connections.conn("renewing the lease") as conn:
                    had = self._renew(conn)
            next_renew = now + self._lease / 3
            if not had and self._running:
                logger.warning(
                    "the lease of process %d on %s had lapsed (no renewal reached the server for %g s):"
                    " its running jobs may have been taken over by another worker; their outcome"
                    " here is discarded if so", self._pid, self._connections.url, self._lease,
                )
        self._write_progress()
        return next_renew

    def _wait(self, next_renew: float) -> None:
        """Until the next renewal (the next progress write while jobs run), a notification,
        or a second (with a listener: how soon a close is seen)."""
        wait = max(0.0, next_renew - time.monotonic()) if self.registered else 1.0
        if self._running:
            wait = min(wait, PROGRESS_INTERVAL)
        if self._listener is not None:
            self._listen_until(time.monotonic() + min(LISTEN_SLICE, max(0.01, wait)))
        else:
            self._wake.wait(wait)
            self._wake.clear()  # a track() after this is seen by the next turn: its job is in _running

    def _listen_until(self, deadline: float) -> None:
        """Hear notifications until ``deadline`` or a wake-up (:meth:`_poke`), whichever first."""
        conn, woken = self._listener, self._woken
        assert woken is not None  # made before the thread started
        while not self._closing.is_set():
            for note in conn.notifies(timeout=0.0):  # what arrived (or was read by another command)
                self._heard(note.payload)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([conn.fileno(), woken], [], [], left)
            if woken in ready:
                try:
                    while woken.recv(64):
                        pass
                except OSError:  # drained (BlockingIOError)
                    pass
                return
            if not ready:
                return

    def _listen(self) -> None:
        connections = self._connections
        pg = connections.pg
        if not connections.ready:
            connections.ensure_schema()
        try:
            conn = connections.connect()
        except pg.Error as exc:
            raise connections.error(exc, "listening for new jobs") from exc
        try:
            conn.execute(f"LISTEN {ident(self._done_channel)}")
            conn.execute("SELECT pg_advisory_lock(%s)", (self._lock_key,))
            if self.registered:
                self._renew(conn, locked=True)
        except BaseException:
            conn.close()
            raise
        self._listener = conn
        self.listening.set()
        # Whatever was sent while nobody here listened: consumers and waiters look again.
        self._on_new_jobs()
        self._on_finished(None)

    def _drop_listener(self) -> None:
        self.listening.clear()
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass

    def _heard(self, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "q":
            self._on_new_jobs()
        elif kind == "d":
            self._on_finished(value)

    def _write_progress(self) -> None:
        with self._lock:
            changed = []
            for jid, job in self._running.items():
                now = (job.progress, job.progress_message)
                if now[0] is not None and self._written.get(jid) != now:
                    changed.append((jid, now))
        if not changed:
            return
        with self._connections.conn("writing progress") as conn:
            conn.execute(self._sql.progress, ([c[0] for c in changed], [c[1][0] for c in changed],
                                              [c[1][1] for c in changed], self._namespace, self._owner))
        with self._lock:
            for jid, now in changed:
                if jid in self._running:
                    self._written[jid] = now


__all__ = ["PROGRESS_INTERVAL", "Session"]
