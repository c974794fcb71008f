#!/usr/bin/env python3
"""What tracing and Sentry cost per job (issue 25), side by side in one run.

    python benchmarks/observability.py               # 20,000 no-op jobs per run, 5 rounds
    python benchmarks/observability.py --n 5000 --reps 3

Contenders, each in a fresh process per round (rounds interleave them, so a busy
machine disturbs all alike): ``none`` (no hook: what an app without OpenTelemetry or
Sentry runs), ``otel`` (the Tracing hook with the OpenTelemetry SDK's TracerProvider
and a BatchSpanProcessor to an exporter that drops spans: the SDK's own cost of a span
included, an exporter's network time not), ``otel-unsampled`` (the same provider with
the ALWAYS_OFF sampler: the hook's cost over a non-recording span), ``sentry`` (the
Sentry hook, ``sentry_sdk.init`` with a DSN and a transport that drops events: no job
fails, so this is the scope per job). Each round enqueues ``--n`` no-op jobs from a
request-like span (otel) and drains them with the app's consumer thread, on the memory
store; CPU time of the whole process per job (µs), the median of the rounds, and its
difference to ``none``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

CONTENDERS = ("none", "otel", "otel-unsampled", "sentry")


def child(kind: str, n: int) -> float:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()
    parent: Any = None
    if kind.startswith("otel"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

        from flask_memqueue.otel import Tracing

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider(sampler=ALWAYS_OFF if kind == "otel-unsampled" else ALWAYS_ON)
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        mq.add_hook(Tracing(tracer_provider=provider))
        parent = provider.get_tracer("bench").start_as_current_span("request")
    elif kind == "sentry":
        import sentry_sdk
        from sentry_sdk.transport import Transport

        class Drop(Transport):  # type: ignore[no-redef]
            def capture_envelope(self, envelope: Any) -> None:
                pass

        sentry_sdk.init(dsn="https://public@sentry.invalid/1", transport=Drop)

    @mq.task(name="bench.noop")
    def noop() -> None:
        return None

    app = Flask(f"obs-{kind}")
    app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_MAX_FINISHED=0)
    mq.init_app(app)
    with app.app_context():
        for _ in range(200):  # warm up: the chains are built, the consumer runs
            noop.delay()
        assert mq.join(60)
        started = time.process_time()
        if parent is not None:
            with parent:
                for _ in range(n):
                    noop.delay()
        else:
            for _ in range(n):
                noop.delay()
        assert mq.join(600)
        used = time.process_time() - started
        mq.shutdown()
    return used / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n)))
        return 0
    runs: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    for _ in range(args.reps):
        for kind in CONTENDERS:
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--n", str(args.n)],
                                 check=True, capture_output=True, text=True).stdout
            runs[kind].append(float(out.strip().splitlines()[-1]))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    if args.json:
        print(json.dumps({"n": args.n, "reps": args.reps, "runs": runs, "median": medians}, indent=2))
        return 0
    print(f"CPU µs per job (enqueue + run, memory store), {args.n} jobs, median of {args.reps} rounds")
    for kind in CONTENDERS:
        print(f"  {kind:<15} {medians[kind]:8.2f} µs   +{medians[kind] - medians['none']:6.2f} µs over none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
