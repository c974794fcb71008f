"""Task and handler names <-> callables.

The registry lives on the :class:`~flask_memqueue.MemQueue` object, not on an
app: ``@mq.task`` runs at import time, before any app exists, and every app
that ``init_app`` binds sees the same tasks (as Flask-SQLAlchemy's models are
shared by every app). The tasks themselves, and the ways to call them, are
:mod:`flask_memqueue.task`'s.
"""

from __future__ import annotations

import os
from typing import Any

from .exceptions import ConfigurationError, UnknownTaskError, UnknownTopicError
from .options import eta_at, eta_in
from .task import Call, Enqueuer, Options, Task, TaskOptions, default_name

#: Name prefix of the tasks that deliver messages to handlers.
MESSAGE_PREFIX = "message:"


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
        # Stand-in tasks for names this process does not know, one per name.
        self._missing: dict[str, Task[..., Any]] = {}

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

    def task_named(self, name: str) -> Task[..., Any]:
        """The task registered as ``name`` (what a store finds a record's task by); for a
        name this process does not know, a stand-in whose job fails saying which module to import."""
        task = self.tasks.get(name)
        if task is None:
            task = self._missing.get(name)
            if task is None:
                task = self._missing[name] = missing_task(name)
        return task

    def handler(self, topic: str | None) -> Task[..., Any]:
        try:
            return self.handlers[topic]
        except KeyError:
            which = "the default topic" if topic is None else f"topic {topic!r}"
            hint = "@mq.handler" if topic is None else f"@mq.handler({topic!r})"
            raise UnknownTopicError(f"no message handler for {which}; register one with {hint}") from None


__all__ = [  # Task, Options, TaskOptions, eta_in and eta_at were defined here before flask_memqueue.task
    "MESSAGE_PREFIX", "Call", "Enqueuer", "Options", "Registry", "Task", "TaskOptions", "default_name", "eta_at",
    "eta_in", "message_task_name", "missing_task",
]
