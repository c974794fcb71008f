"""What ``/stats``, ``/threads``, ``/health``, ``/metrics`` and the dashboard show of one app's queue.

Read-only views of the rooms, as plain JSON-safe dicts; nothing here starts
or changes anything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..options import DEFAULT_QUEUE

if TYPE_CHECKING:
    from ..consumer import Consumer
    from .pools import ConsumerPools
    from .rooms import Rooms


def consumer_info(rooms: Rooms) -> dict[str, Any]:
    """The consumer threads: totals, the default queue's first thread, and every thread."""
    pools = rooms.pools
    consumers = pools.all()
    thread = pools.consumer_thread
    config = rooms.config
    return {
        "name": thread.name if thread else None,
        "ident": thread.ident if thread else None,
        "alive": thread is not None,
        "jobs_done": sum(c.jobs_done for c in consumers),
        "attempts": sum(c.attempts for c in consumers),
        "starts": pools.starts,
        "enabled": bool(config.consumer and not config.eager),
        "error": pools.start_error,
        "store_error": next((c.store_error for c in consumers if c.store_error), None),
        "current": _current(pools.consumer),
        "threads": [
            {
                "queue": c.queue_name,
                "index": c.index,
                "name": c.thread.name if c.thread is not None and c.alive else None,
                "ident": c.ident if c.alive else None,
                "alive": c.alive,
                "jobs_done": c.jobs_done,
                "starts": c.starts,
                "current": _current(c),
            }
            for c in consumers
        ],
    }


def queues_info(rooms: Rooms) -> dict[str, dict[str, Any]]:
    """Per queue: the threads this process runs for it (0 in a process that only
    enqueues) and how many are alive, who consumes it, and its jobs in the store.

    ``consumed_by`` is ``"this process"``, ``"other processes"`` (a store
    other processes share, where one declared the queue in the last minute:
    a ``flask memqueue worker``, a web process with threads),
    ``"inline (eager mode)"``, or ``"nobody"`` (its jobs wait until a
    process consumes it).
    """
    storage = rooms.store.storage
    pools = rooms.pools
    config = rooms.config
    counts = storage.queue_counts()
    eager = config.eager
    runs_here = (config.consumer or pools.worker) and not eager
    elsewhere = storage.known_queues() if storage.capabilities.shared else set()
    paused = storage.paused() if storage.capabilities.pausable else set()
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(pools.threads) | set(counts) | paused, key=lambda n: (n != DEFAULT_QUEUE, n)):
        row = counts.get(name, {"queued": 0, "scheduled": 0, "running": 0})
        threads = pools.threads.get(name, 0) if runs_here else 0
        if eager:
            consumed_by = "inline (eager mode)"
        elif threads:
            consumed_by = "this process"
        else:
            consumed_by = "other processes" if name in elsewhere else "nobody"
        out[name] = {
            "threads": threads,
            "alive": sum(1 for c in pools.by_queue.get(name, []) if c.alive),
            "declared": name in pools.declared,
            "consumed_by": consumed_by,
            "depth": row["queued"] + row["scheduled"],
            "paused": name in paused,
            **row,
        }
    return out


def throughput(pools: ConsumerPools) -> list[dict[str, Any]]:
    """Jobs finished per time bucket, every consumer thread added up."""
    total: list[dict[str, Any]] | None = None
    for consumer in pools.all() or [pools.consumer]:
        rows = consumer.throughput()
        if total is None:
            total = rows
        else:
            for mine, theirs in zip(total, rows, strict=False):
                mine["jobs"] += theirs["jobs"]
    return total or []


def limit_uses(rooms: Rooms) -> list[dict[str, Any]]:
    """Every rate and concurrency limit in use (``GET /limits``): its task, key, limit, jobs
    running or started in the window, jobs waiting on it. Empty for a store without limits."""
    storage = rooms.store.storage
    return [use.to_dict() for use in storage.limit_uses()] if storage.capabilities.limits else []


def stats(rooms: Rooms) -> dict[str, Any]:
    """Everything ``/stats`` answers (the dashboard shows it too)."""
    storage = rooms.store.storage
    config = rooms.config
    return {
        "app": rooms.app.name,
        "pid": rooms.store.pid,
        "storage": rooms.store.url,
        "counts": storage.counts(),
        "depth": storage.depth(),
        "maxsize": config.maxsize,
        "queues": queues_info(rooms),
        "paused": sorted(storage.paused()) if storage.capabilities.pausable else [],
        "limits": limit_uses(rooms),
        "consumer": consumer_info(rooms),
        "consumer_alive": rooms.pools.consumer_thread is not None,
        "uptime": round(time.time() - rooms.store.started_at, 3),
        "eager": config.eager,
        "closed": rooms.supervisor.closed,
        "throughput": throughput(rooms.pools),
        "amqp": rooms.transport.info(),
    }


def _current(consumer: Consumer) -> dict[str, Any] | None:
    current = consumer.current
    if current is None:
        return None
    started = current.started_at
    return {
        "id": current.id,
        "task": current.name,
        "queue": current.queue,
        "running_for": None if started is None else round(time.time() - started, 3),
    }
