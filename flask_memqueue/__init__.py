"""flask-memqueue: background jobs for Flask, in the same process, with no broker."""

from .consumer import current_job
from .exceptions import (
    ConfigurationError,
    JobFailed,
    JournalError,
    MemQueueError,
    QueueClosed,
    QueueFull,
    UnknownTaskError,
    UnknownTopicError,
)
from .extension import MemQueue, enqueue
from .job import Job, JobStatus
from .registry import Task
from .signals import job_enqueued, job_failed, job_retrying, job_started, job_succeeded

__version__ = "1.0.0"

__all__ = [
    "ConfigurationError",
    "Job",
    "JobFailed",
    "JobStatus",
    "JournalError",
    "MemQueue",
    "MemQueueError",
    "QueueClosed",
    "QueueFull",
    "Task",
    "UnknownTaskError",
    "UnknownTopicError",
    "current_job",
    "enqueue",
    "job_enqueued",
    "job_failed",
    "job_retrying",
    "job_started",
    "job_succeeded",
]
