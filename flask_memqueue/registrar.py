"""What the extension registers at import time, before any app exists: tasks, handlers, hooks.

:class:`Registrar` is the base of :class:`~flask_memqueue.MemQueue` (as
Flask's ``Scaffold`` is the base of ``Flask`` and ``Blueprint``): the
decorators ``@mq.task``, ``@mq.periodic`` and ``@mq.handler``, and
``mq.add_hook``. What they register lives in a
:class:`~flask_memqueue.registry.Registry` and a
:class:`~flask_memqueue.hooks.Hooks`, shared by every app the extension binds.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import warnings
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from .exceptions import ConfigurationError, LimitError, MainModuleTaskWarning, ScheduleError
from .hooks import Hook, Hooks
from .registry import Registry, message_task_name
from .task import AsyncTask, Enqueuer, Task, default_name, is_coroutine_function

if TYPE_CHECKING:
    from flask import Flask

    from .options import JobOptions
    from .state import AppQueue

P = ParamSpec("P")
R = TypeVar("R")


class _Decorator(Protocol):
    """What ``@mq.task(...)`` returns: a decorator that keeps the function's signature."""

    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


class Registrar:
    """The import-time half of the extension: it registers tasks, handlers and hooks."""

    def __init__(self) -> None:
        #: Tasks and message handlers, shared by every app this binds.
        self.registry = Registry()
        #: The hooks around each job (:mod:`flask_memqueue.hooks`), shared by every app this binds.
        self.hooks = Hooks()
        # The queues of the apps this binds (weakly: an app may go away).
        self._queues: weakref.WeakSet[AppQueue] = weakref.WeakSet()

    @property
    def _enqueuer(self) -> Enqueuer:
        """What the tasks registered here queue their calls through: the extension, this class's subclass."""
        return cast(Enqueuer, self)

    def add_hook(self, hook: Hook) -> Hook:
        """Install ``hook`` (a :class:`~flask_memqueue.hooks.Hook`) around the jobs of every app
        this binds, after those installed before it; returns it.

        .. versionadded:: 1.1
        """
        self.hooks.add(hook)
        return hook

    def _use_time_limits(self) -> None:
        """Install the time-limit hook once some task, call or app sets a limit (not before:
        without hooks a job takes the consumer's hook-free path)."""
        if getattr(self, "_time_limits", None) is None:
            from .runtime.limits import TimeLimits

            self._time_limits = TimeLimits()
            self.hooks.add(self._time_limits)

    def _use_isolation(self) -> None:
        """Install the hook that runs a call's ``.options(isolated=True)`` in a child process, once
        some task is isolated or a call asks (not before: the hook-free path stays for the others)."""
        if getattr(self, "_isolation", None) is None:
            from .runtime.children import Isolation

            self._isolation = Isolation()
            self.hooks.add(self._isolation)

    def _bind_isolation(self, app: Flask, children: Any, explicit: str | None) -> None:
        """``init_app``: where an isolated job's child finds the app (found on the stack now:
        :func:`~flask_memqueue.runtime.appref.find_app_ref`); with ``MEMQUEUE_ISOLATION_APP``, the hook too."""
        from .runtime.appref import find_app_ref

        children.app_ref = find_app_ref(app, explicit)
        if explicit is not None:
            self._use_isolation()

    def _call_options(self, task: Task[..., Any], options: JobOptions) -> None:
        """A call's ``time_limit=``, ``isolated=`` or ``memory_limit=``: install the hook each needs; refuse
        a memory limit on a call that runs in a thread."""
        if options.time_limit is not None:
            self._use_time_limits()
        isolated = options.isolated if options.isolated is not None else task.isolated
        if options.memory_limit is not None and not isolated:
            raise ValueError(f"options(memory_limit=...) of task {task.name!r} needs isolated=True (the kernel limits"
                             " the memory of a child process, not of a thread)")
        if options.isolated:
            self._use_isolation()

    # -- registration --------------------------------------------------------------
    @overload
    def task(self, func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        queue: str = "default",
        priority: int = 0,
        time_limit: float | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[..., Any] | str | None = None,
        rate_limit: str | None = None,
        rate_limit_key: Callable[..., Any] | str | None = None,
        isolated: bool = False,
        memory_limit: int | str | None = None,
    ) -> _Decorator: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None, retries: int = 0, retry_delay: float = 1.0, retry_backoff: float = 2.0,
        queue: str = "default", priority: int = 0, time_limit: float | None = None,
        concurrency: int | None = None, concurrency_key: Callable[..., Any] | str | None = None,
        rate_limit: str | None = None, rate_limit_key: Callable[..., Any] | str | None = None,
        isolated: bool = False, memory_limit: int | str | None = None,
    ) -> Any:
        """Register a function as a task: ``@mq.task`` or ``@mq.task(retries=3, ...)``.

        :param name: what the task is called in job records and when enqueued
            by name; defaults to ``module.qualname``.
        :param retries: how many times a failing job is tried again.
        :param retry_delay: seconds before the first retry.
        :param retry_backoff: each further retry waits this many times longer.
        :param queue: the named queue its jobs wait in (``MEMQUEUE_QUEUES`` declares
            the queues and their threads); a call may choose another with
            :meth:`Task.options <flask_memqueue.Task.options>`.
        :param priority: -100..100, higher runs first within its queue.
        :param time_limit: seconds a job of the task may run; then
            :class:`~flask_memqueue.TimeLimitExceeded` is raised in it (see :doc:`/limits`);
            for an ``async def`` function, its coroutine is cancelled instead (see :doc:`/async`).
            None: ``MEMQUEUE_TIME_LIMIT`` (none by default). For an isolated task the child
            process is killed at the limit (SIGTERM, then SIGKILL after ``MEMQUEUE_GRACE_PERIOD``).
        :param concurrency: at most this many of its jobs run at once, across every process
            that shares the store (per key with ``concurrency_key``; see :doc:`/limits`).
        :param concurrency_key: an argument's name, or a callable of the job's arguments:
            at most ``concurrency`` jobs per value run at once.
        :param rate_limit: ``"N/s"``, ``"N/m"`` or ``"N/h"``: at most N jobs start per second,
            minute or hour (fixed windows); ``rate_limit_key`` as ``concurrency_key``.
        :param isolated: run each job in a child process that rebuilt the app (see :doc:`/limits`):
            a crash, a segfault or an out-of-memory kill fails the job, not the process; arguments
            and result cross as JSON.
        :param memory_limit: with ``isolated=True``, the bytes of address space its child may use
            (RLIMIT_AS): an int, or ``"512M"``, ``"1G"``.
        :raises LimitError: a limit that cannot work (names the task and the value).
        :raises ConfigurationError: a bad option (the message names the task and the value).
        :raises TypeError: a name given positionally (``@mq.task("resize")``), or not a string.

        An ``async def`` function makes an :class:`~flask_memqueue.task.AsyncTask`:
        its jobs run the coroutine on the consumer thread's event loop (:doc:`/async`).
        """
        _check_task_call(func, name)

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            fn = fn.func if isinstance(fn, Task) else fn
            return self._register_task(
                fn, name or default_name(fn), named=name is not None, retries=retries, retry_delay=retry_delay,
                retry_backoff=retry_backoff, queue=queue, priority=priority, time_limit=time_limit,
                concurrency=concurrency, concurrency_key=concurrency_key, rate_limit=rate_limit,
                rate_limit_key=rate_limit_key, isolated=isolated, memory_limit=memory_limit,
            )

        if func is not None:
            return register(func)
        return register

    def periodic(
        self,
        cron: str | None = None,
        /,
        *,
        every: _dt.timedelta | float | None = None,
        timezone: str | None = None,
        catch_up: bool = True,
        name: str | None = None, retries: int = 0, retry_delay: float = 1.0, retry_backoff: float = 2.0,
        queue: str = "default", priority: int = 0, time_limit: float | None = None,
        concurrency: int | None = None, rate_limit: str | None = None,
        isolated: bool = False, memory_limit: int | str | None = None,
    ) -> _Decorator:
        """Register a task that runs on a schedule: ``@mq.periodic("*/10 * * * *")``
        or ``@mq.periodic(every=timedelta(seconds=30))``.

        Exactly one job per tick is queued across every process that shares the
        store (with a memory store: across the app's processes on the host, one
        of which holds the schedule through a lock in the instance folder); see
        :doc:`/periodic`. The function is called with no arguments; it is also a
        normal task (call it, or ``.delay()`` it). Other options are those of
        :meth:`task`.

        :param cron: a cron expression (five fields, or a shortcut such as
            ``"@daily"``; needs the ``cron`` extra: see "Installing" in the quickstart).
        :param every: an interval (a timedelta or seconds); ticks lie on the
            grid of its multiples since the Unix epoch.
        :param timezone: the IANA time zone of a cron expression (default
            ``MEMQUEUE_TIMEZONE``, itself ``"UTC"`` by default).
        :param catch_up: when the schedule comes back after every process was
            down over a tick, run once for the latest missed tick (never more);
            False waits for the next tick.
        :raises ScheduleError: an invalid cron expression or interval, an
            unknown time zone, cron without the extra, or a function that needs
            arguments (the message names the task); also a bare ``@mq.periodic``
            without parentheses, which has no schedule to run on.

        .. versionadded:: 1.1
        """
        _refuse_bare_periodic(cron)
        _check_name(name)

        from .schedule import make_periodic  # imported by the apps that have periodic tasks only

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            if isinstance(fn, Task):
                fn = fn.func
            task_name = name or default_name(fn)
            spec = make_periodic(task_name, cron, every, timezone, catch_up)
            _check_no_arguments(fn, task_name)
            return self._register_task(
                fn, task_name, named=name is not None, retries=retries, retry_delay=retry_delay,
                retry_backoff=retry_backoff, queue=queue, priority=priority, periodic=spec, time_limit=time_limit,
                concurrency=concurrency, rate_limit=rate_limit,
                isolated=isolated, memory_limit=memory_limit,
            )

        return register  # type: ignore[return-value]  # register keeps the signature: Task(fn)

    def _register_task(self, fn: Callable[..., Any], task_name: str, *, named: bool, **options: Any) -> Task[..., Any]:
        """Make and register the Task of ``@mq.task`` and ``@mq.periodic``; warn about a
        ``__main__`` task (unless ``named``) where a store other processes share reads it by name."""
        cls = AsyncTask if is_coroutine_function(fn) else Task
        task: Task[..., Any] = cls(fn, task_name, mq=self._enqueuer, **options)
        if task.limits is not None:  # an app bound already whose store cannot check it
            for q in self._queues:
                if not q.storage.capabilities.limits:
                    raise unlimited_store(q.storage_url, [task.name])
        self.registry.add_task(task)
        if task.time_limit is not None:
            self._use_time_limits()
        if task.limits is not None and task.limits.keyed and getattr(self, "_limit_keys", None) is None:
            from .joblimits import LimitKeys  # a hook only once a task's limit is per key

            self._limit_keys = LimitKeys()
            self.hooks.add(self._limit_keys)
        if task.isolated:
            self._use_isolation()
        shared = any(q.storage.capabilities.shared for q in self._queues)
        if not named and task.name.startswith("__main__.") and shared:
            warn_main_module([task.name])
        return task

    @overload
    def handler(self, topic: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def handler(
        self,
        topic: str | None = None,
        /,
        *,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        queue: str = "default",
        priority: int = 0,
        amqp_queue: str | None = None,
    ) -> _Decorator: ...

    def handler(self, topic: str | Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register the function that receives messages (``POST /produce``, :meth:`produce`).

        ``@mq.handler`` takes messages without a topic; ``@mq.handler("orders")``
        those of one topic. Options are those of :meth:`task` (``retries``,
        ``queue``, ``priority``...), and ``amqp_queue``: with
        ``MEMQUEUE_AMQP_URL``, the RabbitMQ queue this handler consumes (and
        ``produce`` publishes to), instead of the configured prefix and the
        topic (see :doc:`amqp`).

        :raises TypeError: the function cannot take one argument (the message),
            or the topic was given as a keyword.
        """
        if callable(topic):
            return self.handler(None)(topic)
        if "topic" in options:
            raise TypeError(f"a handler's topic comes first, not as a keyword: @mq.handler({options['topic']!r})")
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise TypeError(f"a handler's topic must be a non-empty string or None, not {topic!r}")
        unknown = set(options) - {"retries", "retry_delay", "retry_backoff", "queue", "priority", "amqp_queue"}
        if unknown:
            raise TypeError(f"unknown handler option(s): {', '.join(sorted(unknown))}")
        amqp_queue = options.pop("amqp_queue", None)
        if amqp_queue is not None:
            from .amqp import check_queue_name

            check_queue_name(amqp_queue, "amqp_queue")

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            task: Task[..., Any] = Task(fn, message_task_name(topic), topic=topic, mq=self._enqueuer, **options)
            try:  # else every message would fail in the consumer
                task.check_call((None,), None)
            except TypeError:
                raise TypeError(
                    f"a message handler is called with one argument, the message; {default_name(fn)} cannot"
                    " take one (def on_order(message): ...)"
                ) from None
            task.amqp_queue = amqp_queue
            self.registry.add_handler(task)
            return task

        return register


def warn_main_module(names: list[str]) -> None:
    """Tasks of a script run as ``__main__`` cannot be found by name in another process."""
    warnings.warn(
        f"task(s) {', '.join(sorted(names))} were defined in a script run as __main__ and this app"
        " has a store other processes share (MEMQUEUE_STORAGE): another process (flask memqueue worker, a restarted"
        " app) reads jobs by task name and cannot import '__main__.*'. Move the tasks into an"
        " importable module, or give each a name (@mq.task(name='resize')) that the worker's"
        " imports register too.",
        MainModuleTaskWarning,
        stacklevel=3,
    )


def unlimited_store(url: str, tasks: list[str]) -> LimitError:
    """The error of a task with a rate or concurrency limit on a store that cannot check it."""
    return LimitError(
        f"task(s) {', '.join(sorted(tasks))} have a rate or concurrency limit, which the store {url} cannot"
        " check (it does not declare capabilities.limits); use the memory store, the SQLite journal, Redis"
        " or PostgreSQL (see docs/limits.md), or drop the limit"
    )


def refuse_unchecked_limits(registry: Registry, queue: AppQueue) -> None:
    """At ``init_app``: tasks with a limit, and a store that cannot check it (it is closed then)."""
    limited = [t.name for t in registry.tasks.values() if t.limits is not None]
    if limited and not queue.storage.capabilities.limits:
        queue.storage.close()
        raise unlimited_store(queue.storage_url, limited)


def _check_no_arguments(func: Callable[..., Any], name: str) -> None:
    """A periodic task is called with no arguments: refuse a function that needs some."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let it fail at run time
        return
    required = [
        p.name for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ScheduleError(
            f"periodic task {name!r}: its schedule calls it with no arguments, but {', '.join(required)}"
            " has no default; give it a default, or read what it needs inside the function"
        )


def _check_task_call(func: object, name: object) -> None:
    """``@mq.task``'s arguments: a name given positionally, or one that is not a name."""
    if isinstance(func, str):  # else the string would become the "function" of a task
        raise TypeError(f"@mq.task takes a task's name as a keyword: @mq.task(name={func!r})")
    _check_name(name)


def _check_name(name: object) -> None:
    """A task's ``name=`` is what stores, workers and other processes find it by: text, not
    blank (``name=""`` silently fell back to the module path, ``name=5`` became ``"5"``)."""
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"a task's name is a string, like name='resize', not {name!r}")
    if not name.strip():
        raise ConfigurationError(f"a task's name is not blank: give one, like name='resize', or leave name out"
                                 f" (then it is module.function), not {name!r}")


def _refuse_bare_periodic(cron: object) -> None:
    """Raise for ``@mq.periodic`` on a function: it has no schedule, and the name would be rebound."""
    if callable(cron):
        raise ScheduleError(
            f"@mq.periodic needs a schedule, in parentheses: @mq.periodic('*/10 * * * *') or"
            f" @mq.periodic(every=timedelta(seconds=30)); {default_name(cron)} was not registered"
            " (for a task that runs only when called, use @mq.task)"
        )
