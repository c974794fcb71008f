"""flask-memqueue: background jobs for Flask, in the same process, with no broker.

The names below are imported on first use (PEP 562), so importing the package
alone costs nothing: pytest loads :mod:`flask_memqueue.pytest_plugin` (and so
this package) in every test run of an environment where it is installed, and
that must not import Flask for projects that do not use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .consumer import current_job
    from .exceptions import (
        BrokerError,
        BrokerUnavailable,
        ChildProcessDied,
        ConfigurationError,
        DeadLetterNotFound,
        DependencyError,
        IsolatedJobError,
        IsolationError,
        JobAborted,
        JobFailed,
        LimitError,
        MainModuleTaskWarning,
        MemQueueConfigWarning,
        MemQueueError,
        MemQueueWarning,
        QueueClosed,
        QueueFull,
        StorageError,
        StorageRefused,
        TimeLimitExceeded,
        UnknownQueueError,
        UnknownTaskError,
        UnknownTopicError,
        WorkflowsUnsupported,
    )
    from .extension import MemQueue, enqueue
    from .hooks import Hook
    from .job import Job, JobStatus
    from .signals import job_cancelled, job_enqueued, job_failed, job_retrying, job_started, job_succeeded
    from .storage import JournalError, PostgresUnavailable, RedisUnavailable, SchemaError  # defined by their backends
    from .task import Call, Options, Task, TaskOptions
    from .workflows import Chain, Chord, Group, GroupCall

__version__ = "1.0.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "current_job": "consumer",
    "BrokerError": "exceptions",
    "BrokerUnavailable": "exceptions",
    "ConfigurationError": "exceptions",
    "DeadLetterNotFound": "exceptions",
    "ChildProcessDied": "exceptions",
    "IsolatedJobError": "exceptions",
    "IsolationError": "exceptions",
    "DependencyError": "exceptions",
    "WorkflowsUnsupported": "exceptions",
    "Chain": "workflows",
    "Chord": "workflows",
    "Group": "workflows",
    "GroupCall": "workflows",
    "JobAborted": "exceptions",
    "JobFailed": "exceptions",
    "JournalError": "exceptions",
    "LimitError": "exceptions",
    "MainModuleTaskWarning": "exceptions",
    "MemQueueConfigWarning": "exceptions",
    "MemQueueError": "exceptions",
    "MemQueueWarning": "exceptions",
    "QueueClosed": "exceptions",
    "QueueFull": "exceptions",
    "ScheduleError": "exceptions",
    "PostgresUnavailable": "exceptions",
    "RedisUnavailable": "exceptions",
    "SchemaError": "exceptions",
    "StorageError": "exceptions",
    "StorageRefused": "exceptions",
    "TimeLimitExceeded": "exceptions",
    "UnknownQueueError": "exceptions",
    "UnknownTaskError": "exceptions",
    "UnknownTopicError": "exceptions",
    "MemQueue": "extension",
    "enqueue": "extension",
    "Job": "job",
    "JobStatus": "job",
    "Call": "task",
    "Hook": "hooks",
    "Options": "task",
    "Task": "task",
    "TaskOptions": "task",
    "job_cancelled": "signals",
    "job_enqueued": "signals",
    "job_failed": "signals",
    "job_retrying": "signals",
    "job_started": "signals",
    "job_succeeded": "signals",
}

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "Call",
    "Chain",
    "ChildProcessDied",
    "Chord",
    "ConfigurationError",
    "DeadLetterNotFound",
    "DependencyError",
    "Group",
    "GroupCall",
    "Hook",
    "IsolatedJobError",
    "IsolationError",
    "Job",
    "JobAborted",
    "JobFailed",
    "JobStatus",
    "JournalError",
    "LimitError",
    "MainModuleTaskWarning",
    "MemQueue",
    "MemQueueConfigWarning",
    "MemQueueError",
    "MemQueueWarning",
    "Options",
    "QueueClosed",
    "QueueFull",
    "PostgresUnavailable",
    "RedisUnavailable",
    "SchemaError",
    "StorageError",
    "StorageRefused",
    "Task",
    "TaskOptions",
    "TimeLimitExceeded",
    "UnknownQueueError",
    "UnknownTaskError",
    "UnknownTopicError",
    "WorkflowsUnsupported",
    "current_job",
    "enqueue",
    "job_cancelled",
    "job_enqueued",
    "job_failed",
    "job_retrying",
    "job_started",
    "job_succeeded",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flask_memqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
