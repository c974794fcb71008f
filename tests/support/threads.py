"""The package's own threads, found by name: what the leak detector and the thread tests count."""

from __future__ import annotations

import threading

#: Every name a consumer thread has starts with this.
CONSUMER_PREFIX = "memqueue-consumer["
#: Every name a scheduler thread (periodic tasks) has starts with this.
SCHEDULER_PREFIX = "memqueue-scheduler["


def consumer_threads() -> list[threading.Thread]:
    """Every live consumer thread of this process."""
    return [t for t in threading.enumerate() if t.name.startswith(CONSUMER_PREFIX) and t.is_alive()]


def scheduler_threads() -> list[threading.Thread]:
    """Every live scheduler thread (periodic tasks) of this process."""
    return [t for t in threading.enumerate() if t.name.startswith(SCHEDULER_PREFIX) and t.is_alive()]
