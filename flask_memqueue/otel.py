"""OpenTelemetry: the trace of a request goes on into the jobs it enqueued.

One :class:`Tracing` hook (:mod:`flask_memqueue.hooks`), installed by
``init_app`` when the app's process has a tracer provider (see
``MEMQUEUE_OPENTELEMETRY`` in docs/configuration.md), or by hand with
``mq.add_hook(Tracing(tracer_provider=...))``:

- ``on_enqueue``: the current trace context, as the W3C ``traceparent`` and
  ``tracestate`` the global propagator writes, goes into the job's options
  (:attr:`JobOptions.traceparent <flask_memqueue.options.JobOptions.traceparent>`),
  which every store persists with the job;
- ``around_run`` / ``around_arun``: each attempt runs in a span of kind
  CONSUMER, a child of the enqueuing span (in another process too), current
  while the function runs (so spans the job makes, an HTTP client's, are its
  children). A retry's span is another child of the enqueuing span, linked to
  the span of the attempt before it when that attempt ran in this process.

The span follows the OpenTelemetry semantic conventions for messaging spans
(v1.44.0, whose messaging part is in Development status):

=================================  ===========================================================
name                               ``process <queue>`` (``{messaging.operation.name} {destination}``)
``messaging.system``               ``flask_memqueue`` (no registered value fits)
``messaging.operation.type``       ``process``
``messaging.operation.name``       ``process``
``messaging.destination.name``     the job's queue
``messaging.message.id``           the job's id
``flask_memqueue.task``            the task's registered name
``flask_memqueue.attempt``         the attempt number, from 1
``flask_memqueue.outcome``         ``succeeded``, ``retrying`` or ``failed``
``error.type``                     on a failed attempt: the exception's class (qualified name)
=================================  ===========================================================

A failed attempt also records the exception on the span and sets its status to ERROR.

**Cost.** Without OpenTelemetry (or without a tracer provider at ``init_app``)
no hook is installed, and nothing is recorded: the enqueue path and the
consumer test the one attribute they test for every hook. With it, see
docs/observability.md for the cost per job.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import replace as _replace
from typing import TYPE_CHECKING, Any

from .hooks import Hook

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask import Flask

    from .job import Job

#: The value of ``messaging.system``.
SYSTEM = "flask_memqueue"
#: The semantic conventions these spans follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
#: The span contexts of this many last attempts are kept, to link a retry to the attempt before it.
LINKS_KEPT = 10_000


def _remote_parent(trace: Any) -> Callable[[str, str | None], Any]:
    """A function: W3C ``traceparent`` (and ``tracestate``) -> the context of that remote parent span,
    or None for a value that is not a version-00 traceparent (then the span starts a trace)."""
    from opentelemetry.trace.span import TraceState

    def remote(traceparent: str, tracestate: str | None) -> Any:
        parts = traceparent.split("-")
        if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
            return None
        try:
            trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
        except ValueError:
            return None
        state = TraceState.from_header([tracestate]) if tracestate else None
        ctx = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags),
                                trace_state=state)
        if not ctx.is_valid:
            return None
        return trace.set_span_in_context(trace.NonRecordingSpan(ctx))

    return remote


def _off(app: Flask) -> bool:
    """True for an app with ``MEMQUEUE_OPENTELEMETRY = False`` (another app of its MemQueue installed the hook)."""
    queue = app.extensions.get("memqueue")
    return getattr(getattr(queue, "config", None), "opentelemetry", None) is False


def _version() -> str | None:
    """This package's version, as installed (the instrumentation scope's version), if known."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("Flask-MemQueue")
    except PackageNotFoundError:
        return None


def tracing_of(hooks: Any) -> Tracing | None:
    """The :class:`Tracing` hook among ``hooks`` (an extension's), if one is installed."""
    for hook in hooks:
        if isinstance(hook, Tracing):
            return hook
    return None


def tracer_provider_is_set() -> bool:
    """True if OpenTelemetry is imported in this process and a tracer provider was set globally.

    Costs nothing when OpenTelemetry is absent or never imported: an app that
    sets a tracer provider has imported it already.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class Tracing(Hook):
    """The OpenTelemetry hook (see the module's text).

    :param tracer_provider: where the spans go; None: the global provider at the time of each span.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._current_span = trace.get_current_span
        self._remote = _remote_parent(trace)
        self._provider = tracer_provider
        self._version = _version()
        self._tracer: Any = None
        self._tracer_of: Any = None
        # job id -> the span context of its last attempt here (for a retry's link), oldest first.
        self._last: OrderedDict[str, Any] = OrderedDict()

    def _get_tracer(self) -> Any:
        provider = self._provider or self._trace.get_tracer_provider()
        if self._tracer_of is not provider:  # the global provider was set (or changed) since
            self._tracer = provider.get_tracer("flask_memqueue", self._version, schema_url=SCHEMA_URL)
            self._tracer_of = provider
        return self._tracer

    # -- the points --------------------------------------------------------------------
    def on_enqueue(self, app: Flask, job: Job[Any]) -> None:
        """Record the current span's context as W3C ``traceparent``/``tracestate`` (written here, not
        by the global propagator: a third of the cost, and the stored form is W3C whatever an app's
        propagators are)."""
        if _off(app):
            return
        ctx = self._current_span().get_span_context()
        if not ctx.is_valid:
            return
        state = ctx.trace_state.to_header() if ctx.trace_state else None
        # dataclasses.replace, not JobOptions.replace: options with a trace context are never the shared ones
        job.options = _replace(
            job.options, traceparent=f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}",
            tracestate=state or None,
        )

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        if _off(app):
            return call()
        with self._span(job) as span:
            try:
                result = call()
            except BaseException as exc:
                self._failed(span, job, exc)
                raise
            span.set_attribute("flask_memqueue.outcome", "succeeded")
            return result

    async def around_arun(self, app: Flask, job: Job[Any], call: Callable[[], Awaitable[Any]]) -> Any:
        if _off(app):
            return await call()
        with self._span(job) as span:
            try:
                result = await call()
            except BaseException as exc:
                self._failed(span, job, exc)
                raise
            span.set_attribute("flask_memqueue.outcome", "succeeded")
            return result

    # -- the span ----------------------------------------------------------------------
    @contextmanager
    def _span(self, job: Job[Any]) -> Iterator[Any]:
        options = job.options
        parent = None if options.traceparent is None else self._remote(options.traceparent, options.tracestate)
        links = []
        previous = self._last.pop(job.id, None)
        if previous is not None:
            links.append(self._trace.Link(previous, {"flask_memqueue.link": "previous_attempt"}))
        attributes = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id,
            "flask_memqueue.task": job.name,
            "flask_memqueue.attempt": job.attempts,
        }
        tracer = self._get_tracer()
        with tracer.start_as_current_span(
            f"process {job.queue}", context=parent, kind=self._trace.SpanKind.CONSUMER, attributes=attributes,
            links=links, record_exception=False, set_status_on_exception=False,
        ) as span:
            yield span

    # -- RabbitMQ messages (flask_memqueue.amqp) ----------------------------------------------
    def message_headers(self) -> dict[str, str]:
        """The current span's context as ``traceparent``/``tracestate`` message headers (empty if none)."""
        ctx = self._current_span().get_span_context()
        if not ctx.is_valid:
            return {}
        headers = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        if state:
            headers["tracestate"] = state
        return headers

    @contextmanager
    def message_span(self, queue: str, message_id: str | None, handler: str, attempt: int,
                     headers: dict[str, Any]) -> Iterator[Any]:
        """A CONSUMER span around a handler's call for a RabbitMQ message: the child of the span
        whose context the message's headers carry (the publisher's), attributed as a job's span
        (``messaging.destination.name``: the RabbitMQ queue; ``messaging.system``: ``rabbitmq``).
        The caller records the outcome with :meth:`message_outcome`."""
        traceparent = headers.get("traceparent")
        state = headers.get("tracestate")
        parent = self._remote(traceparent, state if isinstance(state, str) else None) if isinstance(
            traceparent, str) else None
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue,
            "flask_memqueue.task": handler,
            "flask_memqueue.attempt": attempt,
        }
        if message_id:
            attributes["messaging.message.id"] = message_id
        with self._get_tracer().start_as_current_span(
            f"process {queue}", context=parent, kind=self._trace.SpanKind.CONSUMER, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            yield span

    def message_outcome(self, span: Any, error: BaseException | None, will_retry: bool) -> None:
        """Record a handler's outcome on its :meth:`message_span`."""
        if error is None:
            span.set_attribute("flask_memqueue.outcome", "succeeded")
            return
        span.set_attribute("flask_memqueue.outcome", "retrying" if will_retry else "failed")
        span.set_attribute("error.type", f"{type(error).__module__}.{type(error).__qualname__}")
        span.record_exception(error)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))

    def _failed(self, span: Any, job: Job[Any], exc: BaseException) -> None:
        will_retry = isinstance(exc, Exception) and job.attempts <= job.task.retries
        span.set_attribute("flask_memqueue.outcome", "retrying" if will_retry else "failed")
        span.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
        span.record_exception(exc)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
        if will_retry:
            self._last[job.id] = span.get_span_context()
            while len(self._last) > LINKS_KEPT:
                self._last.popitem(last=False)

    def __repr__(self) -> str:
        return "<Tracing (OpenTelemetry)>"


__all__ = ["SCHEMA_URL", "SYSTEM", "Tracing", "tracer_provider_is_set", "tracing_of"]
