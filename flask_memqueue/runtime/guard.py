"""The guard of a loop that exactly one thread may run (a consumer's place, the scheduler).

The starter records the new thread's ident under the pools' lock; the loop
reads it under the same lock before its first turn, and exits at once if it
is not the recorded one (a duplicate started by a race, or a stale thread).
"""

from __future__ import annotations

import threading
from typing import Protocol


class Guarded(Protocol):
    """A loop run by one legitimate thread (a Consumer, the Scheduler): the guard's fields."""

    thread: threading.Thread | None
    ident: int | None
    alive: bool
    starts: int

    def run(self) -> None: ...

    def reset(self) -> None: ...


def start_guarded(runner: Guarded, name: str) -> str | None:
    """Start ``runner``'s thread and record it as the legitimate one (the pools' lock held).

    Returns why it could not be started (``"can't start new thread"``), else None.
    """
    thread = threading.Thread(target=runner.run, name=name, daemon=True)
    runner.reset()
    try:
        thread.start()
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {exc}"
    runner.thread = thread
    runner.ident = thread.ident
    runner.alive = True
    runner.starts += 1
    return None
