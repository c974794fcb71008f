"""Steering one app's queue in production (issue 24): many jobs in one step, pause and
resume, and acting on every job a filter matches.

The verbs the extension (``mq.enqueue_many``, ``mq.pause``...), the routes, the
dashboard and the CLI share. Each one is a store primitive of the storage contract
(``put_many``, ``pause``, ``find``, ``act_on``) plus what belongs to the queue: the
``on_enqueue`` hooks and signals per job, eager mode, starting the consumers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError, QueueClosed
from ..jobfilter import ACTIONS, JobFilter
from ..options import check_queue_name
from ..signals import job_cancelled, job_enqueued

if TYPE_CHECKING:
    from ..job import Job
    from .rooms import Rooms


def enqueue_many(rooms: Any, calls: Iterable[Any]) -> list[Job]:
    """Queue every call (``task.s(...)``, with its ``.options(...)``) in one step of the store.

    ``rooms`` is the app's :class:`~flask_memqueue.state.AppQueue`.

    :raises TypeError: an item is not a call object, or its arguments do not fit its task.
    :raises ValueError: a call asks for what one batch cannot do (a unique key, a session).
    :raises QueueFull: ``MEMQUEUE_MAXSIZE`` cannot take the whole batch: nothing was queued.
    """
    items = list(calls)
    if rooms.supervisor.closed:
        raise QueueClosed(f"the queue of app {rooms.app.name!r} was shut down; it takes no more jobs")
    producer = rooms.producer
    jobs = [producer.new_job(call.task, call.args, dict(call.kwargs) or None, call.job_options)
            for call in _checked(items)]
    if not jobs:
        return []
    hooks, app = rooms.hooks, rooms.app
    if hooks.enqueue:
        for job in jobs:
            hooks.enqueued(app, job)
    if rooms.config.eager:
        return [producer.run_eagerly(job) for job in jobs]
    rooms.store.storage.put_many(jobs)
    if job_enqueued.receivers:
        for job in jobs:
            job_enqueued.send(app, job=job)
    if not rooms.supervisor.alive:
        rooms.supervisor.ensure()
    return jobs


def _checked(items: list[Any]) -> list[Any]:
    """``items`` if each is a call object whose options a batch can keep; else the error naming the item."""
    from ..task import Call

    for i, call in enumerate(items):
        if not isinstance(call, Call):
            if hasattr(call, "s") and hasattr(call, "job_options"):  # a task, not one call of it
                raise TypeError(f"enqueue_many(): item {i} is the task {call.name!r} itself, not a call of it:"
                                f" write {call.name}.s(arguments)")
            raise TypeError(
                f"enqueue_many() takes calls made with task.s(...) (or task.si(...)); item {i} is"
                f" {type(call).__name__}: write mq.enqueue_many([send.s(a) for a in addresses])"
            )
        options = call.job_options
        for name in ("unique_key", "session", "on_commit"):
            if getattr(options, name) is not None:
                raise ValueError(
                    f"enqueue_many(): item {i} ({call.task.name}) has options({name}=...), which a batch cannot"
                    f" keep (it is checked or committed job by job); queue that call with .delay()"
                )
    return items


def _pausable(rooms: Rooms, name: str) -> str:
    queue = check_queue_name(name, "queue")
    storage = rooms.store.storage
    if not storage.capabilities.pausable:
        raise ConfigurationError(
            f"the store {rooms.store.url} cannot pause a queue (it does not declare the capability 'pausable')"
        )
    return queue


def pause(rooms: Rooms, name: str) -> bool:
    """Pause the queue ``name`` in every process sharing the store; True if it was running."""
    return rooms.store.storage.pause(_pausable(rooms, name))


def resume(rooms: Rooms, name: str) -> bool:
    """Resume the queue ``name``; True if it was paused."""
    return rooms.store.storage.resume(_pausable(rooms, name))


def paused(rooms: Rooms) -> set[str]:
    """The paused queues (none for a store that cannot pause)."""
    storage = rooms.store.storage
    return storage.paused() if storage.capabilities.pausable else set()


def act_on(rooms: Any, flt: JobFilter, action: str) -> int:
    """Retry, cancel or delete every job ``flt`` matches; how many changed. A cancel sends
    ``job_cancelled`` per job; a retry starts the consumers if they should run."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if action == "retry" and rooms.supervisor.closed:
        raise QueueClosed(f"the queue of app {rooms.app.name!r} was shut down; it takes no more jobs")
    app = rooms.app

    def cancelled(job: Job) -> None:
        if job_cancelled.receivers:
            job_cancelled.send(app, job=job)

    n: int = rooms.store.storage.act_on(flt, action, cancelled if action == "cancel" else None)
    if action == "retry" and n and not rooms.supervisor.alive:
        rooms.supervisor.ensure()
    return n


__all__ = ["act_on", "enqueue_many", "pause", "paused", "resume"]
