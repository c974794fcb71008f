"""The benchmark's jobs: importable by every contender, and the same for all."""

from __future__ import annotations

import threading
import time
from typing import Any


class Tracker:
    """Counts finished jobs; holds handler-start stamps for the latency run."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, expected: int = 0, stamps: int = 0) -> None:
        self.hits: list[None] = []
        self.expected = expected
        self.done = threading.Event()
        self.stamps = [0] * stamps

    def hit(self) -> None:
        self.hits.append(None)
        if len(self.hits) >= self.expected:
            self.done.set()

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"only {len(self.hits)} of {self.expected} jobs ran within {timeout:.0f} s")


TRACKER = Tracker()
GATE_ARRIVED = threading.Semaphore(0)
GATE_OPEN = threading.Event()


def noop(*args: Any) -> None:
    """The no-op job: it only counts itself."""
    TRACKER.hit()


def stamp(i: int) -> None:
    """The latency job: records when its handler started."""
    TRACKER.stamps[i] = time.perf_counter_ns()
    TRACKER.hit()


def gate(*args: Any) -> None:
    """Parks the consumer thread so enqueues can be timed alone (bounded)."""
    GATE_ARRIVED.release()
    GATE_OPEN.wait(300)
