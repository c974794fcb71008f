"""An app with async tasks, OpenTelemetry and a shared store, for tests/test_observability_processes.py.

Run by :class:`support.harness.Env` as ``flask --app obs_app run`` (the web
process, ``OBS_CONSUMER=0``: it enqueues only) and ``flask --app obs_app
memqueue worker`` (which runs the jobs, up to 10 async jobs at once on its
thread). Everything comes from the environment:

- ``OBS_STORAGE``: MEMQUEUE_STORAGE (a journal or a redis:// URL);
  ``OBS_CONSUMER``: "0" for the web process.
- Every process sets a global tracer provider (before ``init_app``, as an
  app's telemetry setup does), whose exporter appends each finished span as
  one JSON line to ``spans.log`` in the data folder: name, trace and span id,
  parent span id, kind, attributes, links.
- ``runs.log`` gets ``<kind> <job id> <pid> <attempt> <app name>`` lines from the jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from flask import Flask, current_app, jsonify
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from support.base_app import log, new_app

from flask_memqueue import MemQueue, current_job


class FileExporter(SpanExporter):
    """Each finished span as one JSON line of ``spans.log`` (one O_APPEND write: processes share it)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            assert ctx is not None
            log(json.dumps({
                "name": span.name, "trace": f"{ctx.trace_id:032x}", "span": f"{ctx.span_id:016x}",
                "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
                "kind": span.kind.name, "attributes": dict(span.attributes or {}),
                "links": [f"{link.context.span_id:016x}" for link in span.links], "pid": os.getpid(),
            }), file="spans.log")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("obs_app")

mq = MemQueue()


@mq.task(name="obs.fetch", retries=1, retry_delay=0.0)
async def fetch(n: int) -> int:
    await asyncio.sleep(0.01)
    log("fetch", current_job.id, os.getpid(), current_job.attempts, current_app.name)
    if n < 0 and current_job.attempts == 1:
        raise ValueError("the first attempt fails")
    return n * 2


@mq.task(name="obs.broken")
async def broken() -> None:
    log("broken", current_job.id, os.getpid(), current_job.attempts, current_app.name)
    raise RuntimeError("always")


@mq.task(name="obs.slow", time_limit=0.2)
async def slow() -> None:
    log("slow", current_job.id, os.getpid(), current_job.attempts, current_app.name)
    await asyncio.sleep(30)


def create_app() -> Flask:
    app = new_app(
        "obs_app", mq,
        TESTING=True,
        MEMQUEUE_STORAGE=os.environ["OBS_STORAGE"],
        MEMQUEUE_CONSUMER=os.environ.get("OBS_CONSUMER", "1") == "1",
        MEMQUEUE_QUEUES={"default": {"threads": 1, "async_concurrency": 10}},
        MEMQUEUE_SHUTDOWN_TIMEOUT=0.5,
    )

    @app.post("/enqueue/<name>/<n>")
    async def enqueue(name: str, n: str) -> Any:
        with tracer.start_as_current_span("POST /enqueue", kind=trace.SpanKind.SERVER) as span:
            if name == "fetch":
                job = await fetch.adelay(int(n))
            elif name == "broken":
                job = await mq.aenqueue(broken)
            else:
                job = slow.delay()
            return jsonify(id=job.id, trace=f"{span.get_span_context().trace_id:032x}",
                           span=f"{span.get_span_context().span_id:016x}")

    return app


app = create_app()
