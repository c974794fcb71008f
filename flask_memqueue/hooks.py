"""Hooks: what plugs in around enqueueing and running a job, and how a task's function is called.

A feature that wraps every job (a time limit, a rate or concurrency limit
checked at claim, a workflow's release step, an OpenTelemetry span, a
Sentry scope) is one :class:`Hook` that ``mq.add_hook(...)`` installs, not a
branch inside the consumer (Dramatiq's middleware, in four points):

``on_enqueue(app, job)``
    In the enqueuing thread, inside its app context, after the job was made
    and checked and before any store sees it. It may replace
    ``job.options`` (with ``job.options.replace(...)``: a trace context, say)
    or raise to refuse the job: nothing is queued and the caller gets the
    exception. Not asked in eager mode's retries, nor for a periodic tick's job.
``on_claim(app, job)``
    In the consumer thread, once the store handed it the job (RUNNING, no
    app context yet), before the attempt starts. Return None to run it now,
    or a number of seconds: the job goes back to the store, due that much
    later, and no attempt is counted (a rate limit, a paused queue). Not
    asked in eager mode, which runs every job at once.
``around_run(app, job, call)``
    Around the call of the task's function, inside the job's app context
    (``teardown_appcontext`` runs after it): return ``call()``'s result, or
    raise. An exception from the hook counts as the function's own (the
    task's retries apply), so a time limit raises here.
``around_arun(app, job, call)`` (async)
    For an ``async def`` job that a queue with ``async_concurrency`` > 1 runs
    next to others on one event loop: ``return await call()``, or raise. There
    ``around_run`` cannot apply (it would block the loop, or see only an
    un-awaited coroutine), so each job gets exactly one of the two: such a job
    the ``around_arun`` chain, every other job (an async job in a thread of its
    own included: its coroutine runs inside ``call()``) the ``around_run`` one.
    A hook that wraps every job overrides both.
``on_outcome(app, job)``
    In the consumer thread, once the store has recorded what the attempt
    came to (succeeded, failed, or scheduled for a retry): a workflow
    releases what waited for it, a span ends. With such a hook the consumer
    records each outcome as soon as the job returns, instead of with its
    next claim (one more call to the store per job).

Order: hooks run in the order they were added; ``around_run`` hooks nest
(the first added is the outermost), as WSGI middleware does. An exception
from ``on_claim`` or ``on_outcome`` is logged and ignored (the job runs,
its outcome stands): a broken hook must not lose a job.

**Execution strategy.** How a task's function is called for a job is its
:attr:`Task.strategy <flask_memqueue.Task.strategy>`, chosen once, when the
task is made: None (every task today) calls the function in the consumer
thread, inlined on the consumer's hot path; a :class:`Strategy` (a coroutine
run on the thread's event loop, a call in a child process) is the innermost
link of the chain the ``around_run`` hooks wrap.

**Cost.** The chains are built once per task and per change of the hooks,
never per job; with no hook installed the consumer and the enqueue path
test one attribute each, and call the function as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .aio import coroutine_of

if TYPE_CHECKING:
    from flask import Flask

    from .job import Job, TaskLike

logger = logging.getLogger("flask_memqueue")


class Strategy(Protocol):
    """How a task's function is called for a job, inside its app context (see the module's text)."""

    def __call__(self, job: Job[Any], /) -> Any: ...


def call_in_thread(job: Job[Any]) -> Any:
    """The default strategy, spelled out: call the function here (the consumer inlines this)."""
    kwargs = job.kwargs
    return job.task.func(*job.args, **kwargs) if kwargs else job.task.func(*job.args)


class Hook:
    """Base class of a hook: override the points you need (see :mod:`flask_memqueue.hooks`).

    A point a hook does not override is never called, so it costs nothing.

    .. code-block:: python

        class Timing(Hook):
            def around_run(self, app, job, call):
                started = time.perf_counter()
                try:
                    return call()
                finally:
                    app.logger.info("%s took %.3f s", job.name, time.perf_counter() - started)

        mq.add_hook(Timing())
    """

    def on_enqueue(self, app: Flask, job: Job[Any]) -> None:
        """The job is about to be queued: replace ``job.options``, or raise to refuse it."""

    def on_claim(self, app: Flask, job: Job[Any]) -> float | None:
        """The consumer got the job: None runs it now, a number of seconds puts it back for that long."""
        return None

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        """Wrap the call of the task's function: return ``call()``'s result, or raise."""
        return call()

    async def around_arun(self, app: Flask, job: Job[Any], call: Callable[[], Awaitable[Any]]) -> Any:
        """Wrap an ``async def`` job on a concurrent queue's loop: ``return await call()``, or raise."""
        return await call()

    def on_outcome(self, app: Flask, job: Job[Any]) -> None:
        """The store recorded what this attempt came to (``job.status`` says what)."""


def _overrides(hook: Hook, point: str) -> bool:
    return getattr(type(hook), point) is not getattr(Hook, point)


class Hooks:
    """The hooks of one :class:`~flask_memqueue.MemQueue`, in order, shared by every app it binds.

    The tuples below hold the hooks that override each point (empty when
    none does: what the hot paths test), and :meth:`runner` builds the
    chain of a task once per change.
    """

    def __init__(self) -> None:
        self._all: list[Hook] = []
        #: Hooks that override ``on_enqueue``, in order.
        self.enqueue: tuple[Hook, ...] = ()
        #: Hooks that override ``on_claim``.
        self.claim: tuple[Hook, ...] = ()
        #: Hooks that override ``around_run``.
        self.around: tuple[Hook, ...] = ()
        #: Hooks that override ``around_arun`` (async jobs of a concurrent queue).
        self.aaround: tuple[Hook, ...] = ()
        #: Hooks that override ``on_outcome``.
        self.outcome: tuple[Hook, ...] = ()
        #: True if a consumer has anything to do besides calling the function:
        #: a claim, around or outcome hook (one attribute read per job).
        self.active = False
        self._chains: dict[TaskLike, Callable[[Flask, Job[Any]], Any]] = {}
        self._achain: Callable[[Flask, Job[Any]], Coroutine[Any, Any, Any]] = _ainnermost

    def add(self, hook: Hook) -> None:
        """Install ``hook`` after those installed before it (see the module's text for the order)."""
        if not isinstance(hook, Hook):
            raise TypeError(f"a hook is an instance of flask_memqueue.Hook (a subclass of it), not {hook!r}")
        self._all.append(hook)
        self.enqueue = tuple(h for h in self._all if _overrides(h, "on_enqueue"))
        self.claim = tuple(h for h in self._all if _overrides(h, "on_claim"))
        self.around = tuple(h for h in self._all if _overrides(h, "around_run"))
        self.aaround = tuple(h for h in self._all if _overrides(h, "around_arun"))
        self.outcome = tuple(h for h in self._all if _overrides(h, "on_outcome"))
        self.active = bool(self.claim or self.around or self.outcome)
        self._chains = {}  # rebuilt on first use
        self._achain = self._build_achain()

    def __iter__(self) -> Any:
        return iter(list(self._all))

    def __len__(self) -> int:
        return len(self._all)

    # -- the points ---------------------------------------------------------------------
    def enqueued(self, app: Flask, job: Job[Any]) -> None:
        """Ask every ``on_enqueue`` hook about ``job``; an exception refuses it (and propagates)."""
        for hook in self.enqueue:
            hook.on_enqueue(app, job)

    def claimed(self, app: Flask, job: Job[Any]) -> float | None:
        """The longest delay an ``on_claim`` hook asks for ``job``, or None to run it now."""
        delay: float | None = None
        for hook in self.claim:
            try:
                asked = hook.on_claim(app, job)
            except Exception:
                logger.exception("the on_claim hook %r failed for job %s; the job runs", hook, job.id)
                continue
            if asked is not None and (delay is None or asked > delay):
                delay = float(asked)
        return delay

    def recorded(self, app: Flask, job: Job[Any]) -> None:
        """Tell every ``on_outcome`` hook; a failing one is logged, the others still hear."""
        for hook in self.outcome:
            try:
                hook.on_outcome(app, job)
            except Exception:
                logger.exception("the on_outcome hook %r failed for job %s", hook, job.id)

    def run(self, app: Flask, job: Job[Any]) -> Any:
        """Call ``job``'s function through its task's strategy and the ``around_run`` hooks."""
        task = job.task
        chain = self._chains.get(task)
        if chain is None:
            chain = self._chains[task] = self._chain(task)
        return chain(app, job)

    def _chain(self, task: TaskLike) -> Callable[[Flask, Job[Any]], Any]:
        """The chain of ``task``: its strategy innermost, the first hook added outermost."""
        strategy: Strategy = getattr(task, "strategy", None) or call_in_thread

        def innermost(app: Flask, job: Job[Any]) -> Any:
            return strategy(job)

        chain: Callable[[Flask, Job[Any]], Any] = innermost
        for hook in reversed(self.around):
            chain = _wrap(hook, chain)
        return chain


    async def arun(self, app: Flask, job: Job[Any]) -> Any:
        """Await ``job``'s coroutine through the ``around_arun`` hooks (a concurrent queue's async job)."""
        return await self._achain(app, job)

    def _build_achain(self) -> Callable[[Flask, Job[Any]], Coroutine[Any, Any, Any]]:
        chain: Callable[[Flask, Job[Any]], Coroutine[Any, Any, Any]] = _ainnermost
        for hook in reversed(self.aaround):
            chain = _awrap(hook, chain)
        return chain


async def _ainnermost(app: Flask, job: Job[Any]) -> Any:
    return await coroutine_of(job)


def _awrap(
    hook: Hook, inner: Callable[[Flask, Job[Any]], Coroutine[Any, Any, Any]]
) -> Callable[[Flask, Job[Any]], Coroutine[Any, Any, Any]]:
    async def link(app: Flask, job: Job[Any]) -> Any:
        return await hook.around_arun(app, job, lambda: inner(app, job))

    return link


def _wrap(hook: Hook, inner: Callable[[Flask, Job[Any]], Any]) -> Callable[[Flask, Job[Any]], Any]:
    def link(app: Flask, job: Job[Any]) -> Any:
        return hook.around_run(app, job, lambda: inner(app, job))

    return link
