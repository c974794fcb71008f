"""Task and handler names <-> callables.

The registry lives on the :class:`~flask_memqueue.MemQueue` object, not on an
app: ``@mq.task`` runs at import time, before any app exists, and every app
that ``init_app`` binds sees the same tasks (as Flask-SQLAlchemy's models are
shared by every app).
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import math
import os
import sys
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .exceptions import ConfigurationError, UnknownTaskError, UnknownTopicError
from .job import DEFAULT_QUEUE, JobOptions, check_priority, check_queue_name, check_unique_key, job_options

if TYPE_CHECKING:
    from .job import Job
    from .schedule import Periodic

P = ParamSpec("P")
R = TypeVar("R")

#: Name prefix of the tasks that deliver messages to handlers.
MESSAGE_PREFIX = "message:"


class Enqueuer(Protocol):
    """What a task needs of the extension that registered it: to queue a call."""

    def enqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> Job: ...

    def submit(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        *,
        eta: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        session: Any = None,
        on_commit: Any = None,
    ) -> Job: ...


def eta_in(delay: float | _dt.timedelta) -> float:
    """The Unix time ``delay`` seconds (or a timedelta) from now, for ``enqueue_in``."""
    seconds = delay.total_seconds() if isinstance(delay, _dt.timedelta) else delay
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        raise TypeError(f"delay must be a number of seconds or a timedelta, not {delay!r}")
    if seconds < 0:
        raise ValueError(f"delay must not be negative, not {delay!r}")
    return time.time() + seconds


def eta_at(when: _dt.datetime) -> float:
    """The Unix time of ``when``, a timezone-aware datetime, for ``enqueue_at``."""
    if not isinstance(when, _dt.datetime):
        raise TypeError(f"when must be a datetime, not {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            "when must be timezone-aware, e.g. datetime.now(timezone.utc) + timedelta(minutes=5);"
            f" got the naive {when!r}"
        )
    return when.timestamp()


class Options:
    """Job options for calls made through it: ``mq.options(queue="urgent", priority=50)``.

    Options are never passed through the job's own keyword arguments (a task
    may well have a ``queue`` or ``priority`` parameter of its own), so they
    live on this object, whose methods mirror the extension's.
    """

    __slots__ = ("_mq", "queue", "priority", "unique_key", "session", "on_commit")

    def __init__(
        self, mq: Enqueuer, *, queue: str | None = None, priority: int | None = None, unique_key: str | None = None,
        session: Any = None, on_commit: Any = None,
    ) -> None:
        self._mq = mq
        #: The queue these calls go to (None: the task's own).
        self.queue = None if queue is None else check_queue_name(queue, "options(queue=...)")
        #: Their priority (None: the task's own).
        self.priority = None if priority is None else check_priority(priority, "options(priority=...)")
        #: While a job with this key waits or runs, these calls return it instead of
        #: queueing another (None: no key).
        self.unique_key = None if unique_key is None else check_unique_key(unique_key, "options(unique_key=...)")
        if session is not None and on_commit is not None:
            raise ValueError("options(session=..., on_commit=...): give one; session= inserts the job in your"
                             " transaction (a store in that database), on_commit= queues it after the commit"
                             " (any store)")
        if on_commit is not None and self.unique_key is not None:
            raise ValueError("options(on_commit=..., unique_key=...): a deferred job cannot return the holder of"
                             " its key (the store is asked only at the commit); use session= with a store in your"
                             " database, or no key")
        #: Insert the job through this SQLAlchemy session or connection, in its transaction.
        self.session = session
        #: Queue the job once this SQLAlchemy session commits (dropped on rollback).
        self.on_commit = on_commit

    def _submit(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], eta: float | None) -> Job[Any]:
        if self.session is None and self.on_commit is None:
            return self._mq.submit(
                func, args, kwargs, eta=eta, queue=self.queue, priority=self.priority, unique_key=self.unique_key
            )
        return self._mq.submit(
            func, args, kwargs, eta=eta, queue=self.queue, priority=self.priority, unique_key=self.unique_key,
            session=self.session, on_commit=self.on_commit,
        )

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


class TaskOptions(Generic[P, R]):
    """A task with job options: ``send_email.options(queue="urgent").delay(to)``.

    Its methods take exactly the task's parameters, as :meth:`Task.delay` does.
    """

    __slots__ = ("task", "options")

    def __init__(self, task: Task[P, R], options: Options) -> None:
        self.task = task
        self.options = options

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of the task now, with these options."""
        return self.options.enqueue(self.task, *args, **kwargs)

    def enqueue_in(self, delay: float | _dt.timedelta, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of the task ``delay`` seconds (or a timedelta) from now, with these options."""
        return self.options.enqueue_in(delay, self.task, *args, **kwargs)

    def enqueue_at(self, when: _dt.datetime, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a call of the task at ``when`` (timezone-aware), with these options."""
        return self.options.enqueue_at(when, self.task, *args, **kwargs)

    def __repr__(self) -> str:
        key = "" if self.options.unique_key is None else f" unique_key={self.options.unique_key!r}"
        return f"<TaskOptions {self.task.name} queue={self.options.queue!r} priority={self.options.priority!r}{key}>"


class Task(Generic[P, R]):
    """A function registered with ``@mq.task`` (or a handler with ``@mq.handler``).

    Calling the task calls the function right here, synchronously, as if it
    were not decorated. ``task.delay(...)`` queues it instead.
    """

    #: True for the stand-in of a task name this process does not know (a job
    #: stored by another process): its job fails saying which module to import.
    missing = False

    #: For a message handler with ``MEMQUEUE_AMQP_URL``: the RabbitMQ queue it
    #: consumes, given as ``@mq.handler(topic, amqp_queue=...)`` (None: the
    #: configured prefix and its topic; see :mod:`flask_memqueue.amqp`).
    amqp_queue: str | None = None

    def __init__(
        self,
        func: Callable[P, R],
        name: str,
        *,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        topic: str | None = None,
        mq: Enqueuer | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        periodic: Periodic | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"a task must be callable, not {func!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"task {name!r}: retries must be an int >= 0, not {retries!r}")
        for label, value in (("retry_delay", retry_delay), ("retry_backoff", retry_backoff)):
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigurationError(f"task {name!r}: {label} must be a number >= 0, not {value!r}")
        if retry_backoff < 1:
            raise ConfigurationError(f"task {name!r}: retry_backoff must be >= 1, not {retry_backoff!r}")
        try:
            check_queue_name(queue, f"task {name!r}: queue")
            check_priority(priority, f"task {name!r}: priority")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
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
        #: What its jobs are queued with unless a call says otherwise: one object
        #: shared by all of them (:class:`~flask_memqueue.job.JobOptions`);
        #: :attr:`queue` and :attr:`priority` read it.
        self.job_options: JobOptions = job_options(queue, priority)
        #: For a task registered with ``@mq.periodic``: its schedule, time zone
        #: and catch-up rule; None for other tasks.
        self.periodic = periodic
        self._mq = mq
        #: A call with positional arguments only binds to the function when their
        #: count lies in ``min_args..max_args``: the enqueue path tests that
        #: inline and calls :meth:`check_call` otherwise. An empty range until
        #: the first call compiles the check (most ad-hoc callables never pay).
        self.min_args = 1
        self.max_args = 0
        self._call_spec: _CallSpec | None = None
        # functools.update_wrapper(self, func), without reading self.__dict__ (which makes
        # CPython 3.11 keep the attributes in a real dict: every read of one then costs
        # about 330 instructions instead of 60, and enqueue reads three). A function with
        # attributes of its own (rare) still has them copied, as update_wrapper does.
        functools.update_wrapper(self, func, updated=())
        extra = getattr(func, "__dict__", None)
        if extra:
            vars(self).update(extra)

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
        if self._mq is None:
            raise RuntimeError(f"task {self.name!r} is not registered on a MemQueue")
        return self._mq.enqueue(self, *args, **kwargs)

    def options(
        self, *, queue: str | None = None, priority: int | None = None, unique_key: str | None = None,
        session: Any = None, on_commit: Any = None,
    ) -> TaskOptions[P, R]:
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
        if self._mq is None:
            raise RuntimeError(f"task {self.name!r} is not registered on a MemQueue")
        return TaskOptions(self, Options(self._mq, queue=queue, priority=priority, unique_key=unique_key,
                                         session=session, on_commit=on_commit))

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
            spec = self._call_spec = _CallSpec.of(self.func)
            self.min_args, self.max_args = spec.min_args, spec.max_args
        if not kwargs:
            if spec.min_args <= len(args) <= spec.max_args:
                return
        else:
            shape = (len(args), *kwargs)  # a call's keywords come in few layouts: remember those that fit
            good = spec.good_shapes
            if shape in good:
                return
            if spec.fits(args, kwargs):
                if len(good) >= _CallSpec.SHAPES:
                    good.clear()
                good.add(shape)
                return
        try:  # Python's own words for what is wrong; the test above only ever refuses too much
            signature = inspect.signature(self.func, follow_wrapped=False)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(*args, **(kwargs or {}))
        except TypeError as exc:
            bare = signature.replace(  # the parameters as a call spells them, without annotations
                parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            raise TypeError(
                f"task {self.name!r} cannot be called with these arguments: {exc}. It takes"
                f" {getattr(self.func, '__name__', None) or self.name}{bare}; nothing was queued"
            ) from None

    def retry_in(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt number ``attempt``."""
        return self.retry_delay * self.retry_backoff ** max(0, attempt - 1)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class _CallSpec:
    """What calls a function takes, precompiled from its signature for :meth:`Task.check_call`.

    :meth:`fits` may refuse a call the function would take (then
    ``Signature.bind`` decides, so nothing valid is ever refused), never the
    reverse. The signature is the function's own (``follow_wrapped=False``):
    a decorator that changes what its wrapper takes is judged by the wrapper.
    """

    __slots__ = ("min_args", "max_args", "positional", "positions", "posonly", "kwonly", "required_kwonly", "varkw",
                 "_required", "good_shapes")

    #: How many keyword layouts that fit are remembered (then forgotten all at once).
    SHAPES = 64

    def __init__(
        self,
        positional: tuple[str, ...],
        required: int,
        posonly: int,
        varargs: bool,
        kwonly: frozenset[str],
        required_kwonly: frozenset[str],
        varkw: bool,
    ) -> None:
        #: Positional counts a call without keywords may have (an empty range when
        #: a keyword-only argument is required: every call takes the slow test).
        self.max_args = sys.maxsize if varargs else len(positional)
        self.min_args = required if not required_kwonly else self.max_args + 1
        #: Index of each positional parameter; the first ``posonly`` take no keyword.
        self.positional = positional
        self.positions = {name: i for i, name in enumerate(positional)}
        self.posonly = posonly
        self.kwonly = kwonly
        self.required_kwonly = required_kwonly
        self.varkw = varkw
        self._required = required  # positional parameters without a default: the first ones
        #: ``(number of positional arguments, *keyword names)`` of calls that fit.
        self.good_shapes: set[tuple[Any, ...]] = set()

    @classmethod
    def of(cls, func: Callable[..., Any]) -> _CallSpec:
        """The spec of ``func``: from its code object for a plain function (about 1 µs),
        else from :func:`inspect.signature`; one that takes anything if neither says."""
        if type(func) is types.FunctionType and "__signature__" not in func.__dict__:
            code = func.__code__
            n, nkw = code.co_argcount, code.co_kwonlyargcount
            names = code.co_varnames
            kwdefaults = func.__kwdefaults__ or {}
            kwonly = names[n:n + nkw]
            return cls(names[:n], n - len(func.__defaults__ or ()), code.co_posonlyargcount,
                       bool(code.co_flags & inspect.CO_VARARGS), frozenset(kwonly),
                       frozenset(k for k in kwonly if k not in kwdefaults),
                       bool(code.co_flags & inspect.CO_VARKEYWORDS))
        try:
            params = list(inspect.signature(func, follow_wrapped=False).parameters.values())
        except (TypeError, ValueError):  # no signature to read: take anything
            return cls((), 0, 0, True, frozenset(), frozenset(), True)
        P_ = inspect.Parameter
        positional = [p for p in params if p.kind in (P_.POSITIONAL_ONLY, P_.POSITIONAL_OR_KEYWORD)]
        kwonly_params = [p for p in params if p.kind is P_.KEYWORD_ONLY]
        return cls(
            tuple(p.name for p in positional),
            sum(1 for p in positional if p.default is P_.empty),
            sum(1 for p in positional if p.kind is P_.POSITIONAL_ONLY),
            any(p.kind is P_.VAR_POSITIONAL for p in params),
            frozenset(p.name for p in kwonly_params),
            frozenset(p.name for p in kwonly_params if p.default is P_.empty),
            any(p.kind is P_.VAR_KEYWORD for p in params),
        )

    def fits(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """True if ``func(*args, **kwargs)`` binds (False may also mean "ask bind")."""
        n = len(args)
        if n > self.max_args:
            return False
        positions = self.positions
        for key in kwargs:
            i = positions.get(key)
            if i is None or i < self.posonly:  # not a positional name, or one that takes no keyword
                if key not in self.kwonly and not self.varkw:
                    return False
            elif i < n:  # also given positionally
                return False
        if n < self._required:
            by_name = self.positional[max(n, self.posonly):self._required]
            if n < self.posonly or any(name not in kwargs for name in by_name):
                return False
        return all(name in kwargs for name in self.required_kwonly)


def default_name(func: Callable[..., Any]) -> str:
    """``module.qualname``: what a task is called unless it is given a name."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{qualname}"


def missing_task(name: str) -> Task[..., Any]:
    """A stand-in for a task name this process does not know: its jobs fail, saying why."""

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise UnknownTaskError(
            f"no task named {name!r} is registered in process {os.getpid()}: import the module that"
            " defines it in every process that shares the store (flask memqueue worker included)"
        )

    task: Task[..., Any] = Task(missing, name)
    task.missing = True
    return task


def message_task_name(topic: str | None) -> str:
    return MESSAGE_PREFIX + (topic if topic is not None else "")


class Registry:
    """Tasks by name and by function, and message handlers by topic."""

    #: Unregistered functions passed to ``enqueue`` get a Task made for them;
    #: this many are cached before the cache is cleared (lambdas would grow it).
    ADHOC_CACHE = 1024

    def __init__(self) -> None:
        self.tasks: dict[str, Task[..., Any]] = {}
        self._adhoc: dict[Any, Task[..., Any]] = {}
        #: What :meth:`resolve` answers without a name, in one lookup: every registered
        #: function and Task, and the cached ad hoc tasks of unregistered callables.
        #: Read it (``known.get(func)``) on a hot path; only this class writes it.
        self.known: dict[Any, Task[..., Any]] = {}
        self.handlers: dict[str | None, Task[..., Any]] = {}
        #: The periodic tasks (``@mq.periodic``) by name: what the scheduler runs.
        self.periodic: dict[str, Task[..., Any]] = {}
        #: Bumped by every registration: a reader caching something derived from
        #: the tasks (the queues they name) knows when to read them again.
        self.version = 0

    def add_task(self, task: Task[..., Any]) -> None:
        old = self.tasks.get(task.name)
        if old is not None and old.func is not task.func:
            raise ConfigurationError(
                f"a task named {task.name!r} is registered already ({old.func!r});"
                " give one of them another name with @mq.task(name=...)"
            )
        self.tasks[task.name] = task
        self.known[task.func] = task
        self.known[task] = task
        self.version += 1
        if task.periodic is not None:
            self.periodic[task.name] = task
        else:
            self.periodic.pop(task.name, None)

    def add_handler(self, task: Task[..., Any]) -> None:
        old = self.handlers.get(task.topic)
        if old is not None and old.func is not task.func:
            which = "the default topic" if task.topic is None else f"topic {task.topic!r}"
            raise ConfigurationError(f"a handler for {which} is registered already ({old.func!r})")
        self.handlers[task.topic] = task
        self.tasks[task.name] = task
        self.version += 1

    def resolve(self, target: Any) -> Task[..., Any]:
        """The Task for a Task, a registered name, or any callable.

        On the enqueue hot path: a function or Task seen before is one dict
        lookup (:attr:`known`), and no exception is raised and caught on the way.
        """
        try:
            task = self.known.get(target)
        except TypeError:  # unhashable callable
            task = None
        if task is not None:
            return task
        if isinstance(target, Task):
            return target
        if isinstance(target, str):
            named = self.tasks.get(target)
            if named is None:
                raise UnknownTaskError(
                    f"no task is registered as {target!r}; known tasks: "
                    + (", ".join(sorted(self.tasks)) or "none")
                )
            return named
        if not callable(target):
            raise TypeError(f"enqueue() needs a task, a task name or a callable, not {target!r}")
        task = Task(target, default_name(target))
        try:
            if len(self._adhoc) >= self.ADHOC_CACHE:
                for func, adhoc in self._adhoc.items():
                    if self.known.get(func) is adhoc:
                        del self.known[func]
                self._adhoc.clear()
            self._adhoc[target] = task
            self.known[target] = task
        except TypeError:  # unhashable callable
            pass
        return task

    def handler(self, topic: str | None) -> Task[..., Any]:
        try:
            return self.handlers[topic]
        except KeyError:
            which = "the default topic" if topic is None else f"topic {topic!r}"
            hint = "@mq.handler" if topic is None else f"@mq.handler({topic!r})"
            raise UnknownTopicError(f"no message handler for {which}; register one with {hint}") from None
