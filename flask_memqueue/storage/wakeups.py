"""Waking this process's idle consumers of a shared store.

A generation counter bumped by every local enqueue (and by ``wake()``), so a
consumer that looked at the store before the bump never sleeps through it:
several threads may wait, and an Event cleared by one would leave another
asleep for a poll interval. A store whose server can block until a job
arrives from any process overrides ``_sleep`` (Redis ``BLPOP``) and reads the
same generation.
"""

from __future__ import annotations

import threading


class Doorbell:
    """One store's wake-up generation and stop flag."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        #: Bumped by every local enqueue and every :meth:`ring_to_stop`.
        self.kicks = 0
        #: Set by ``wake()``: a taker without its own stop request returns None.
        self.woken = False

    def ring(self) -> None:
        """A job was queued here: wake this process's idle consumers."""
        with self.cond:
            self.kicks += 1
            self.cond.notify_all()

    def ring_to_stop(self) -> None:
        """``wake()``: every blocked taker looks again now, and one without a stop request returns."""
        with self.cond:
            self.woken = True
            self.kicks += 1
            self.cond.notify_all()

    def sleep(self, timeout: float, kicks: int) -> int:
        """Wait up to ``timeout`` s unless the generation moved past ``kicks`` (or a stop was
        asked); returns the generation now."""
        with self.cond:
            if self.kicks == kicks and not self.woken:
                self.cond.wait(timeout)
            return self.kicks


__all__ = ["Doorbell"]
