#!/usr/bin/env python3
"""Async tasks (issue 25): I/O-bound ``async def`` jobs on one thread, one at a time against
``async_concurrency`` 100, side by side in one run.

    python benchmarks/async_bench.py                 # 2,000 jobs, each awaiting a 10 ms sleep
    python benchmarks/async_bench.py --jobs 500 --sleep 0.01 --concurrency 100

Each contender is one app with one consumer thread on the memory store: ``serial``
(``async_concurrency`` 1: the thread's loop runs one job at a time) and
``concurrent`` (``async_concurrency`` N). Both queue every job first, then start
the consumer and time until the last job finished (wall clock: the jobs wait on
timers, not the CPU). The claim of issue 25: concurrent >= 50x serial at N = 100.
The peak of coroutines asleep at once is counted too (the test suite asserts it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


def run(kind: str, jobs: int, sleep: float, concurrency: int) -> dict[str, Any]:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()
    state = {"now": 0, "most": 0}

    @mq.task(name="bench.io", queue="io")
    async def io(n: int) -> int:
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(sleep)
        state["now"] -= 1
        return n

    spec = {"threads": 1, "async_concurrency": concurrency if kind == "concurrent" else 1}
    app = Flask(f"async-{kind}")
    app.config.update(MEMQUEUE_QUEUES={"default": 0, "io": spec}, MEMQUEUE_MAXSIZE=0)
    mq.init_app(app)
    queue = app.extensions["memqueue"]
    with app.app_context():
        for n in range(jobs):
            queue.storage.put(queue.new_job(io, (n,), None))  # queued before the consumer starts
        started = time.perf_counter()
        queue.ensure_consumer()
        assert mq.join(timeout=jobs * sleep * 2 + 60)
        elapsed = time.perf_counter() - started
        mq.shutdown()
    return {"kind": kind, "jobs": jobs, "seconds": elapsed, "jobs_per_s": jobs / elapsed, "most_at_once": state["most"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--sleep", type=float, default=0.01, help="seconds each job awaits")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [run(kind, args.jobs, args.sleep, args.concurrency) for kind in ("concurrent", "serial")]
    ratio = results[1]["seconds"] / results[0]["seconds"]
    if args.json:
        print(json.dumps({"results": results, "ratio": ratio}, indent=2))
        return 0
    print(f"{args.jobs} jobs, each awaiting asyncio.sleep({args.sleep}), one consumer thread, memory store")
    for r in results:
        print(f"  {r['kind']:<10} {r['seconds']:8.3f} s  {r['jobs_per_s']:9.1f} jobs/s  at once: {r['most_at_once']}")
    print(f"  concurrent (async_concurrency {args.concurrency}) / serial: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
