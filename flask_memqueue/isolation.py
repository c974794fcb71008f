"""Isolated jobs: the execution strategy that runs a job in a child process.

``@mq.task(isolated=True)`` gives the task an :class:`IsolatedStrategy` (the
innermost link of its chain, :mod:`flask_memqueue.hooks`); a call's
``.options(isolated=True)`` asks the same of one job of a task that is not
isolated (the ``Isolation`` hook of :mod:`flask_memqueue.runtime.children`
sends it there), and ``isolated=False`` runs one call of an isolated task in
the consumer thread.

Where a job runs:

- **In a consumer thread** (a pool's, or ``mq.run_once()``): in a warm child
  process of the app's pool (``app.extensions["memqueue"].children``, the
  room :class:`~flask_memqueue.runtime.children.Children`), which rebuilt the
  app and runs the function in an app context; the thread waits for the
  answer, enforces the time limit and the abort (by killing the child).
- **In eager mode** (``MEMQUEUE_EAGER``, tests): inline, in the caller's
  thread, as any job there: no child process.

This module knows nothing of processes: it asks the app's room, which lives
in the runtime layer, through the app's extension state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hooks import Strategy, call_in_thread

if TYPE_CHECKING:
    from .job import Job


def runs_isolated(job: Job[Any]) -> bool:
    """True if ``job`` is to run in a child process: its call says so, else its task."""
    isolated = job.options.isolated
    if isolated is not None:
        return isolated
    return bool(getattr(job.task, "isolated", False))


def run_isolated(job: Job[Any]) -> Any:
    """Run ``job`` in a child process of its app's pool (inline in eager mode); its result,
    or the exception the child reported, raised here."""
    from flask import current_app

    queue = current_app.extensions["memqueue"]
    if queue.config.eager:
        return call_in_thread(job)
    return queue.children.run(job)


class IsolatedStrategy:
    """The strategy of an isolated task (see the module's text).

    ``inner`` is how the function is called when one call asks ``isolated=False``
    (None: in the thread; the async strategy for an ``async def`` function). In the
    child an ``async def`` function's coroutine runs with ``asyncio.run``.
    """

    #: Read by the time-limit hook and the watchdog: the child is killed, not interrupted.
    kills = True

    def __init__(self, inner: Strategy | None = None) -> None:
        self.inner = inner

    def __call__(self, job: Job[Any], /) -> Any:
        if job.options.isolated is False:
            return (self.inner or call_in_thread)(job)
        return run_isolated(job)

    def __repr__(self) -> str:
        return f"<IsolatedStrategy inner={self.inner!r}>"


__all__ = ["IsolatedStrategy", "run_isolated", "runs_isolated"]
