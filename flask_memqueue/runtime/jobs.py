"""What a job asks of its queue, and what callers do with jobs once they are queued.

Every :class:`~flask_memqueue.Job` of this process is bound to the app's
:class:`Jobs` (its :class:`~flask_memqueue.job.JobHost`): ``job.id`` reads
its token, ``job.wait()`` its waiter, ``job.cancel()`` its cancel. The
routes, the dashboard and the extension look jobs up, retry and join here.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from ..display import isotime
from ..exceptions import QueueClosed
from ..job import wait_timeout
from ..signals import job_cancelled

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..job import Job
    from .limits import Watchdog
    from .pools import ConsumerPools
    from .store import StoreHandle
    from .supervisor import Supervisor


class Jobs:
    """The job-level verbs of one app's queue in this process; the host of its jobs."""

    def __init__(self, app: Flask, config: Config, store: StoreHandle, pools: ConsumerPools,
                 supervisor: Supervisor, limits: Watchdog) -> None:
        self.app = app
        self.config = config
        self.store = store
        self.pools = pools
        self.supervisor = supervisor
        self.limits = limits
        #: Prefix of this process's job ids (``job.id`` is ``"<token>-<number>"``).
        self.token = store.token

    # -- what a job asks (JobHost) ----------------------------------------------------------
    def job_waiter(self, job: Job) -> threading.Event | None:
        """The event ``job.wait()`` waits on (starting the consumers if they should run)."""
        self.pools.refuse_self_wait("Job.wait()", job.queue)
        supervisor = self.supervisor
        if self.config.consumer and not supervisor.alive and not supervisor.closed:
            supervisor.ensure()
        return self.store.storage.waiter(job)

    def cancel(self, job: Job) -> bool:
        """Cancel ``job`` if it still waits; True if it was."""
        done = self.store.storage.cancel(job)
        if done and job_cancelled.receivers:
            job_cancelled.send(self.app, job=job)
        return done

    def job_dependents(self, job: Job) -> list[str]:
        """The ids of the jobs that wait on ``job`` (its store knows them)."""
        return self.store.storage.dependents(job.id)

    def abort(self, job: Job, by: str | None = None) -> bool:
        """Stop ``job``: cancel it if it waits, else ask it to stop wherever it runs.

        True if it was cancelled or asked to stop; False if it had finished (or is not
        known to the store). ``by`` says who asks (default: this process, by host and pid).
        """
        if self.cancel(job):
            return True
        who = by if by else f"pid {os.getpid()} on {socket.gethostname()}"
        reason = f"aborted by {who} at {isotime(time.time())}"
        storage = self.store.storage
        asked = storage.request_abort(job.id, reason)
        if self.limits.abort_here(job, reason):  # runs here: at once
            return True
        if not asked:
            self._refresh(job)
        return asked

    def _refresh(self, job: Job) -> None:
        """``job`` is not waiting nor running any more: show the caller how it ended."""
        fresh = self.store.storage.get(job.id)
        if fresh is not None and fresh is not job and fresh.finished and not job.finished:
            job.restore(fresh.status, fresh.attempts, eta=fresh.eta, started_at=fresh.started_at,
                        finished_at=fresh.finished_at, result=fresh.result, error=fresh.error,
                        traceback=fresh.traceback)

    # -- what callers do --------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job with that id, if the store still holds it."""
        if not isinstance(job_id, str):  # the same answer from every store
            raise TypeError(f"a job id is a string, like the one Job.id gives, not {type(job_id).__name__}")
        return self.store.storage.get(job_id)

    def requeue(self, job: Job) -> bool:
        """Queue a failed or cancelled job again (the dashboard's retry); False for any other."""
        supervisor = self.supervisor
        if supervisor.closed:
            raise QueueClosed(f"the queue of app {self.app.name!r} was shut down; it takes no more jobs")
        done = self.store.storage.requeue(job)
        if done and not supervisor.alive:
            supervisor.ensure()
        return done

    def join(self, timeout: float | None = None, queue: str | None = None) -> bool:
        """Wait until no job waits or runs (in ``queue``, or in every queue); False on timeout.

        Also False at once when jobs wait in a queue that nobody here can run
        (its threads cannot be started, or it has none here) and no other
        process shares the store.
        """
        self.pools.refuse_self_wait("join()", queue)
        storage = self.store.storage
        if not self.supervisor.alive and storage.depth(queue):
            self.supervisor.ensure()
        if not storage.capabilities.shared:
            for name, row in storage.queue_counts().items():
                if (queue is None or name == queue) and (row["queued"] or row["scheduled"]) \
                        and not self.pools.runs(name):
                    return False  # nobody here runs them, and nobody else can
        return storage.join(wait_timeout(timeout), queue=queue)
