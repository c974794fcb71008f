"""``Job.wait()`` and ``join()`` on jobs another process finishes, woken by ``NOTIFY``.

Only the outcome of a job somebody waits for is notified: a waiter writes a row
in ``memqueue_waiters`` (the job's id, or ``"*"`` for ``join()``), and the
statement that finishes a job notifies the store's channel of finished jobs
only if such a row exists. A ``NOTIFY`` serialises the commits of every
notifying transaction (a lock held through the WAL flush), which a worker
should not pay per job for nobody. The session thread hears the notification
and refreshes the waiters of that job here; their own poll remains the safety
net of a lost one. Rows of waiters that vanished (killed) are swept within an hour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ...exceptions import MemQueueError
from ...job import Job
from ..waiters import PollingEvent
from .connection import Connections
from .statements import Statements


class Watchers:
    """The waiters of one store in this process on jobs others may finish.

    :param refresh: reads a job's record; True (after copying the outcome onto
        the job) once it is finished.
    """

    def __init__(self, connections: Connections, sql: Statements, *, namespace: str, owner: str,
                 refresh: Callable[[Job], bool]) -> None:
        self._connections = connections
        self._sql = sql
        self._namespace = namespace
        self._owner = owner
        self._refresh = refresh
        self._lock = threading.Lock()
        self._watched: dict[str, list[PollingEvent]] = {}

    def watch(self, event: PollingEvent) -> None:
        """Refresh ``event``'s job when it is heard to finish, and ask whoever finishes it to say so."""
        with self._lock:
            self._watched.setdefault(event.job.id, []).append(event)
        try:  # the worker that finishes it notifies only jobs somebody waits for
            self.want(event.job.id)
        except MemQueueError:
            pass  # the event's own poll covers it

    def heard(self, job_id: str | None) -> None:
        """The job ``job_id`` finished somewhere (None: any may have, while nobody listened):
        set the events of those that are finished, and forget the events that are set."""
        if job_id is not None and job_id not in self._watched:
            return
        with self._lock:
            if job_id is None:
                events = [e for es in self._watched.values() for e in es]
            else:
                events = list(self._watched.get(job_id, ()))
        for event in events:
            if not event.is_set() and self._refresh(event.job):
                event.set()
        with self._lock:
            done = [j for j, es in self._watched.items() if all(e.is_set() for e in es)]
            for jid in done:
                del self._watched[jid]
        if done:
            self.unwant(done)

    def want(self, job_id: str) -> None:
        """Ask whoever finishes ``job_id`` (``"*"``: every job) to notify."""
        with self._connections.conn("waiting for a job") as conn:
            conn.execute(self._sql.want, (self._namespace, job_id, self._owner, time.time()))

    def unwant(self, job_ids: list[str]) -> None:
        """Nobody here waits for these any more (and rows older than an hour go too). Best effort."""
        try:
            with self._connections.conn("waiting for a job") as conn:
                conn.execute(self._sql.unwant, (self._namespace, self._owner, job_ids, time.time() - 3600.0))
        except MemQueueError:
            pass  # left for the hourly sweep


__all__ = ["Watchers"]
