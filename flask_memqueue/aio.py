"""``async def`` tasks: the event loop of a consumer thread, and how a coroutine runs on it.

A task whose function is a coroutine function gets :class:`AsyncStrategy`
(:func:`flask_memqueue.task.choose_strategy`), the innermost link of its
chain (:mod:`flask_memqueue.hooks`). Where it runs:

- **In a consumer thread** (``async_concurrency`` 1, the default): on that
  thread's own event loop, made at its first async job and reused for every
  later one, closed when the thread's loop ends. Not ``asyncio.run`` per job:
  a new loop costs a selector, a self-pipe (two file descriptors) and its
  shutdown steps on every job, and the clients an async task keeps between
  jobs (an ``httpx.AsyncClient``, an ``asyncpg`` pool, the OpenAI SDK's client)
  are bound to the loop that made them: with a fresh loop per job they break
  on the second job. The cost of keeping it: one loop and two descriptors per
  consumer thread, and a task a job left running (``asyncio.create_task``
  without awaiting it) runs on only while a later job runs the loop.
- **In a queue with** ``async_concurrency`` N > 1: on the loop of the
  :class:`~flask_memqueue.runtime.aioconsumer.AsyncConsumer` that runs that
  thread, up to N jobs at once.
- **Anywhere else** (eager mode, ``mq.run_once()`` in a test's thread): on a
  loop made for the job and closed after it (``asyncio.run``), or, if the
  calling thread runs a loop already (an ``async def`` view in eager mode),
  on a helper thread with the caller's context, waited for.

Inside the coroutine the job's app context is the current one (the task that
runs it copies the consumer's context, where the app context was pushed), and
``current_job`` is its job.

**Time limits.** ``@mq.task(time_limit=seconds)`` on an ``async def`` task
cancels the coroutine with :class:`asyncio.CancelledError` when the time is
up, and the attempt fails with :class:`~flask_memqueue.exceptions.TimeLimitExceeded`
(the task's retries apply). A coroutine that swallows the cancellation and
does not end within :data:`CANCEL_GRACE` seconds is abandoned: the attempt
is recorded failed once, and whatever the coroutine does later is logged and
never recorded; the other coroutines on its loop go on.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .exceptions import TimeLimitExceeded

if TYPE_CHECKING:
    import asyncio

    from .job import Job

logger = logging.getLogger("flask_memqueue")

#: Seconds a cancelled coroutine has to end after its time limit before it is abandoned.
CANCEL_GRACE = 1.0


class _ThreadLoop(threading.local):
    #: True in a thread that keeps one loop for all its jobs (a consumer thread).
    owned = False
    loop: asyncio.AbstractEventLoop | None = None


_local = _ThreadLoop()
# Coroutines abandoned after their time limit (strong references, so the loop does not lose them).
_abandoned: set[asyncio.Task[Any]] = set()


def own_loop() -> None:
    """Make the calling thread keep one event loop for all its async jobs (a consumer thread, at its start).

    The loop itself is made at the first async job: a thread that never runs one never pays for it.
    """
    _local.owned = True


def thread_loop() -> asyncio.AbstractEventLoop:
    """The calling thread's own loop (made now if it has none): :func:`own_loop` threads only."""
    import asyncio  # here, not at the top: an app without async tasks never loads asyncio
    loop = _local.loop
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def close_loop() -> None:
    """Close the calling thread's own loop, if it made one (a consumer thread, as its loop ends).

    Tasks still pending on it (abandoned ones, or ones a job started and left) are cancelled
    and given a last run of the loop to unwind, then async generators and the default
    executor are shut down, as ``asyncio.run`` does at its end.
    """
    loop, _local.loop, _local.owned = _local.loop, None, False
    if loop is None or loop.is_closed():
        return
    import asyncio  # a loop was made: asyncio is loaded

    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=CANCEL_GRACE))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except Exception:
        logger.exception("closing the event loop of a consumer thread failed")
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def coroutine_of(job: Job[Any]) -> Coroutine[Any, Any, Any]:
    """The coroutine of ``job``: its task's function called with its arguments, under its time limit."""
    kwargs = job.kwargs
    coro = job.task.func(*job.args, **kwargs) if kwargs else job.task.func(*job.args)
    limit = job.options.time_limit or getattr(job.task, "time_limit", None) or _app_limit()
    if limit is not None:
        return limited(coro, limit, job)
    return coro  # type: ignore[no-any-return]


def _app_limit() -> float | None:
    """``MEMQUEUE_TIME_LIMIT`` of the app whose context the job runs in (None outside one)."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return None
    queue = current_app.extensions.get("memqueue")
    return None if queue is None else queue.config.time_limit


async def limited(coro: Coroutine[Any, Any, Any], seconds: float, job: Job[Any]) -> Any:
    """Await ``coro`` for at most ``seconds``; then cancel it and raise :class:`TimeLimitExceeded`.

    The coroutine runs as a task of its own (with a copy of this context: the
    app context and ``current_job`` are the same), so that one that swallows
    its cancellation can be left behind: after :data:`CANCEL_GRACE` seconds
    it is abandoned, the attempt fails now, once, and what it does later is
    only logged.
    """
    import asyncio

    inner = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({inner}, timeout=seconds)
    except asyncio.CancelledError:  # the consumer itself is cancelled (its loop closes): pass it on
        inner.cancel()
        raise
    if done:
        return inner.result()
    inner.cancel()
    done, _ = await asyncio.wait({inner}, timeout=CANCEL_GRACE)
    message = f"job {job.id} ({job.name}) ran out of its time limit of {seconds:g} s and was cancelled"
    if not done:
        _abandoned.add(inner)
        inner.add_done_callback(_forget_abandoned)
        message += (
            f"; it did not end within {CANCEL_GRACE:g} s of the cancellation (it swallows"
            " asyncio.CancelledError), so it was abandoned and its outcome will not be recorded"
        )
    elif not inner.cancelled() and inner.exception() is None:
        message += "; it swallowed the cancellation and returned, too late: its result is dropped"
    raise TimeLimitExceeded(message)


def _forget_abandoned(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("an abandoned coroutine (past its time limit) ended with %r; nothing is recorded",
                       task.exception())


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end from synchronous code, on the right loop (see the module's text)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # this thread runs a loop already (eager mode in an async view): wait for a helper thread
        return _in_helper_thread(coro)
    if _local.owned:
        return thread_loop().run_until_complete(coro)
    return asyncio.run(coro)


def _in_helper_thread(coro: Coroutine[Any, Any, Any]) -> Any:
    import asyncio

    context = contextvars.copy_context()
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            box["result"] = context.run(asyncio.run, coro)
        except BaseException as exc:  # handed to the caller, raised there
            box["error"] = exc

    thread = threading.Thread(target=main, name="memqueue-eager-async", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class AsyncStrategy:
    """The strategy of an ``async def`` task: run its coroutine to its end (see the module's text).

    In a queue with ``async_concurrency`` > 1 the consumer does not call it: it awaits
    :func:`coroutine_of` on its loop, next to the job's other coroutines.
    """

    #: The consumer of a concurrent queue looks for this to await the job instead of calling it.
    is_async = True

    def __call__(self, job: Job[Any], /) -> Any:
        return run_coroutine(coroutine_of(job))

    def __repr__(self) -> str:
        return "<AsyncStrategy>"


#: The one strategy object of every async task.
ASYNC = AsyncStrategy()
