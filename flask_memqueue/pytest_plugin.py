"""pytest fixtures for apps that use flask-memqueue (loaded by the ``pytest11`` entry point).

Each fixture works on the app of your ``app`` fixture: pytest-flask's, or one
you write around your app factory. They act on that app's queue for one test
and undo what they did afterwards.

- ``memqueue_eager``: every job enqueued during the test runs inline, inside
  ``enqueue()``; the fixture is the list of those jobs.
- ``memqueue_captured``: every job enqueued during the test is recorded
  (task name, args, kwargs, queue) and not run.
- ``memqueue_drain``: ``memqueue_drain(timeout=10)`` runs every waiting job
  and fails the test, with the job's traceback, if one of them failed.

pytest imports this module in every run of an environment where
flask-memqueue is installed, so it imports nothing but pytest until a fixture
is used: projects that never ask for them pay nothing.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from .job import Job
    from .options import JobOptions
    from .state import AppQueue
    from .task import Task

#: Seconds ``memqueue_drain()`` waits by default.
DRAIN_TIMEOUT = 10.0


def _app(request: pytest.FixtureRequest) -> Flask:
    """The test's app: the value of the ``app`` fixture (pytest-flask's convention)."""
    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError(
            f"the {request.fixturename} fixture needs an 'app' fixture that returns your Flask app"
            " (pytest-flask uses the same name), for example:\n\n"
            "    @pytest.fixture\n"
            "    def app():\n"
            "        app = create_app({'TESTING': True})\n"
            "        yield app\n"
            "        app.extensions['memqueue'].shutdown(timeout=5)\n"
        ) from None
    return app  # type: ignore[no-any-return]


def _queue(request: pytest.FixtureRequest) -> AppQueue:
    app = _app(request)
    queue: AppQueue | None = app.extensions.get("memqueue")
    if queue is None:
        raise pytest.UsageError(
            f"the {request.fixturename} fixture: app {app.name!r} has no MemQueue;"
            " call mq.init_app(app) in the app your 'app' fixture returns"
        )
    return queue


@dataclasses.dataclass(frozen=True)
class EnqueuedJob:
    """One call captured by ``memqueue_captured``: what was asked, never run."""

    #: The task's registered name (``"message:<topic>"`` for a message).
    name: str
    #: Positional arguments of the call.
    args: tuple[Any, ...]
    #: Keyword arguments of the call.
    kwargs: dict[str, Any]
    #: The named queue it was sent to (the task's, or the call's ``options(queue=...)``).
    queue: str
    #: Unix time it was scheduled for (``enqueue_in``/``enqueue_at``), else None.
    eta: float | None
    #: The :class:`~flask_memqueue.Job` handed back to the caller (status queued).
    job: Job[Any]
    #: The task that would have run.
    task: Task[..., Any]
    #: Its priority (-100..100).
    priority: int = 0
    #: The call's ``options(unique_key=...)``, else None (captured calls are
    #: never deduplicated: each is recorded).
    unique_key: str | None = None

    def run(self) -> Any:
        """Call the task here, as the job would have (no app context is pushed); an
        ``async def`` task's coroutine is run to its end (on a loop made for it)."""
        result = self.task.func(*self.args, **self.kwargs)
        if getattr(self.task.strategy, "is_async", False):
            from .aio import run_coroutine

            return run_coroutine(result)
        return result


class EnqueuedJobs(list[EnqueuedJob]):
    """The jobs ``memqueue_captured`` recorded, in enqueue order."""

    @property
    def names(self) -> list[str]:
        """The task names, in enqueue order: ``assert memqueue_captured.names == ["app.send_mail"]``."""
        return [entry.name for entry in self]

    def of(self, task: Task[..., Any] | Callable[..., Any] | str) -> list[EnqueuedJob]:
        """The captured calls of one task (a task, its function, or its name)."""
        name = task if isinstance(task, str) else getattr(task, "name", None)
        func = getattr(task, "func", task)
        return [entry for entry in self if entry.name == name or entry.task.func is func]


@pytest.fixture
def memqueue_captured(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> EnqueuedJobs:
    """Record every job the app enqueues during the test, without running it.

    .. code-block:: python

        def test_signup_sends_mail(client, memqueue_captured):
            client.post("/signup", data={"email": "a@example.com"})
            [call] = memqueue_captured.of(send_mail)
            assert call.args == ("a@example.com",)

    Every enqueue form is captured (``enqueue``, ``delay``, ``enqueue_in``,
    ``enqueue_at``, ``produce``, ``POST /memqueue/produce``). The caller gets
    a queued :class:`~flask_memqueue.Job` that never runs (with
    ``MEMQUEUE_AMQP_URL``, ``produce`` returns a
    :class:`~flask_memqueue.amqp.Published` whose status is ``"captured"``
    and nothing reaches the broker); ``entry.run()`` calls the task by hand.
    """

    queue = _queue(request)
    captured = EnqueuedJobs()

    def capture(
        task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, options: JobOptions | None = None
    ) -> Job[Any]:
        # The job is made as AppQueue.enqueue makes it (same id sequence, same
        # check of its call and its queue), and goes nowhere.
        job: Job[Any] = queue.new_job(task, args, kwargs, options)
        captured.append(EnqueuedJob(task.name, args, dict(kwargs or {}), job.queue,
                                    None if options is None else options.eta, job, task, job.priority,
                                    job.unique_key))
        return job

    def capture_message(task: Task[..., Any], message: Any) -> Any:
        # What produce() would have sent, recorded the same way; with MEMQUEUE_AMQP_URL the
        # caller gets the broker's receipt (status "captured") and nothing reaches the broker.
        return queue.route().captured(task, capture(task, (message,), None))

    monkeypatch.setattr(queue, "enqueue", capture)  # instance attributes, removed after the test
    monkeypatch.setattr(queue, "produce", capture_message)
    return captured


@pytest.fixture
def memqueue_eager(request: pytest.FixtureRequest) -> Iterator[list[Job[Any]]]:
    """Run every job the app enqueues during the test inline, as ``MEMQUEUE_EAGER = True`` does.

    The fixture's value is the list of jobs that ran, in order. Retries run at
    once, without their delays; a failed job is recorded on the job (it does
    not raise into the caller), so assert on ``job.status`` or use
    ``memqueue_drain`` afterwards.

    Setting ``app.config["MEMQUEUE_EAGER"]`` after ``init_app`` does nothing
    (the keys are read once, and you get a ``MemQueueConfigWarning``); this
    fixture switches the already-built queue, and back after the test.
    """
    from .signals import job_enqueued

    queue = _queue(request)
    before = queue.config
    ran: list[Job[Any]] = []

    def record(sender: Any, job: Job[Any], **extra: Any) -> None:
        ran.append(job)

    queue.config = dataclasses.replace(before, eager=True)
    job_enqueued.connect(record, queue.app)
    try:
        yield ran
    finally:
        job_enqueued.disconnect(record, queue.app)
        queue.config = before


@pytest.fixture
def memqueue_drain(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """A function that runs every waiting job of the app and fails the test on a job's error.

    .. code-block:: python

        def test_report(client, memqueue_drain):
            client.post("/reports")
            memqueue_drain(timeout=5)    # fails with the job's traceback if it raised

    It waits for the consumer thread (``mq.join``), or, in a testing app with
    ``MEMQUEUE_CONSUMER = False``, runs the jobs in the test's own thread one
    by one. Retries count as waiting jobs, so a retried job is waited for.
    Failures are those since the fixture was set up (final ones: a job that
    will be retried has not failed yet); each is reported once.
    """
    from .signals import job_failed

    queue = _queue(request)
    failures: list[Job[Any]] = []
    lock = threading.Lock()

    def on_failed(sender: Any, job: Job[Any], **extra: Any) -> None:
        with lock:
            failures.append(job)

    job_failed.connect(on_failed, queue.app)

    def drain(timeout: float = DRAIN_TIMEOUT) -> None:
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        with queue.app.app_context():
            if queue.config.consumer:
                drained = queue.join(timeout)
            else:  # no consumer thread here: step the queue in this thread
                while queue.run_once(0.0):
                    if time.monotonic() > deadline:
                        break
                drained = queue.storage.depth() == 0
        with lock:
            failed, failures[:] = list(failures), []
        if failed:
            pytest.fail(_describe_failures(failed), pytrace=False)
        if not drained:
            running = next((c.current for c in queue.all_consumers() if c.current is not None), None)
            pytest.fail(
                f"the queue of app {queue.app.name!r} did not drain within {timeout} s:"
                f" {queue.storage.depth()} job(s) still waiting"
                + (f", {running.id} ({running.name}) running" if running is not None else "")
                + ("" if queue.config.consumer or queue.app.testing else "; no consumer runs them"),
                pytrace=False,
            )

    try:
        yield drain
    finally:
        job_failed.disconnect(on_failed, queue.app)


def _describe_failures(jobs: list[Job[Any]]) -> str:
    parts = [f"{len(jobs)} job(s) failed while draining the queue:"]
    for job in jobs:
        parts.append(f"\n--- job {job.id} ({job.name}), {job.attempts} attempt(s): {job.error}")
        parts.append(job.traceback or "(no traceback)")
    return "\n".join(parts)
