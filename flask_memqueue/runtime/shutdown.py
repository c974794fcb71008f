"""The end of one app's queue in this process: drain and stop, or stop before a signal kills it.

:func:`shutdown` goes through the rooms in order: no new tick (the
scheduler), run what is due (with ``wait``, for a store whose jobs do not
outlive the process), stop the consumers after the job in hand, stop the
transport (unacknowledged messages go back to the broker), wait for the
threads, and cancel what still waits in a memory store, saying so.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..job import wait_timeout
from ..signals import job_cancelled
from ..storage import SHARED_STORE_EXAMPLE

if TYPE_CHECKING:
    from ..consumer import Consumer
    from .rooms import Rooms

logger = logging.getLogger("flask_memqueue")


class _Deadline:
    """What is left of a timeout (None: no limit)."""

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())


def shutdown(rooms: Rooms, wait: bool = True, timeout: float | None = None) -> bool:
    """Stop taking jobs; with ``wait``, run what waits; stop the threads.

    Returns True if nothing was left unrun. With a store whose jobs do not
    outlive the process (memory), jobs still waiting at the end are marked
    cancelled and logged; with a persistent one they stay in the store for
    the next start.
    """
    if wait:
        rooms.pools.refuse_self_wait("shutdown(wait=True)")
    rooms.supervisor.close()
    deadline = _Deadline(wait_timeout(timeout))
    rooms.scheduling.stop(wait, deadline.left())
    storage = rooms.store.storage
    persistent = storage.capabilities.persistent
    drained = True
    if wait and not persistent:  # a persistent store keeps waiting jobs: no drain
        drained = _drain(rooms, deadline)
    consumers = rooms.pools.stop()
    # after the message each holds; unacknowledged ones go back to the broker
    drained = rooms.transport.stop(deadline.left() if wait else 0.0) and drained
    storage.wake()
    if wait:
        drained = _join(rooms, consumers, deadline, persistent) and drained
    if not persistent:
        drained = _cancel_waiting(rooms) and drained
    rooms.limits.stop(deadline.left() if wait else 0.0)
    rooms.children.stop()
    rooms.store.close()
    return drained


def _drain(rooms: Rooms, deadline: _Deadline) -> bool:
    """Run what is due in every queue that has threads here; False if some could not run.

    Jobs scheduled for later, and those of a queue nobody here runs, are
    cancelled afterwards (:func:`_cancel_waiting`).
    """
    rooms.supervisor.ensure(draining=True)
    storage = rooms.store.storage
    drained = True
    for name, row in storage.queue_counts().items():
        if not rooms.pools.runs(name):
            if row["queued"] or row["scheduled"]:
                drained = False  # nobody can run them: do not wait for nothing
            continue
        drained = storage.join(deadline.left(), due_only=True, queue=name) and drained
    return drained


def _join(rooms: Rooms, consumers: list[Consumer], deadline: _Deadline, persistent: bool) -> bool:
    """Wait for the consumer threads to end; False if one still ran a job when the time was up."""
    me = threading.current_thread()
    drained = True
    for consumer in consumers:
        thread = consumer.thread
        if thread is None or thread is me:
            continue
        thread.join(deadline.left())
        running = consumer.current
        if thread.is_alive() and running is not None:  # still running when the time was up: say so
            drained = False
            logger.warning(
                "app %r shut down while job %s (%s) was still running; %s", rooms.app.name, running.id,
                running.name, "if the process ends now, another process takes it over once this one is"
                " gone" if persistent else "if the process ends now, it is interrupted and lost",
            )
    return drained


def _cancel_waiting(rooms: Rooms) -> bool:
    """A store whose jobs do not outlive the process: cancel what still waits, and say so.
    True if nothing waited."""
    storage = rooms.store.storage
    left = storage.drop_waiting()
    if not left:
        return True
    now = time.time()
    app = rooms.app
    for job in left:
        job.mark_cancelled(now, "cancelled: the queue shut down before the job ran")
        storage.finish(job)  # readable as cancelled; wakes its waiters
        if job_cancelled.receivers:
            job_cancelled.send(app, job=job)
    shown = ", ".join(f"{job.id} ({job.name})" for job in left[:10])
    if len(left) > 10:
        shown += f" and {len(left) - 10} more"
    logger.warning(
        "app %r shut down with %d job(s) not run; they were cancelled: %s."
        " Set MEMQUEUE_STORAGE to a persistent store (%s) to keep waiting"
        " jobs across restarts.",
        app.name, len(left), shown, SHARED_STORE_EXAMPLE,
    )
    return False


def stop_for_signal(rooms: Rooms, name: str) -> None:
    """The process is about to die of signal ``name``: log what becomes of every job, stop.

    Called by the SIGTERM handler of a development server process
    (:mod:`flask_memqueue.sigterm`), from its helper thread. Nothing is
    waited for: the process dies right after, as it would have without us.
    """
    storage = rooms.store.storage
    persistent = storage.capabilities.persistent
    app_name = rooms.app.name
    for consumer in rooms.pools.all():
        current = consumer.current
        if current is None:
            continue
        logger.warning(
            "%s: job %s (%s) of app %r was running and is interrupted; %s", name, current.id, current.name,
            app_name, "the store runs it again once another process finds this one dead"
            if persistent
            else "it is lost (set MEMQUEUE_STORAGE to a persistent store to keep jobs across restarts)",
        )
    if persistent:
        waiting = storage.depth()
        if waiting:
            logger.warning(
                "%s: %d waiting job(s) of app %r stay in the store %s for the next start",
                name, waiting, app_name, rooms.store.url,
            )
    else:
        logger.warning("%s: the queue of app %r stops; waiting jobs are cancelled", name, app_name)
    shutdown(rooms, wait=False)  # memory: marks the waiting jobs cancelled and logs them
