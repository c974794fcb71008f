"""OpenTelemetry and Sentry in this process (issue 25); across processes: tests/test_observability_processes.py.

OpenTelemetry with the SDK's in-memory span exporter: each attempt is a span,
the child of the span that enqueued the job, with the documented attributes;
a retry links to the attempt before it. Sentry with a transport that records
the events it is handed: one event per failed job with the documented
context, none for a success, none more for the consumer's own error log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from support.waiting import TIMEOUT

pytest.importorskip("opentelemetry.sdk", reason="the otel test dependencies are not installed")
pytest.importorskip("sentry_sdk", reason="the sentry test dependencies are not installed")

import sentry_sdk  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from sentry_sdk.transport import Transport  # noqa: E402

from flask_memqueue import ConfigurationError, JobStatus, MemQueue  # noqa: E402
from flask_memqueue.otel import SCHEMA_URL, Tracing  # noqa: E402
from flask_memqueue.sentry import CONTEXT, FILTERED, SentryHook  # noqa: E402

MODES = {
    "thread": {"MEMQUEUE_QUEUES": {"default": 1}},
    "concurrent": {"MEMQUEUE_QUEUES": {"default": {"threads": 1, "async_concurrency": 4}}},
}


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_jobs_span_is_a_child_of_the_enqueuing_span_with_the_documented_attributes(
    mq: MemQueue, make_app: Callable[..., Flask], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    mq.add_hook(Tracing(tracer_provider=provider))

    @mq.task(name="obs.add")
    def add(a: int, b: int) -> int:
        with provider.get_tracer("user").start_as_current_span("inside"):
            return a + b

    app = make_app()
    tracer = provider.get_tracer("test")

    @app.post("/add")
    def view() -> dict[str, Any]:
        with tracer.start_as_current_span("POST /add"):
            return {"id": add.delay(2, 3).id}

    body = app.test_client().post("/add").json
    assert body is not None
    with app.app_context():
        job = mq.get_job(body["id"])
        assert job is not None and job.wait(TIMEOUT) == 5
        assert mq.join(TIMEOUT)
    by_name = {span.name: span for span in exporter.get_finished_spans()}
    request, process, inside = by_name["POST /add"], by_name["process default"], by_name["inside"]
    assert process.parent is not None and process.parent.span_id == request.context.span_id
    assert process.context.trace_id == request.context.trace_id
    assert inside.parent is not None and inside.parent.span_id == process.context.span_id
    assert process.kind is trace.SpanKind.CONSUMER
    assert process.instrumentation_scope is not None and process.instrumentation_scope.schema_url == SCHEMA_URL
    assert dict(process.attributes or {}) == {
        "messaging.system": "flask_memqueue",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": body["id"],
        "flask_memqueue.task": "obs.add",
        "flask_memqueue.attempt": 1,
        "flask_memqueue.outcome": "succeeded",
    }


@pytest.mark.parametrize("mode", list(MODES))
def test_a_retried_async_job_has_one_span_per_attempt_linked_to_the_one_before_and_errors_recorded(
    mq: MemQueue, make_app: Callable[..., Flask], spans: tuple[TracerProvider, InMemorySpanExporter], mode: str
) -> None:
    provider, exporter = spans
    mq.add_hook(Tracing(tracer_provider=provider))

    @mq.task(name="obs.flaky", retries=2, retry_delay=0)
    async def flaky() -> str:
        await asyncio.sleep(0)
        raise ValueError("nope")

    app = make_app(**MODES[mode])
    with app.app_context(), provider.get_tracer("test").start_as_current_span("enqueue") as root:
        job = flaky.delay()
    with app.app_context():
        assert mq.join(TIMEOUT)
        assert job.status is JobStatus.FAILED and job.attempts == 3
    attempts = sorted((s for s in exporter.get_finished_spans() if s.name == "process default"),
                      key=lambda s: s.attributes["flask_memqueue.attempt"])  # type: ignore[index]
    assert [s.attributes["flask_memqueue.attempt"] for s in attempts] == [1, 2, 3]  # type: ignore[index]
    assert [s.attributes["flask_memqueue.outcome"] for s in attempts] == ["retrying", "retrying", "failed"]  # type: ignore[index]
    assert all(s.parent is not None and s.parent.span_id == root.get_span_context().span_id for s in attempts)
    assert [[link.context.span_id for link in s.links] for s in attempts] == [
        [], [attempts[0].context.span_id], [attempts[1].context.span_id]]
    for span in attempts:
        assert span.status.status_code is trace.StatusCode.ERROR
        assert span.attributes["error.type"] == "builtins.ValueError"  # type: ignore[index]
        assert [event.name for event in span.events] == ["exception"]


def test_without_a_tracer_provider_no_hook_is_installed_and_the_config_key_is_checked(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    make_app()
    assert not [hook for hook in mq.hooks if isinstance(hook, Tracing)]
    assert not mq.hooks.active and not mq.hooks.enqueue
    with pytest.raises(ConfigurationError, match="MEMQUEUE_OPENTELEMETRY must be True, False, or None"):
        make_app("other", MEMQUEUE_OPENTELEMETRY="maybe")


def test_memqueue_opentelemetry_true_installs_the_hook_once(mq: MemQueue, make_app: Callable[..., Flask]) -> None:
    make_app("one", MEMQUEUE_OPENTELEMETRY=True)
    make_app("two", MEMQUEUE_OPENTELEMETRY=True)
    assert len([hook for hook in mq.hooks if isinstance(hook, Tracing)]) == 1


# -- Sentry ---------------------------------------------------------------------------------------
class Recording(Transport):
    """A Sentry transport that keeps the events it is handed (nothing leaves the process)."""

    events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            if item.type == "event":
                Recording.events.append(item.payload.json)


@pytest.fixture
def sentry_events() -> Iterator[list[dict[str, Any]]]:
    Recording.events = []
    sentry_sdk.init(dsn="https://public@sentry.invalid/1", transport=Recording, default_integrations=True)
    try:
        yield Recording.events
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: an inactive client for the tests after this one


def _context(event: dict[str, Any]) -> dict[str, Any]:
    return event["contexts"][CONTEXT]  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", list(MODES))
def test_sentry_gets_one_event_per_failed_job_with_its_context_and_none_for_a_success(
    mq: MemQueue, make_app: Callable[..., Flask], sentry_events: list[dict[str, Any]], mode: str
) -> None:
    @mq.task(name="obs.boom", retries=1, retry_delay=0)
    async def boom(user: str, *, token: str) -> None:
        logging.getLogger("myapp").warning("about to fail for %s", user)  # a breadcrumb in the job's scope
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    @mq.task(name="obs.fine")
    def fine() -> str:
        logging.getLogger("myapp").warning("fine")
        return "ok"

    app = make_app(**MODES[mode])  # sentry_sdk.init() ran before init_app: the hook is installed
    assert [hook for hook in mq.hooks if isinstance(hook, SentryHook)]
    with app.app_context():
        logging.getLogger("myapp").warning("in the request, before the job")
        failed = boom.delay("ann", token="s3cret")
        ok = fine.delay()
        assert mq.join(TIMEOUT)
    assert ok.status is JobStatus.SUCCEEDED and failed.status is JobStatus.FAILED
    assert len(sentry_events) == 1, [e.get("logger") or e.get("exception") for e in sentry_events]
    event = sentry_events[0]
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "flask_memqueue", "handled": False}
    assert _context(event) == {"id": failed.id, "task": "obs.boom", "queue": "default", "attempt": 2,
                               "retries": 1, "args": ["'ann'"], "kwargs": {"token": "'s3cret'"}}
    assert event["tags"]["flask_memqueue.task"] == "obs.boom"
    crumbs = [c["message"] for c in event["breadcrumbs"]["values"] if c.get("category") == "myapp"]
    assert crumbs == ["about to fail for ann"]  # the job's own: not the request's, nor the other job's


def test_sentry_arguments_can_be_redacted_and_retries_reported(
    mq: MemQueue, make_app: Callable[..., Flask], sentry_events: list[dict[str, Any]]
) -> None:
    @mq.task(name="obs.login", retries=1, retry_delay=0)
    def login(user: str, password: str) -> None:
        raise PermissionError("denied")

    def redact(job: Any) -> dict[str, Any]:
        return {"args": [job.args[0], FILTERED]}

    app = make_app(MEMQUEUE_SENTRY_ARGUMENTS=redact, MEMQUEUE_SENTRY_RETRIES=True)
    with app.app_context():
        login.delay("ann", "hunter2")
        assert mq.join(TIMEOUT)
    assert [e["level"] for e in sentry_events] == ["warning", "error"]
    assert [_context(e)["attempt"] for e in sentry_events] == [1, 2]
    assert all(_context(e)["args"] == ["ann", FILTERED] for e in sentry_events)
    assert "hunter2" not in repr(sentry_events)


@pytest.mark.parametrize("value", ["yes please", 3])
def test_a_bad_sentry_arguments_value_is_refused_naming_the_key(
    mq: MemQueue, make_app: Callable[..., Flask], value: Any
) -> None:
    with pytest.raises(ConfigurationError, match="MEMQUEUE_SENTRY_ARGUMENTS must be True"):
        make_app(MEMQUEUE_SENTRY_ARGUMENTS=value)


# -- RabbitMQ messages --------------------------------------------------------------------------
def test_a_rabbitmq_message_carries_the_trace_and_its_handler_runs_in_a_child_span(
    mq: MemQueue, make_app: Callable[..., Flask], spans: tuple[TracerProvider, InMemorySpanExporter],
    rabbitmq: Any,
) -> None:
    import secrets
    import threading

    provider, exporter = spans
    mq.add_hook(Tracing(tracer_provider=provider))
    qname = f"t.{secrets.token_hex(4)}"
    done = threading.Event()

    @mq.handler("orders", amqp_queue=qname)
    def on_order(message: Any) -> None:
        done.set()

    app = make_app(MEMQUEUE_AMQP_URL=rabbitmq.url)
    with app.app_context(), provider.get_tracer("test").start_as_current_span("POST /orders") as request:
        published = mq.produce({"order": 1}, topic="orders")
    queue = mq.queue_for(app)
    assert queue.ensure_consumer()
    assert done.wait(TIMEOUT)
    queue.shutdown(timeout=TIMEOUT)
    [span] = [s for s in exporter.get_finished_spans() if s.name == f"process {qname}"]
    assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq" and attributes["flask_memqueue.outcome"] == "succeeded"
    assert attributes["messaging.message.id"] == published.id
    from support.servers.rabbitmq import Broker

    assert isinstance(rabbitmq, Broker)
    connection = rabbitmq.connection()
    try:
        channel = connection.channel()
        channel.queue_delete(qname)
        channel.queue_delete(qname + ".dead")
    finally:
        connection.close()


def test_an_app_that_says_false_is_not_traced_even_when_another_app_installed_the_hook(
    mq: MemQueue, make_app: Callable[..., Flask], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    mq.add_hook(Tracing(tracer_provider=provider))

    @mq.task(name="obs.quiet")
    def quiet() -> int:
        return 1

    traced, untraced = make_app("traced"), make_app("untraced", MEMQUEUE_OPENTELEMETRY=False)
    for app in (traced, untraced):
        with app.app_context(), provider.get_tracer("test").start_as_current_span(f"enqueue {app.name}"):
            job = quiet.delay()
        assert job.wait(TIMEOUT) == 1
        assert (job.options.traceparent is None) == (app is untraced)
    assert sorted(s.name for s in exporter.get_finished_spans() if s.name.startswith("process")) == [
        "process default"]
