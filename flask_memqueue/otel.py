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
        from opentelemetry.propagate import extract, inject

        from . import __version__

        self._trace = trace
        self._inject = inject
        self._extract = extract
        self._provider = tracer_provider
        self._version = __version__
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
        carrier: dict[str, str] = {}
        self._inject(carrier)
        parent = carrier.get("traceparent")
        if parent is not None:
            job.options = job.options.replace(traceparent=parent, tracestate=carrier.get("tracestate") or None)

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        with self._span(job) as span:
            try:
                result = call()
            except BaseException as exc:
                self._failed(span, job, exc)
                raise
            span.set_attribute("flask_memqueue.outcome", "succeeded")
            return result

    async def around_arun(self, app: Flask, job: Job[Any], call: Callable[[], Awaitable[Any]]) -> Any:
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
        parent = None
        if options.traceparent is not None:
            carrier = {"traceparent": options.traceparent}
            if options.tracestate:
                carrier["tracestate"] = options.tracestate
            parent = self._extract(carrier)
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


__all__ = ["SCHEMA_URL", "SYSTEM", "Tracing", "tracer_provider_is_set"]
