"""Tasks and the ways to call them: now (``delay``), with options, or later (a call object).

- :class:`Task`: a function registered with ``@mq.task`` (or a handler);
  calling it calls the function, ``task.delay(...)`` queues a call.
- :class:`Call`: ``task.s(...)`` / ``task.si(...)``, one call of a task that
  is not queued yet (its task, arguments and :class:`~flask_memqueue.job.JobOptions`),
  the unit workflows and ``enqueue_many`` compose. Immutable.
- :class:`TaskOptions` and :class:`Options`: ``task.options(...)`` and
  ``mq.options(...)``, per-call options for the calls made through them.

Every way ends in the extension's ``submit(task, args, kwargs, options)``
with one :class:`~flask_memqueue.job.JobOptions` (or ``enqueue`` on the
hot path, which uses the task's own).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import functools
import inspect
import math
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from .display import safe_repr
from .exceptions import ConfigurationError
from .options import (
    DEFAULT_QUEUE,
    JobOptions,
    check_changes,
    check_memory_limit,
    check_priority,
    check_queue_name,
    check_time_limit,
    eta_at,
    eta_in,
    job_options,
)
from .signature import CallSpec, explain_refusal

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .hooks import Strategy
    from .job import Job
    from .joblimits import Limits
    from .options import JobChanges
    from .schedule import Periodic

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")


class Enqueuer(Protocol):
    """What a task needs of the extension that registered it: to queue a call."""

    def enqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> Job: ...

    def resolve(self, func: Any) -> Task[..., Any]: ...

    def submit(self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
               options: JobOptions, /) -> Job: ...

    def blocks_on_io(self) -> bool: ...


def _enqueuer(task: Task[..., Any]) -> Enqueuer:
    mq = task._mq
    if mq is None:
        raise RuntimeError(f"task {task.name!r} is not registered on a MemQueue")
    return mq


def choose_strategy(func: Callable[..., Any]) -> Strategy | None:
    """How ``func`` is called for a job, decided once per task (see :mod:`flask_memqueue.hooks`).

    None: in the consumer thread (every plain function). A coroutine function
    (``async def``) gets :class:`~flask_memqueue.aio.AsyncStrategy`, which runs
    the coroutine on the thread's event loop (:mod:`flask_memqueue.aio`).
    """
    if is_coroutine_function(func):
        from .aio import ASYNC

        return ASYNC
    return None


def is_coroutine_function(func: Callable[..., Any]) -> bool:
    """True for an ``async def`` function (also behind ``functools.partial`` or a callable
    object whose ``__call__`` is one)."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - an object's __call__, not callable()
    return not inspect.isfunction(func) and not inspect.isclass(func) and inspect.iscoroutinefunction(call)


class Task(Generic[P, R]):
    """A function registered with ``@mq.task`` (or a handler with ``@mq.handler``).

    Calling the task calls the function right here, synchronously, as if it
    were not decorated. ``task.delay(...)`` queues it instead.
    """

    #: True for the stand-in of a task name this process does not know (a job
    #: stored by another process): its job fails saying which module to import.
    missing = False

    #: Seconds a job of this task may run (``@mq.task(time_limit=...)``); None:
    #: ``MEMQUEUE_TIME_LIMIT``. A call's ``.options(time_limit=...)`` wins over both.
    time_limit: float | None = None

    #: True for ``@mq.task(isolated=True)``: each job runs in a child process (:doc:`/limits`).
    isolated: bool = False

    #: Bytes of address space an isolated job's child may use (``memory_limit="1G"``); None: no limit.
    memory_limit: int | None = None

    #: For a message handler with ``MEMQUEUE_AMQP_URL``: the RabbitMQ queue it
    #: consumes, given as ``@mq.handler(topic, amqp_queue=...)`` (None: the
    #: configured prefix and its topic; see :mod:`flask_memqueue.amqp`).
    amqp_queue: str | None = None

    #: Its rate and concurrency limits (``@mq.task(concurrency=..., rate_limit=...)``,
    #: :mod:`flask_memqueue.joblimits`); None: none.
    limits: Limits | None = None

    def __init__(
        self,
        func: Callable[P, R],
        name: str,
        *,
        retries: int = 0, retry_delay: float = 1.0, retry_backoff: float = 2.0,
        topic: str | None = None,
        mq: Enqueuer | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        periodic: Periodic | None = None,
        time_limit: float | None = None,
        concurrency: int | None = None, concurrency_key: Callable[..., Any] | str | None = None,
        rate_limit: str | None = None, rate_limit_key: Callable[..., Any] | str | None = None,
        isolated: bool = False, memory_limit: int | str | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"a task must be callable, not {func!r}")
        _check_policy(name, retries, retry_delay, retry_backoff, queue, priority, time_limit)
        if time_limit is not None:  # else the class's None: a task's dict keeps its shape (the enqueue path)
            self.time_limit = float(time_limit)
        #: The wrapped function.
        self.func = func
        #: The registered name; a job enqueued by name finds the task by it.
        self.name = name
        #: How many times a failing job is tried again.
        self.retries = retries
        #: Seconds before the first retry.
        self.retry_delay = float(retry_delay)
        #: Each further retry waits this many times longer.
        self.retry_backoff = float(retry_backoff)
        #: For a message handler, its topic (None for the default handler).
        self.topic = topic
        #: What its jobs are queued with unless a call says otherwise: one object shared by all
        #: of them (:class:`~flask_memqueue.job.JobOptions`); :attr:`queue` and :attr:`priority` read it.
        self.job_options: JobOptions = job_options(queue, priority)
        if (concurrency, concurrency_key, rate_limit, rate_limit_key) != (None, None, None, None):
            self._limit(concurrency, concurrency_key, rate_limit, rate_limit_key)
        #: For a task registered with ``@mq.periodic``: its schedule, time zone
        #: and catch-up rule; None for other tasks.
        self.periodic = periodic
        #: How the function is called for a job (:mod:`flask_memqueue.hooks`): None
        #: calls it in the consumer thread. Chosen once, here.
        self.strategy: Strategy | None = self._choose_strategy(func, isolated, memory_limit)
        self._mq = mq
        #: A call with positional arguments only binds to the function when their count lies in
        #: ``min_args..max_args``: the enqueue path tests that inline and calls :meth:`check_call`
        #: otherwise. An empty range until the first call compiles the check (most ad-hoc callables never pay).
        self.min_args = 1
        self.max_args = 0
        self._call_spec: CallSpec | None = None
        # functools.update_wrapper(self, func), without reading self.__dict__ (which makes
        # CPython 3.11 keep the attributes in a real dict: every read of one then costs
        # about 330 instructions instead of 60, and enqueue reads three). A function with
        # attributes of its own (rare) still has them copied, as update_wrapper does.
        functools.update_wrapper(self, func, updated=())
        extra = getattr(func, "__dict__", None)
        if extra:
            vars(self).update(extra)

    def _limit(self, concurrency: int | None, concurrency_key: Callable[..., Any] | str | None,
               rate_limit: str | None, rate_limit_key: Callable[..., Any] | str | None) -> None:
        """Check the task's rate and concurrency limits and put them in its job options."""
        from .joblimits import make_limits  # the tasks with a limit only

        limits = make_limits(self.name, self.func, concurrency, concurrency_key, rate_limit, rate_limit_key)
        if limits is not None:  # else the class's None: a task's dict keeps its shape
            self.limits = limits
            self.job_options = self.job_options.replace(**limits.base_options())
    def _choose_strategy(self, func: Callable[..., Any], isolated: bool, memory_limit: int | str | None,
                         ) -> Strategy | None:
        """:func:`choose_strategy`, wrapped for an isolated task (whose options are checked and set here)."""
        strategy = choose_strategy(func)
        if not isolated and memory_limit is None:
            return strategy  # the class's False and None: a task's dict keeps its shape (the enqueue path)
        self.isolated, self.memory_limit = _check_isolation(self.name, isolated, memory_limit)
        if not self.isolated:
            return strategy
        from .isolation import IsolatedStrategy

        return IsolatedStrategy(strategy)

    @property
    def queue(self) -> str:
        """The queue its jobs wait in unless a call says otherwise."""
        return self.job_options.queue

    @queue.setter
    def queue(self, value: str) -> None:
        self.job_options = self.job_options.replace(queue=value)

    @property
    def priority(self) -> int:
        """Their priority (-100..100, higher first) unless a call says otherwise."""
        return self.job_options.priority

    @priority.setter
    def priority(self, value: int) -> None:
        self.job_options = self.job_options.replace(priority=value)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of this task on the current app's queue; returns the Job.

        Takes exactly the function's parameters (a type checker holds you to
        them), and ``job.wait()`` returns what the function returns.
        """
        mq = self._mq  # _enqueuer(), inlined: the hot path (a call is ~2% of an enqueue)
        if mq is None:
            mq = _enqueuer(self)  # raises
        return mq.enqueue(self, *args, **kwargs)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """:meth:`delay` for ``async def`` code: ``job = await task.adelay(...)``.

        With a store other processes share (SQLite, Redis, PostgreSQL) the put
        runs in the loop's default executor, so the event loop is not blocked
        while the store answers; with the in-process memory store it runs
        inline (it takes microseconds and never waits on I/O).

        .. versionadded:: 1.1
        """
        mq = _enqueuer(self)
        return await run_off_loop(mq, mq.enqueue, self, *args, **kwargs)

    def options(self, **changes: Unpack[JobChanges]) -> TaskOptions[P, R]:
        """This task with job options for one call: ``task.options(queue="urgent", priority=50).delay(...)``.

        :param queue: the queue to wait in instead of the task's own.
        :param priority: -100..100 instead of the task's own; higher runs first.
        :param unique_key: while a job with this key is queued, scheduled or
            running, ``.delay()`` returns that job instead of queueing another
            (``send_report.options(unique_key="report:42").delay(42)``). One key
            is one identity across the app's tasks: prefix it with the task's name.
            The key is free again once its job finished (succeeded, failed for
            good, or was cancelled).
        :param session: insert the job through this SQLAlchemy session (``db.session``) or
            connection, in its open transaction, so that it commits or rolls back with
            your data (a ``postgresql://`` store: see docs/storage, "Jobs in your transaction").
        :param on_commit: with any store, queue the job once this SQLAlchemy session
            commits, and never if it rolls back (at most once between the commit and the put).
        :raises ValueError: a bad queue name, priority or key (the message names it).
        """
        _enqueuer(self)
        return TaskOptions(self, self.job_options.replace(**check_changes(changes)))

    @overload
    def s(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]: ...

    @overload
    def s(self: Task[Concatenate[Any, P2], R], *args: P2.args, **kwargs: P2.kwargs) -> Call[R]: ...

    def s(self, *args: Any, **kwargs: Any) -> Call[R]:
        """A call of this task, not queued yet: ``resize.s("a.png", width=10)`` (a :class:`Call`).

        ``.delay()`` queues it, ``.options(...)`` gives it job options. In a
        chain (the workflows to come), the previous link's result becomes its
        first positional argument, so that argument may be left out here:
        a type checker checks the call either as written or with the first
        positional parameter left out (the names and types of the keywords,
        and of the positional arguments given, are checked against the
        parameters they then fall on), and so does the check at run time. A
        call that leaves it out fails at ``.delay()``, which needs the whole call.

        :raises TypeError: the function could not take these arguments, even
            after a first positional argument.
        """
        try:
            self.check_call(args, kwargs)
        except TypeError:
            try:  # what a chain makes of it: the previous link's result first
                self.check_call((None, *args), kwargs)
            except TypeError:
                pass
            else:
                return Call(self, args, kwargs, self.job_options, immutable=False)
            raise
        return Call(self, args, kwargs, self.job_options, immutable=False)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        """An immutable call of this task: as :meth:`s`, but in a chain it ignores the
        previous link's result, so it takes the whole call now (and a type checker holds
        you to the function's parameters).

        :raises TypeError: the function could not take these arguments.
        """
        self.check_call(args, kwargs)
        return Call(self, args, kwargs, self.job_options, immutable=True)

    def check_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> None:
        """Refuse, at enqueue, a call the function could not take.

        A job whose arguments do not fit would fail later, in the worker, with
        a ``TypeError`` (and be retried for nothing). The enqueue path runs the
        inline test ``kwargs or not task.min_args <= len(args) <= task.max_args``
        first (about 0.05 µs) and calls this only when it fails: the first call
        of a task, calls with keywords (a precompiled test of the names, no
        :meth:`inspect.Signature.bind`), and wrong calls. A function whose
        signature cannot be read (some builtins) takes anything here.

        :raises TypeError: naming the task and what is wrong; nothing is queued.
        """
        spec = self._call_spec
        if spec is None:
            spec = self._call_spec = CallSpec.of(self.func)
            self.min_args, self.max_args = spec.min_args, spec.max_args
        if not spec.takes(args, kwargs):
            explain_refusal(self.func, self.name, args, kwargs)

    def retry_in(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt number ``attempt``."""
        return self.retry_delay * self.retry_backoff ** max(0, attempt - 1)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def _check_policy(name: str, retries: int, retry_delay: float, retry_backoff: float, queue: str,
                  priority: int, time_limit: float | None = None) -> None:
    """A task's retry policy, queue, priority and time limit, checked where it is registered."""
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(f"task {name!r}: retries must be an int >= 0, not {retries!r}")
    for label, value in (("retry_delay", retry_delay), ("retry_backoff", retry_backoff)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"task {name!r}: {label} must be a number >= 0, not {value!r}")
    if retry_backoff < 1:
        raise ConfigurationError(f"task {name!r}: retry_backoff must be >= 1, not {retry_backoff!r}")
    try:
        check_queue_name(queue, f"task {name!r}: queue")
        check_priority(priority, f"task {name!r}: priority")
        if time_limit is not None:
            check_time_limit(time_limit, f"task {name!r}: time_limit")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _check_isolation(name: str, isolated: object, memory_limit: object) -> tuple[bool, int | None]:
    """A task's ``isolated=`` and ``memory_limit=``, checked where it is registered."""
    if not isinstance(isolated, bool):
        raise ConfigurationError(f"task {name!r}: isolated must be True or False, not {safe_repr(isolated, 80)}")
    if memory_limit is None:
        return isolated, None
    if not isolated:
        raise ConfigurationError(
            f"task {name!r}: memory_limit={safe_repr(memory_limit, 40)} needs isolated=True (the kernel limits"
            " the memory of a child process, not of a thread)"
        )
    try:
        return isolated, check_memory_limit(memory_limit, f"task {name!r}: memory_limit")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


async def run_off_loop(mq: Enqueuer, enqueue: Callable[..., Job[Any]], *args: Any, **kwargs: Any) -> Job[Any]:
    """``enqueue(*args, **kwargs)`` from a coroutine, off the loop when the store may wait on I/O.

    The call keeps the caller's context (its app context) in the executor's thread.
    """
    if not mq.blocks_on_io():
        return enqueue(*args, **kwargs)
    import asyncio  # not at the top: an app without async code never loads asyncio

    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(context.run, enqueue, *args, **kwargs)
    )


class AsyncTask(Task[P, R]):
    """The task of an ``async def`` function: ``@mq.task`` on a coroutine function makes one.

    Everything of :class:`Task` works the same (``delay``, ``options``, ``s``,
    retries, eager mode); the job's result (``Job[R]``) is what the coroutine
    returns, and calling the task returns the coroutine, as calling the
    function does. See :mod:`flask_memqueue.aio` for where its coroutine runs.

    .. versionadded:: 1.1
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:  # type: ignore[override]
        return self.func(*args, **kwargs)  # type: ignore[return-value]


class Call(Generic[R]):
    """One call of a task, not queued yet: what ``task.s(...)`` and ``task.si(...)`` make.

    Holds the task, the arguments and the call's
    :class:`~flask_memqueue.job.JobOptions`; immutable (``.options(...)``
    returns a new call). ``.delay()`` queues it on the current app's queue.

    .. code-block:: python

        call = resize.s("a.png", width=10).options(queue="images")
        job = call.delay()
    """

    __slots__ = ("task", "args", "kwargs", "job_options", "immutable")

    task: Task[..., R]
    #: The positional arguments given (in a chain, the previous result comes before them).
    args: tuple[Any, ...]
    #: The keyword arguments, read-only.
    kwargs: Mapping[str, Any]
    #: How the call is queued: the task's own options with what ``.options(...)`` changed.
    job_options: JobOptions
    #: True for ``task.si(...)``: in a chain, it ignores the previous link's result.
    immutable: bool

    def __init__(self, task: Task[..., R], args: tuple[Any, ...], kwargs: Mapping[str, Any] | None,
                 job_options: JobOptions, *, immutable: bool) -> None:
        for name, value in (("task", task), ("args", tuple(args)), ("kwargs", MappingProxyType(dict(kwargs or {}))),
                            ("job_options", job_options), ("immutable", immutable)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a call is immutable: .options(...) returns a new one, not {name}=...")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a call is immutable")

    def options(self, **changes: Unpack[JobChanges]) -> Call[R]:
        """This call with other job options (those of :meth:`Task.options`); the call itself is unchanged."""
        options = self.job_options.replace(**check_changes(changes))
        return Call(self.task, self.args, self.kwargs, options, immutable=self.immutable)

    def delay(self) -> Job[R]:
        """Queue this call on the current app's queue now; returns the Job.

        :raises TypeError: the call leaves out an argument the function needs
            (what a chain would have given it).
        """
        return _enqueuer(self.task).submit(self.task, self.args, dict(self.kwargs) or None, self.job_options)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Call):
            return NotImplemented
        return (self.task, self.args, dict(self.kwargs), self.job_options, self.immutable) == (
            other.task, other.args, dict(other.kwargs), other.job_options, other.immutable)

    __hash__ = None  # type: ignore[assignment]  # its arguments may be unhashable

    def __repr__(self) -> str:
        parts = [safe_repr(a, 200) for a in self.args] + [f"{k}={safe_repr(v, 200)}" for k, v in self.kwargs.items()]
        mine, own = self.job_options, self.task.job_options
        shown = [f"{f}={getattr(mine, f)!r}" for f in ("queue", "priority", "unique_key")
                 if getattr(mine, f) != getattr(own, f)]
        shown += [f"{f}=..." for f in ("session", "on_commit") if getattr(mine, f) is not None]
        options = f".options({', '.join(shown)})" if shown else ""
        return f"{self.task.name}.{'si' if self.immutable else 's'}({', '.join(parts)}){options}"


class TaskOptions(Generic[P, R]):
    """A task with job options: ``send_email.options(queue="urgent").delay(to)``.

    Its methods take exactly the task's parameters, as :meth:`Task.delay` does.
    """

    __slots__ = ("task", "job_options")

    def __init__(self, task: Task[P, R], job_options: JobOptions) -> None:
        self.task = task
        #: The options of the calls made through it (the task's own, with the changes).
        self.job_options = job_options

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of the task now, with these options."""
        return _enqueuer(self.task).submit(self.task, args, kwargs, self.job_options)

    def enqueue_in(self, delay: float | _dt.timedelta, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of the task ``delay`` seconds (or a timedelta) from now, with these options."""
        return _enqueuer(self.task).submit(self.task, args, kwargs, self.job_options.replace(eta=eta_in(delay)))

    def enqueue_at(self, when: _dt.datetime, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of the task at ``when`` (timezone-aware), with these options."""
        return _enqueuer(self.task).submit(self.task, args, kwargs, self.job_options.replace(eta=eta_at(when)))

    def __repr__(self) -> str:
        o = self.job_options
        key = "" if o.unique_key is None else f" unique_key={o.unique_key!r}"
        return f"<TaskOptions {self.task.name} queue={o.queue!r} priority={o.priority!r}{key}>"


class Options:
    """Job options for calls made through it: ``mq.options(queue="urgent", priority=50)``.

    Options are never passed through the job's own keyword arguments (a task
    may well have a ``queue`` or ``priority`` parameter of its own), so they
    live on this object, whose methods mirror the extension's. What it
    changes is applied to the options of each call's task.
    """

    __slots__ = ("_mq", "changes")

    def __init__(self, mq: Enqueuer, **changes: Unpack[JobChanges]) -> None:
        self._mq = mq
        #: What these calls change of their task's options (checked; no None values).
        self.changes: Mapping[str, Any] = MappingProxyType(check_changes(changes))

    @property
    def queue(self) -> str | None:
        """The queue these calls go to (None: the task's own)."""
        return self.changes.get("queue")

    @property
    def priority(self) -> int | None:
        """Their priority (None: the task's own)."""
        return self.changes.get("priority")

    @property
    def unique_key(self) -> str | None:
        """While a job with this key waits or runs, these calls return it (None: no key)."""
        return self.changes.get("unique_key")

    @property
    def session(self) -> Any:
        """Insert the job through this SQLAlchemy session or connection, in its transaction."""
        return self.changes.get("session")

    @property
    def on_commit(self) -> Any:
        """Queue the job once this SQLAlchemy session commits (dropped on rollback)."""
        return self.changes.get("on_commit")

    def _submit(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], eta: float | None) -> Job[Any]:
        task = self._mq.resolve(func)
        options = task.job_options.replace(**self.changes, eta=eta)
        return self._mq.submit(task, args, kwargs, options)

    @overload
    def enqueue(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    def enqueue(self, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` with these options (as :meth:`MemQueue.enqueue`).

        With a ``unique_key`` held by a job that waits or runs, that job is
        returned and nothing is queued.
        """
        return self._submit(func, args, kwargs, None)

    @overload
    def enqueue_in(
        self, delay: float | _dt.timedelta, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Job[R]: ...

    @overload
    def enqueue_in(self, delay: float | _dt.timedelta, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue_in(self, delay: float | _dt.timedelta, func: Any, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` to run ``delay`` seconds from now, with these options."""
        return self._submit(func, args, kwargs, eta_in(delay))

    @overload
    def enqueue_at(self, when: _dt.datetime, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    def enqueue_at(self, when: _dt.datetime, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue_at(self, when: _dt.datetime, func: Any, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` to run at ``when`` (timezone-aware), with these options."""
        return self._submit(func, args, kwargs, eta_at(when))

    def __repr__(self) -> str:
        key = "" if self.unique_key is None else f" unique_key={self.unique_key!r}"
        return f"<Options queue={self.queue!r} priority={self.priority!r}{key}>"


def default_name(func: Callable[..., Any]) -> str:
    """``module.qualname``: what a task is called unless it is given a name."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{qualname}"


__all__ = ["AsyncTask", "Call", "Enqueuer", "Options", "Task", "TaskOptions", "choose_strategy", "default_name"]
