#!/usr/bin/env python3
"""The cost of one enqueue and of one consumed job, measured two ways that a busy machine disturbs little.

    python benchmarks/hotpath.py                     # CPU time: µs per enqueue and per drained job
    python benchmarks/hotpath.py --instructions      # the same under valgrind: instructions (deterministic)
    python benchmarks/hotpath.py --misses            # memory traffic: L1 data cache misses (cachegrind)
    python benchmarks/hotpath.py --contender raw_flask
    python benchmarks/hotpath.py --ref e959e79       # the package of a git ref (the last release)
    python benchmarks/hotpath.py --switches          # B: jobs/s and context switches, run by run
    python benchmarks/hotpath.py --latency           # C under valgrind: instructions per round trip
    python benchmarks/hotpath.py --path              # C's critical path: bytecodes, by function

The workload is the peers harness' A: no-op jobs enqueued from the main thread
while the consumer is parked on a gate job, then drained by the app's own
consumer thread. Wall-clock numbers on a shared 2-core machine swing by tens
of percent; these do not, so a change of a few percent on the hot path can
be seen:

- CPU time (default): the enqueue loop's process CPU time (the consumer is
  parked, so that is the main thread's), and the consumer thread's own CPU
  time (``time.thread_time()`` from its first job to its last); the minimum
  and the median of ``--reps`` runs of ``--n`` jobs, in µs per job.
- ``--instructions``: instructions executed (``valgrind --tool=callgrind``,
  ``PYTHONHASHSEED=0``) per enqueue and per drained job, from the difference
  between a run of ``--n`` jobs and one of ``--n / 6``, so start-up costs
  cancel; the same on every run of the same code. It does not see cache
  misses or memory traffic (the drain's CPU time ratio to raw_flask is worse
  than its instruction ratio), so use it for small steps and check the CPU time.
- ``--misses``: what ``--instructions`` does not see, the same way
  (``valgrind --tool=cachegrind --cache-sim=yes``, the same two runs): data
  reads and writes, first-level data cache misses and last-level ones, per
  enqueue and per drained job. A job's objects that were made long ago (a
  queued job, a finished one dropped from ``MEMQUEUE_MAX_FINISHED``'s record)
  are read from a farther cache: this is where a drained job costs more CPU
  time than its instructions say.

``--switches`` runs the harness' B instead (enqueue ``--n`` jobs while the
consumer runs, until the last one ran) and prints each run: jobs/s, the
enqueue phase in µs per job, and the process's voluntary context switches. A
run with thousands of switches had its producer and consumer handing the
store's lock back and forth (a lock convoy); a run without has a few dozen.

``--latency`` runs the harness' C under valgrind instead (enqueue one job,
wait until its first line ran, sleep 0.2 ms, repeat) and prints the
instructions of one such round trip, every thread's (the enqueue, the wake-up
of the idle consumer, the job's start, the consumer going back to sleep and
the waiting thread's Event): what C's wall-clock latency is made of besides
the two thread wake-ups, which every contender pays alike.

``--path`` counts C's critical path instead: the bytecodes every thread runs
between the ``enqueue()`` call and the job's first line (``sys.settrace``
with opcode events; the same on every run). The round trip's instructions
include work done after the job started (the consumer settling it and going
back to sleep), which delays no job; this is the part that does.

``--contender raw_flask`` runs the floor of this design instead (a
``queue.Queue`` and one thread pushing an app context around every job), as
the peers harness defines it.
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import baseline  # noqa: E402


def _one_run(contender: str, n: int, drain: bool) -> tuple[float, float]:
    """One process's run: (enqueue µs/job, drain µs/job) in CPU time."""
    from flask import Flask

    hits: list[None] = []
    done = threading.Event()
    stamps = [0.0, 0.0]

    def noop(i: int) -> None:
        hits.append(None)
        count = len(hits)
        if count == 1:
            stamps[0] = time.thread_time()
        if count >= n:
            stamps[1] = time.thread_time()
            done.set()

    arrived, release = threading.Semaphore(0), threading.Event()

    def gate() -> None:
        arrived.release()
        release.wait(600)

    app = Flask("hotpath")
    if contender == "raw_flask":
        q: queue.Queue[Any] = queue.Queue()

        def consume() -> None:  # as the peers harness' raw_flask
            get, task_done, app_context = q.get, q.task_done, app.app_context
            while True:
                item = get()
                try:
                    fn, args = item
                    with app_context():
                        fn(*args)
                except Exception:
                    pass
                finally:
                    task_done()

        threading.Thread(target=consume, daemon=True).start()

        def enqueue(fn: Any, *args: Any) -> None:
            q.put((fn, args))
    else:
        from flask_memqueue import MemQueue

        app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_URL_PREFIX=None)
        mq = MemQueue(app)
        ctx = app.app_context()
        ctx.push()
        enqueue = mq.enqueue  # type: ignore[assignment]
    enqueue(gate)
    arrived.acquire()
    for i in range(100):  # warm-up, drained with the rest
        enqueue(noop, i)
    n += 100
    t0 = time.process_time()
    for i in range(n - 100):
        enqueue(noop, i)
    t1 = time.process_time()
    if not drain:
        os._exit(0)
    release.set()
    if not done.wait(600):
        raise TimeoutError("the jobs did not run")
    return (t1 - t0) / (n - 100) * 1e6, (stamps[1] - stamps[0]) / (n - 1) * 1e6


def _end_to_end(contender: str, n: int) -> str:
    """One process's B run: jobs/s, enqueue-phase µs/job, voluntary context switches."""
    import resource

    from flask import Flask

    hits: list[None] = []
    done = threading.Event()
    expected = [100]

    def noop(i: int) -> None:
        hits.append(None)
        if len(hits) >= expected[0]:
            done.set()

    app = Flask("hotpath")
    if contender == "raw_flask":
        q: queue.Queue[Any] = queue.Queue()

        def consume() -> None:
            get, task_done, app_context = q.get, q.task_done, app.app_context
            while True:
                item = get()
                try:
                    fn, args = item
                    with app_context():
                        fn(*args)
                except Exception:
                    pass
                finally:
                    task_done()

        threading.Thread(target=consume, daemon=True).start()

        def enqueue(fn: Any, *args: Any) -> None:
            q.put((fn, args))
    else:
        from flask_memqueue import MemQueue

        app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_URL_PREFIX=None)
        mq = MemQueue(app)
        ctx = app.app_context()
        ctx.push()
        enqueue = mq.enqueue  # type: ignore[assignment]
    for i in range(100):  # warm-up
        enqueue(noop, i)
    if not done.wait(60):
        raise TimeoutError("the warm-up jobs did not run")
    hits.clear()
    done.clear()
    expected[0] = n
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    t0 = time.perf_counter()
    for i in range(n):
        enqueue(noop, i)
    t1 = time.perf_counter()
    if not done.wait(600):
        raise TimeoutError("the jobs did not run")
    t2 = time.perf_counter()
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
    return f"{n / (t2 - t0):,.0f} jobs/s, enqueue phase {(t1 - t0) / n * 1e6:.2f} µs/job, {switches} switches"


def _idle_contender(contender: str) -> Any:
    """The contender's enqueue, its consumer started and idle (C's setting)."""
    from flask import Flask

    app = Flask("hotpath")
    if contender == "raw_flask":
        q: queue.Queue[Any] = queue.Queue()

        def consume() -> None:  # as the peers harness' raw_flask
            get, task_done, app_context = q.get, q.task_done, app.app_context
            while True:
                item = get()
                try:
                    fn, args = item
                    with app_context():
                        fn(*args)
                except Exception:
                    pass
                finally:
                    task_done()

        threading.Thread(target=consume, daemon=True).start()

        def enqueue(fn: Any, *args: Any) -> None:
            q.put((fn, args))

        return enqueue
    from flask_memqueue import MemQueue

    app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_URL_PREFIX=None)
    mq = MemQueue(app)
    app.app_context().push()
    return mq.enqueue


def _round_trips(contender: str, n: int, path: bool = False) -> None:
    """One process's C loop: ``n`` round trips of one job each (under valgrind), or
    (``path``) the bytecodes run between enqueue() and the job's first line, every thread's."""
    box: list[threading.Event] = [threading.Event()]
    on = [False]
    counts: collections.Counter[str] = collections.Counter()

    def stamp(i: int) -> None:
        on[0] = False
        box[0].set()

    def opcode(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode" and on[0]:
            code = frame.f_code
            counts[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
        return opcode

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return opcode

    if path:
        threading.settrace(trace)  # before the consumer thread starts
    enqueue = _idle_contender(contender)
    if path:
        sys.settrace(trace)
    for i in range(n + 20):  # 20 warm-up round trips
        if i == 20:
            counts.clear()
        event = box[0] = threading.Event()
        on[0] = path
        enqueue(stamp, i)
        if not event.wait(60):
            raise TimeoutError(f"job {i} did not start")
        time.sleep(0.0002)
    if path:
        sys.settrace(None)
        print(f"@@ {sum(counts.values()) / n:.0f}")
        for name, count in counts.most_common(12):
            print(f"@@   {count / n:6.1f} {name}")
    sys.stdout.flush()
    os._exit(0)


def _label(args: argparse.Namespace) -> str:
    return getattr(args, "contender_label", args.contender)


def _instructions(args: argparse.Namespace) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2

    def run(mode: str, n: int, tool: list[str]) -> str:
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.run(
            [valgrind, *tool, sys.executable, os.path.abspath(__file__),
             "--child", mode, "--n", str(n), "--contender", args.contender],
            capture_output=True, text=True, env=env, check=False,
        )
        if "refs:" not in proc.stderr:
            raise SystemExit(f"valgrind gave no count:\n{proc.stderr[-2000:]}")
        return proc.stderr

    def count(mode: str, n: int) -> int:
        out = run(mode, n, ["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        return _valgrind_number(out, "I   refs" if "I   refs" in out else "refs")

    if args.misses:
        return _misses(args, run)

    if args.latency:
        big, small = 1200, 200
        trip = (count("c", big) - count("c", small)) / (big - small)
        print(f"{_label(args)}: {trip:,.0f} instructions per C round trip, every thread's"
              f" (callgrind, {small:,} and {big:,} round trips)")
        return 0
    big, small = args.n, max(1, args.n // 6)
    enq = (count("enqueue", big) - count("enqueue", small)) / (big - small)
    both = (count("both", big) - count("both", small)) / (big - small)
    print(f"{_label(args)}: {enq:,.0f} instructions per enqueue, {both - enq:,.0f} per drained job"
          f" (callgrind, {small:,} and {big:,} jobs)")
    return 0


_MISS_EVENTS = (("D   refs", "data refs"), ("D1  misses", "L1d misses"), ("LLd misses", "LLd misses"))


def _valgrind_number(out: str, name: str) -> int:
    found = re.search(re.escape(name) + r":\s+([\d,]+)", out)
    if found is None:
        raise SystemExit(f"valgrind gave no {name!r}:\n{out[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _misses(args: argparse.Namespace, run: Any) -> int:
    """--misses: data references and cache misses per enqueue and per drained job (cachegrind)."""
    big, small = args.n, max(1, args.n // 6)
    tool = ["--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null"]

    def per_job(mode: str) -> list[float]:
        a, b = run(mode, big, tool), run(mode, small, tool)
        return [(_valgrind_number(a, e) - _valgrind_number(b, e)) / (big - small) for e, _ in _MISS_EVENTS]

    enq, both = per_job("enqueue"), per_job("both")
    for label, values in (("per enqueue", enq), ("per drained job", [x - y for x, y in zip(both, enq, strict=True)])):
        shown = ", ".join(f"{v:,.1f} {name}" for v, (_, name) in zip(values, _MISS_EVENTS, strict=True))
        print(f"{_label(args)} {label}: {shown} (cachegrind, {small:,} and {big:,} jobs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender", default="flask_memqueue", choices=["flask_memqueue", "raw_flask"])
    parser.add_argument("--n", type=int, default=20_000, help="jobs per run")
    parser.add_argument("--reps", type=int, default=9, help="runs, each in a fresh process (CPU time)")
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind instead")
    parser.add_argument("--misses", action="store_true", help="data cache misses under valgrind (cachegrind)")
    parser.add_argument("--ref", help="measure this git ref's package instead of the working tree")
    parser.add_argument("--switches", action="store_true", help="B, run by run: jobs/s and context switches")
    parser.add_argument("--latency", action="store_true", help="C under valgrind: instructions per round trip")
    parser.add_argument("--path", action="store_true", help="C: bytecodes between enqueue() and the job's start")
    parser.add_argument("--child", choices=["enqueue", "both", "cpu", "b", "c", "path"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        baseline.use(os.environ.get(baseline.ENV, baseline.WORKTREE))
        if args.child in ("c", "path"):
            _round_trips(args.contender, args.n, path=args.child == "path")
        if args.child == "b":
            print("@@ " + _end_to_end(args.contender, args.n), flush=True)
            os._exit(0)
        enq, drain = _one_run(args.contender, args.n, args.child != "enqueue")
        print(f"@@ {enq} {drain}", flush=True)
        os._exit(0)
    made = None
    if args.ref:
        made, label = baseline.checkout(args.ref)
        os.environ[baseline.ENV] = made
        args.contender_label = f"{args.contender}@{label}"
    try:
        if args.switches:
            return _switches(args)
        if args.path:
            return _path(args)
        return _instructions(args) if args.instructions or args.latency or args.misses else _cpu(args)
    finally:
        if made is not None:
            baseline.remove(made)


def _switches(args: argparse.Namespace) -> int:
    for run in range(args.reps):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "b", "--n", str(args.n), "--contender",
             args.contender], capture_output=True, text=True, check=True,
        ).stdout
        print(f"{_label(args)} run {run + 1}: {out.split('@@ ')[1].strip()}", flush=True)
    return 0


def _path(args: argparse.Namespace) -> int:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", "path", "--n", "100", "--contender", args.contender],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = [line[3:] for line in out.splitlines() if line.startswith("@@ ")]
    print(f"{_label(args)}: {lines[0]} bytecodes from enqueue() to the job's first line, every thread's"
          " (C's critical path; 100 round trips)")
    print("\n".join(lines[1:]))
    return 0


def _cpu(args: argparse.Namespace) -> int:
    enqs, drains = [], []
    for _ in range(args.reps):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "cpu", "--n", str(args.n), "--contender",
             args.contender], capture_output=True, text=True, check=True,
        ).stdout
        enq, drain = map(float, out.split("@@ ")[1].split())
        enqs.append(enq)
        drains.append(drain)
    print(f"{_label(args)}: CPU µs per enqueue min {min(enqs):.3f} median {statistics.median(enqs):.3f};"
          f" per drained job min {min(drains):.3f} median {statistics.median(drains):.3f}"
          f" ({args.reps} runs of {args.n:,} jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
