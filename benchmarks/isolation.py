#!/usr/bin/env python3
"""Isolated jobs (issue 22): CPU-bound jobs in child processes against the same jobs on threads,
and the cost of isolation per no-op job, side by side in one run.

    python benchmarks/isolation.py                      # 2,000 jobs of 50 ms of pure Python, 2 threads
    python benchmarks/isolation.py --jobs 200 --work 0.05 --noop 2000

Two contenders, each one app on the memory store with one queue of ``--threads``
threads, and the same task (a pure-Python loop calibrated to ``--work`` seconds
on this machine): ``threads`` (the task as it is: the GIL lets one thread
compute at a time) and ``isolated`` (``.options(isolated=True)``: each thread's
job runs in a warm child process, so the threads' jobs compute at once). Each
queues every job first, then starts the consumers and times until the last job
finished (wall clock). The children are started (warmed) before the clock
starts: the import of the app is paid once per child, not per job.

Then the overhead: ``--noop`` no-op jobs on one thread, in a warm child against
in the thread, in µs per job (wall clock, one after the other: the latency of a
job's trip to the child and back).

The app is made by :func:`create_app` (the child of an isolated job finds it as
the factory that called ``init_app``; this script is loaded in the child under
``__mp_main__``, so its ``main()`` does not run there).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from flask import Flask

from flask_memqueue import MemQueue

mq = MemQueue()


def spin(loops: int) -> int:
    n = 0
    for i in range(loops):
        n += i & 7
    return n


@mq.task(name="bench.cpu")
def cpu(loops: int) -> int:
    return spin(loops)


@mq.task(name="bench.noop")
def noop() -> None:
    return None


def create_app() -> Flask:
    app = Flask("isolation-bench")
    app.config.update(MEMQUEUE_QUEUES={"default": int(os.environ.get("ISO_BENCH_THREADS", "2"))},
                      MEMQUEUE_MAXSIZE=0, MEMQUEUE_MAX_JOBS_PER_CHILD=1_000_000)
    mq.init_app(app)
    return app


def calibrate(seconds: float) -> int:
    """Loops of :func:`spin` that take about ``seconds`` here (the best of 5)."""
    loops = 100_000
    best = min(_timed(loops) for _ in range(5))
    return max(1, int(loops * seconds / best))


def _timed(loops: int) -> float:
    started = time.perf_counter()
    spin(loops)
    return time.perf_counter() - started


def run(app: Flask, task: Any, args: tuple[Any, ...], jobs: int, isolated: bool) -> float:
    """Seconds from starting the consumers to the last of ``jobs`` jobs finished."""
    queue = app.extensions["memqueue"]
    call = task.options(isolated=True) if isolated else task
    with app.app_context():
        if isolated:  # warm: one child per thread, started before the clock
            warm = [noop.options(isolated=True).delay() for _ in range(queue.threads["default"] * 2)]
            queue.ensure_consumer()
            for job in warm:
                job.wait(timeout=120)
            mq.join(timeout=120)
        pending = [call.delay(*args) for _ in range(jobs)]
        started = time.perf_counter()
        queue.ensure_consumer()
        assert mq.join(timeout=jobs * 10 + 120)
        elapsed = time.perf_counter() - started
        failed = [j for j in pending if j.status != "succeeded"]
        assert not failed, failed[0].error
    return elapsed


def latency(app: Flask, jobs: int, isolated: bool) -> float:
    """µs per no-op job, one at a time (enqueue, run, wait), on a warm consumer (and child)."""
    call = noop.options(isolated=True) if isolated else noop
    with app.app_context():
        for _ in range(20):
            call.delay().wait(timeout=60)
        started = time.perf_counter()
        for _ in range(jobs):
            call.delay().wait(timeout=60)
        return (time.perf_counter() - started) / jobs * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--work", type=float, default=0.05, help="seconds of pure Python per job")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noop", type=int, default=2000, help="no-op jobs for the overhead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["ISO_BENCH_THREADS"] = str(args.threads)
    loops = calibrate(args.work)
    results: dict[str, Any] = {"jobs": args.jobs, "work": args.work, "threads": args.threads, "loops": loops,
                               "cpus": os.cpu_count(), "load": os.getloadavg()}
    for kind in ("isolated", "threads"):  # one app each, so the isolated one's children do not linger
        app = create_app()
        results[kind] = run(app, cpu, (loops,), args.jobs, kind == "isolated")
        app.extensions["memqueue"].shutdown()
    os.environ["ISO_BENCH_THREADS"] = "1"
    app = create_app()
    results["noop_thread_us"] = latency(app, args.noop, False)
    results["noop_isolated_us"] = latency(app, args.noop, True)
    app.extensions["memqueue"].shutdown()
    results["speedup"] = results["threads"] / results["isolated"]
    results["overhead"] = results["noop_isolated_us"] / results["noop_thread_us"]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.jobs} CPU-bound jobs of {args.work * 1000:.0f} ms of pure Python, a queue of {args.threads}"
          f" threads, memory store; {results['cpus']} CPUs, load {results['load'][0]:.2f}")
    for kind in ("isolated", "threads"):
        print(f"  {kind:<9} {results[kind]:8.2f} s  {args.jobs / results[kind]:8.1f} jobs/s")
    print(f"  isolated / threads: {results['speedup']:.2f}x")
    print(f"no-op job, enqueue -> run -> wait, one at a time ({args.noop} jobs):")
    print(f"  thread   {results['noop_thread_us']:8.1f} µs")
    print(f"  isolated {results['noop_isolated_us']:8.1f} µs ({results['overhead']:.1f}x a thread job)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
