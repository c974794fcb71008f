"""Waiting in tests without sleep-and-hope: one bounded poll, and a gate a job waits at.

:func:`wait_until` is the suite's one way to wait for something that has no
event to wait on (a thread that ends, a line in another process's log, a
port that opens): it polls with a deadline and fails with a message that
says what never happened. Where there is an event, tests wait on the event
(``Event.wait(TIMEOUT)``, ``Thread.join(TIMEOUT)``, ``job.wait(TIMEOUT)``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds any single wait in a test may take before the test fails.
TIMEOUT = 10.0

#: The first pause between two polls; it doubles up to the caller's ``interval``.
FIRST_INTERVAL = 0.001


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = TIMEOUT,
    message: str | Callable[[], str] | None = None,
    interval: float = 0.02,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Raises :class:`TimeoutError` after ``timeout`` seconds, naming
    ``message`` (a string, or a callable that builds one, e.g. from a
    server's output; by default the condition itself). The condition is
    tried at once, and once more at the deadline. The pause between tries
    starts at a millisecond and doubles up to ``interval``: a condition that
    holds soon is seen soon, and a long wait (another process's log, read
    and parsed on every try) does not keep a core busy.
    """
    deadline = time.monotonic() + timeout
    pause = min(FIRST_INTERVAL, interval)
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout} s waiting for {text or condition}")
        time.sleep(min(pause, left))
        pause = min(pause * 2, interval)


class Gate:
    """A job that blocks the consumer until the test opens the gate.

    ``entered`` is set once the job runs; ``release()`` lets it finish. The
    job waits at most :data:`TIMEOUT` seconds, so a test that forgets to
    release never hangs.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        if not self.opened.wait(TIMEOUT):
            raise TimeoutError("the gate was never opened")
        return "gate"

    def wait_entered(self) -> None:
        assert self.entered.wait(TIMEOUT), "the gate job never started"

    def release(self) -> None:
        self.opened.set()
