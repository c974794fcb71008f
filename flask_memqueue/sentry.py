"""Sentry: a job's failure reported once, with the job as context, breadcrumbs in the job's own scope.

One :class:`SentryHook` (:mod:`flask_memqueue.hooks`), installed by
``init_app`` when sentry-sdk is initialised in the process (see
``MEMQUEUE_SENTRY`` in docs/configuration.md), or by hand with
``mq.add_hook(SentryHook())``.

What sentry-sdk already does, and is used as it is: its logging integration
turns log records inside a job into breadcrumbs (and error records into
events), its threading integration carries scopes into threads, its
event scrubber and ``before_send`` see every event. What this hook adds:

- each attempt runs in an **isolation scope of its own**
  (``sentry_sdk.isolation_scope()``), started without breadcrumbs: what the
  job logs stays with the job, never on the request that enqueued it (in eager
  mode the job runs inside the request) nor on the next job of the thread;
- the scope carries the **job as context** (``flask_memqueue job``: id, task,
  queue, attempt, retries, arguments) and the tags ``flask_memqueue.task``
  and ``flask_memqueue.queue``;
- a job's **final failure is one event** (mechanism ``flask_memqueue``,
  unhandled), and with ``MEMQUEUE_SENTRY_RETRIES`` each failed attempt that
  will be retried is one too (level ``warning``). The consumer's own
  ``job ... failed after N attempt(s)`` error log line, which the logging
  integration would make a second event of, is dropped by an event processor
  (and by sentry-sdk's dedupe integration where it is on): one event per failure.

Arguments: ``MEMQUEUE_SENTRY_ARGUMENTS`` is True (the default: the ``repr`` of
each, cut to 200 characters), False (``"[Filtered]"``), or a function
``(job) -> dict`` that returns what to send instead (redact a password, say).
Unless it is True, the event's stack frames carry no local variables either
(the task's frame holds its arguments as locals, which sentry-sdk would send).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .display import safe_repr
from .hooks import Hook

if TYPE_CHECKING:
    from flask import Flask

    from .job import Job

#: The context's name on a Sentry event.
CONTEXT = "flask_memqueue job"
#: What an argument is shown as when ``MEMQUEUE_SENTRY_ARGUMENTS`` is False.
FILTERED = "[Filtered]"
#: The logger whose records about a reported failure are not sent again.
LOGGER = "flask_memqueue"
_REPORTED = "__flask_memqueue_sentry_reported__"

_processor_added = False


def sentry_is_initialised() -> bool:
    """True if sentry-sdk is imported in this process and ``sentry_sdk.init()`` made an active client."""
    import sys

    sdk = sys.modules.get("sentry_sdk")
    return sdk is not None and _sends(sdk.get_client())


def _sends(client: Any) -> bool:
    """True for a client that sends events: ``init()`` with a DSN (or a transport), not closed."""
    return bool(client.is_active()) and getattr(client, "transport", None) is not None


def _drop_reported_log_events(event: Any, hint: Any) -> Any:
    """The global event processor: the consumer's log line about a failure already reported is no event."""
    if event.get("logger") == LOGGER and hint:
        exc_info = hint.get("exc_info")
        if exc_info and getattr(exc_info[1], _REPORTED, False):
            return None
    return event


class SentryHook(Hook):
    """The Sentry hook (see the module's text)."""

    def __init__(self) -> None:
        global _processor_added
        import sentry_sdk
        from sentry_sdk.scope import add_global_event_processor

        self._sdk = sentry_sdk
        if not _processor_added:
            add_global_event_processor(_drop_reported_log_events)
            _processor_added = True

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        if _setting(app, "sentry", None) is False:  # another app of this MemQueue installed the hook
            return call()
        with self._scope(app, job):
            try:
                return call()
            except BaseException as exc:
                self._report(app, job, exc)
                raise

    async def around_arun(self, app: Flask, job: Job[Any], call: Callable[[], Awaitable[Any]]) -> Any:
        if _setting(app, "sentry", None) is False:
            return await call()
        with self._scope(app, job):
            try:
                return await call()
            except BaseException as exc:
                self._report(app, job, exc)
                raise

    @contextmanager
    def _scope(self, app: Flask, job: Job[Any]) -> Iterator[None]:
        with self._sdk.isolation_scope() as scope:
            scope.clear_breadcrumbs()
            scope.set_tag("flask_memqueue.task", job.name)
            scope.set_tag("flask_memqueue.queue", job.queue)
            scope.set_context(CONTEXT, {
                "id": job.id, "task": job.name, "queue": job.queue, "attempt": job.attempts,
                "retries": job.task.retries, **_arguments(app, job),
            })
            yield

    def _report(self, app: Flask, job: Job[Any], exc: BaseException) -> None:
        if not isinstance(exc, Exception):  # SystemExit & co end the thread; the log line says so
            return
        client = self._sdk.get_client()
        if not _sends(client):
            return
        will_retry = job.attempts <= job.task.retries
        if will_retry and not _setting(app, "sentry_retries", False):
            return
        from sentry_sdk.utils import event_from_exception

        event, hint = event_from_exception(
            exc, client_options=client.options, mechanism={"type": "flask_memqueue", "handled": False}
        )
        if will_retry:
            event["level"] = "warning"
        if _setting(app, "sentry_arguments", True) is not True:
            _drop_local_variables(event)  # the function's frame holds its arguments as locals
        self._sdk.capture_event(event, hint=hint)
        try:
            setattr(exc, _REPORTED, True)
        except (AttributeError, TypeError):  # an exception that takes no attributes: dedupe may still drop it
            logging.getLogger(LOGGER).debug("could not mark %r as reported to Sentry", exc)

    def __repr__(self) -> str:
        return "<SentryHook>"


def _setting(app: Flask, name: str, default: Any) -> Any:
    queue = app.extensions.get("memqueue")
    return getattr(getattr(queue, "config", None), name, default)


def _drop_local_variables(event: Any) -> None:
    """Remove the local variables sentry-sdk put in the event's stack frames."""
    for value in (event.get("exception") or {}).get("values") or ():
        for frame in (value.get("stacktrace") or {}).get("frames") or ():
            frame.pop("vars", None)


def _arguments(app: Flask, job: Job[Any]) -> dict[str, Any]:
    how = _setting(app, "sentry_arguments", True)
    if how is True:
        return {"args": [safe_repr(a, 200) for a in job.args],
                "kwargs": {k: safe_repr(v, 200) for k, v in (job.kwargs or {}).items()}}
    if how is False:
        return {"args": FILTERED, "kwargs": FILTERED}
    try:
        shown = how(job)
    except Exception as exc:  # the redaction must never fail the job, nor leak what it hides
        return {"args": FILTERED, "kwargs": FILTERED, "arguments_error": safe_repr(exc, 200)}
    return shown if isinstance(shown, dict) else {"args": safe_repr(shown, 200)}


__all__ = ["CONTEXT", "FILTERED", "SentryHook", "sentry_is_initialised"]
