#!/usr/bin/env python3
"""Worker pools side by side: flask-memqueue on 1 and N threads against Flask-Executor and huey.

    python benchmarks/pool.py                 # P and Q, 3 repetitions
    python benchmarks/pool.py --reps 5 --workloads P
    python benchmarks/pool.py --quick         # tiny sizes: checks that it runs

Workloads:
  P  I/O-bound: 2,000 jobs that each sleep 10 ms, enqueued at once; jobs/s from
     the first enqueue until the last job finished. flask-memqueue on 1 and 8
     threads (MEMQUEUE_QUEUES = {"default": N}), Flask-Executor with
     EXECUTOR_MAX_WORKERS = 8, huey's MemoryHuey with its consumer on 8 threads.
     The ideal for 8 threads is 8 x 100 jobs/s = 800 jobs/s.
  Q  no-op jobs end to end: 20,000 jobs enqueued while the consumers run, until
     the last one ran, on 1 and 4 threads: what a pool costs in lock contention
     where threads cannot help (the GIL runs one at a time).

Every (repetition, workload, contender) cell runs in a fresh subprocess, with
the contenders rotated in each repetition; tables give the median [min-max] and
ratios against the 1-thread flask-memqueue of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MARK = "@@RESULT "
SLEEP = 0.010


class Counter:
    """Counts finished jobs; ``wait(n)`` blocks until n have finished."""

    def __init__(self) -> None:
        self.done = 0
        self.cond = threading.Condition()

    def hit(self) -> None:
        with self.cond:
            self.done += 1
            self.cond.notify_all()

    def wait(self, n: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.done >= n, timeout):
                raise TimeoutError(f"{self.done} of {n} jobs ran within {timeout} s")


COUNTER = Counter()


def io_job() -> None:
    time.sleep(SLEEP)
    COUNTER.hit()


def noop_job() -> None:
    COUNTER.hit()


# -- contenders: each returns (enqueue(fn), teardown()) ---------------------------------
def memqueue(threads: int) -> tuple[Callable[[Callable[[], None]], Any], Callable[[], None]]:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()
    app = Flask("pool_bench")
    app.config.update(MEMQUEUE_QUEUES={"default": threads}, MEMQUEUE_MAXSIZE=0)
    mq.init_app(app)
    ctx = app.app_context()
    ctx.push()
    enqueue = mq.enqueue

    def teardown() -> None:
        mq.shutdown(timeout=10)
        ctx.pop()

    return enqueue, teardown


def flask_executor(threads: int) -> tuple[Callable[[Callable[[], None]], Any], Callable[[], None]]:
    from flask import Flask
    from flask_executor import Executor

    app = Flask("pool_bench")
    app.config.update(EXECUTOR_TYPE="thread", EXECUTOR_MAX_WORKERS=threads)
    executor = Executor(app)
    ctx = app.test_request_context()
    ctx.push()

    def teardown() -> None:
        executor.shutdown(wait=True)
        ctx.pop()

    return executor.submit, teardown


def huey(threads: int) -> tuple[Callable[[Callable[[], None]], Any], Callable[[], None]]:
    from huey import MemoryHuey

    h = MemoryHuey("pool_bench", results=False)
    tasks = {fn: h.task(name=fn.__name__)(fn) for fn in (io_job, noop_job)}
    consumer = h.create_consumer(workers=threads, worker_type="thread", shutdown_timeout=5)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer.start()
    for s, handler in saved.items():  # an embedding host keeps its own handlers
        signal.signal(s, handler)

    def enqueue(fn: Callable[[], None]) -> None:
        tasks[fn]()

    def teardown() -> None:
        consumer.stop(graceful=True)

    return enqueue, teardown


CONTENDERS: dict[str, tuple[str, Callable[[], tuple[Any, Any]]]] = {
    "memqueue_1": ("PQ", lambda: memqueue(1)),
    "memqueue_4": ("Q", lambda: memqueue(4)),
    "memqueue_8": ("P", lambda: memqueue(8)),
    "flask_executor_8": ("P", lambda: flask_executor(8)),
    "huey_8": ("P", lambda: huey(8)),
}


def cell(contender: str, workload: str, n: int) -> dict[str, float]:
    """Run one cell in this (fresh) process."""
    enqueue, teardown = CONTENDERS[contender][1]()
    fn = io_job if workload == "P" else noop_job
    try:
        warm = 8
        for _ in range(warm):
            enqueue(fn)
        COUNTER.wait(warm, 60)
        start = time.perf_counter()
        for _ in range(n):
            enqueue(fn)
        COUNTER.wait(warm + n, 240)
        elapsed = time.perf_counter() - start
    finally:
        teardown()
    return {"jobs_per_s": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="PQ")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cell", nargs=3, metavar=("CONTENDER", "WORKLOAD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.cell:
        result = cell(args.cell[0], args.cell[1], int(args.cell[2]))
        print(MARK + json.dumps(result), flush=True)
        return
    sizes = {"P": 200 if args.quick else 2000, "Q": 500 if args.quick else 20000}
    reps = 1 if args.quick else args.reps
    results: dict[tuple[str, str], list[float]] = {}
    names = list(CONTENDERS)
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for workload in args.workloads:
            for name in order:
                if workload not in CONTENDERS[name][0]:
                    continue
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--cell", name, workload, str(sizes[workload])],
                    capture_output=True, text=True, timeout=600, check=False,
                )
                line = next((x for x in out.stdout.splitlines() if x.startswith(MARK)), None)
                if line is None:
                    print(f"{name} {workload} failed:\n{out.stdout}\n{out.stderr}", file=sys.stderr)
                    continue
                results.setdefault((workload, name), []).append(json.loads(line[len(MARK):])["jobs_per_s"])
                print(f"rep {rep + 1} {workload} {name}: {results[(workload, name)][-1]:,.0f} jobs/s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{w}:{n}": v for (w, n), v in results.items()}, f, indent=1)
    for workload in args.workloads:
        ref = statistics.median(results.get((workload, "memqueue_1"), [float("nan")]))
        title = {"P": f"P. I/O-bound: {sizes['P']:,} jobs sleeping {SLEEP * 1000:.0f} ms",
                 "Q": f"Q. no-op jobs end to end: {sizes['Q']:,} jobs"}[workload]
        print(f"\n#### {title}\n")
        print("| contender | jobs/s (higher is better) | × memqueue_1 |")
        print("|---|---|---|")
        for name in names:
            runs = results.get((workload, name))
            if not runs:
                continue
            med = statistics.median(runs)
            print(f"| `{name}` | {med:,.0f} [{min(runs):,.0f}–{max(runs):,.0f}] | {med / ref:.2f}× |")


if __name__ == "__main__":
    main()
