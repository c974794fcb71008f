"""Task and handler names <-> callables.

The registry lives on the :class:`~flask_memqueue.MemQueue` object, not on an
app: ``@mq.task`` runs at import time, before any app exists, and every app
that ``init_app`` binds sees the same tasks (as Flask-SQLAlchemy's models are
shared by every app).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from .exceptions import ConfigurationError, UnknownTaskError, UnknownTopicError

if TYPE_CHECKING:
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

#: Name prefix of the tasks that deliver messages to handlers.
MESSAGE_PREFIX = "message:"


class Enqueuer(Protocol):
    """What a task needs of the extension that registered it: to queue a call."""

    def enqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> Job: ...


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
        self._mq = mq
        functools.update_wrapper(self, func)

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

    def retry_in(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt number ``attempt``."""
        return self.retry_delay * self.retry_backoff ** max(0, attempt - 1)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


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
        self._by_func: dict[Any, Task[..., Any]] = {}
        self._adhoc: dict[Any, Task[..., Any]] = {}
        self.handlers: dict[str | None, Task[..., Any]] = {}

    def add_task(self, task: Task[..., Any]) -> None:
        old = self.tasks.get(task.name)
        if old is not None and old.func is not task.func:
            raise ConfigurationError(
                f"a task named {task.name!r} is registered already ({old.func!r});"
                " give one of them another name with @mq.task(name=...)"
            )
        self.tasks[task.name] = task
        self._by_func[task.func] = task

    def add_handler(self, task: Task[..., Any]) -> None:
        old = self.handlers.get(task.topic)
        if old is not None and old.func is not task.func:
            which = "the default topic" if task.topic is None else f"topic {task.topic!r}"
            raise ConfigurationError(f"a handler for {which} is registered already ({old.func!r})")
        self.handlers[task.topic] = task
        self.tasks[task.name] = task

    def resolve(self, target: Any) -> Task[..., Any]:
        """The Task for a Task, a registered name, or any callable.

        On the enqueue hot path: the common cases are one dict lookup each,
        and no exception is raised and caught on the way.
        """
        try:
            task = self._by_func.get(target) or self._adhoc.get(target)
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
                self._adhoc.clear()
            self._adhoc[target] = task
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
