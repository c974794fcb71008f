#!/usr/bin/env python3
"""flask-memqueue against its in-process peers, side by side.

    python benchmarks/run.py                      # A-D (+J with a journal), 3 repetitions
    python benchmarks/run.py --reps 5 --workloads A,B
    python benchmarks/run.py --quick              # tiny sizes: checks that it runs
    python benchmarks/run.py --baseline           # and the last release beside the working tree
    python benchmarks/run.py --baseline v1.1      # or any git ref

Every (repetition, workload, contender) cell runs in a fresh subprocess, and
the contenders are rotated inside each repetition, so a noisy moment hits a
different contender each time; tables show the median and [min-max], and each
number as a ratio to ``raw_flask`` (a queue.Queue plus one consumer thread that
pushes an app context around every job: the floor of this design).

Workloads:
  A  enqueue cost (µs/job) with the consumer parked on a gate job, then the
     drain rate (jobs/s) once it is let go: producer side and consumer side alone.
  B  end-to-end jobs/s: enqueue N no-op jobs while the consumer runs, until the last ran.
  C  latency: µs from enqueue() to the job's first line, idle consumer, p50 and p99.
  D  memory: RSS growth per queued job, each with its own 100-character argument.
  J  durable path: the same A (enqueue µs) and B (jobs/s) with a journal
     (flask-memqueue MEMQUEUE_JOURNAL normal/full, huey SqliteHuey).
Peers are optional: a contender whose package is missing is skipped
(pip install -r benchmarks/requirements.txt).

The flask-memqueue contenders run the working tree this script belongs to
(whatever else is installed). With ``--baseline [REF]`` (default: the last
release, ``baseline.DEFAULT_REF``) each of them also runs as
``<name>@<REF>``: the package of that git ref, written to a temporary
directory and imported from there, on the same interpreter with the same
Flask, rotated with the others in the same run; every table then has a
``× <REF>`` column (the working tree's median divided by the ref's) and a
last table puts the two side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import baseline  # noqa: E402
import jobs  # noqa: E402

MARK = "@@RESULT "


# -- contenders ---------------------------------------------------------------
@dataclass
class Adapter:
    enqueue: Callable[..., Any]
    teardown: Callable[[], None]
    start: Callable[[], None] | None = None  # set if built with its consumer stopped
    wait_all: Callable[[float], None] = jobs.TRACKER.wait


CONTENDERS: dict[str, tuple[str, Callable[[bool, str], Adapter], str]] = {}


def contender(name: str, requires: str, workloads: str = "ABCD") -> Callable[[Any], Any]:
    def register(fn: Callable[[bool, str], Adapter]) -> Callable[[bool, str], Adapter]:
        CONTENDERS[name] = (requires, fn, workloads)
        return fn

    return register


@contender("raw_flask", "flask")
def setup_raw_flask(start: bool, tmp: str) -> Adapter:
    import queue
    import threading

    from flask import Flask

    app = Flask("bench_raw_flask")
    q: queue.Queue[Any] = queue.Queue()

    def consume() -> None:
        get, app_context = q.get, app.app_context
        while True:
            item = get()
            if item is None:
                return
            fn, args = item
            with app_context():
                try:
                    fn(*args)
                except Exception:
                    pass

    thread = threading.Thread(target=consume, daemon=True)

    def teardown() -> None:
        if thread.ident is not None:
            q.put(None)
            thread.join(5)

    if start:
        thread.start()
    return Adapter(lambda fn, *a: q.put((fn, a)), teardown, None if start else thread.start)


def _memqueue(start: bool, tmp: str, **config: Any) -> Adapter:
    from flask import Flask

    from flask_memqueue import MemQueue

    app = Flask("bench_flask_memqueue")
    app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_URL_PREFIX=None, **config)
    mq = MemQueue(app)
    for fn in (jobs.noop, jobs.stamp, jobs.gate):
        mq.task(fn)
    ctx = app.app_context()
    ctx.push()

    def teardown() -> None:
        mq.shutdown(wait=False)
        ctx.pop()

    def wait_all(timeout: float) -> None:
        if not mq.join(timeout):
            raise TimeoutError("mq.join() timed out")

    return Adapter(mq.enqueue, teardown, wait_all=wait_all)


@contender("flask_memqueue", "flask_memqueue", workloads="ABCDJ")
def setup_memqueue(start: bool, tmp: str) -> Adapter:
    return _memqueue(start, tmp)


@contender("memqueue_journal_normal", "flask_memqueue", workloads="J")
def setup_journal_normal(start: bool, tmp: str) -> Adapter:
    return _memqueue(start, tmp, MEMQUEUE_JOURNAL=os.path.join(tmp, "bench.db"), MEMQUEUE_JOURNAL_SYNC="normal")


@contender("memqueue_journal_full", "flask_memqueue", workloads="J")
def setup_journal_full(start: bool, tmp: str) -> Adapter:
    return _memqueue(start, tmp, MEMQUEUE_JOURNAL=os.path.join(tmp, "bench.db"), MEMQUEUE_JOURNAL_SYNC="full")


@contender("flask_executor", "flask_executor")
def setup_flask_executor(start: bool, tmp: str) -> Adapter:
    from flask import Flask
    from flask_executor import Executor

    app = Flask("bench_flask_executor")
    app.config["EXECUTOR_MAX_WORKERS"] = 1
    executor = Executor(app)
    ctx = app.test_request_context()  # submit() copies the request context
    ctx.push()

    def teardown() -> None:
        executor._self.shutdown(wait=False, cancel_futures=True)
        ctx.pop()

    return Adapter(executor.submit, teardown)


def _huey(huey: Any, start: bool) -> Adapter:
    import signal

    tasks: dict[Any, Any] = {}

    def enqueue(fn: Any, *args: Any) -> None:
        task = tasks.get(fn)
        if task is None:
            task = tasks[fn] = huey.task(name=fn.__name__)(fn)
        task(*args)

    consumer = huey.create_consumer(workers=1, worker_type="thread")

    def go() -> None:
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        consumer.start()
        for s, h in saved.items():
            signal.signal(s, h)

    def teardown() -> None:
        with contextlib.suppress(Exception):
            consumer.stop(graceful=False)

    if start:
        go()
    return Adapter(enqueue, teardown, None if start else go)


@contender("huey_memory", "huey")
def setup_huey_memory(start: bool, tmp: str) -> Adapter:
    from huey import MemoryHuey

    return _huey(MemoryHuey("bench", results=False), start)


@contender("huey_sqlite", "huey", workloads="J")
def setup_huey_sqlite(start: bool, tmp: str) -> Adapter:
    from huey import SqliteHuey

    return _huey(SqliteHuey("bench", filename=os.path.join(tmp, "huey.db"), results=False), start)


# -- workloads (run inside a child) -------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _parked(name: str, n: int, tmp: str, payload: int | None = None) -> dict[str, Any]:
    """A and D: enqueue n jobs while the consumer cannot run; A also times the drain."""
    adapter = CONTENDERS[name][1](False, tmp)
    gated = adapter.start is None
    try:
        if gated:  # the consumer starts with the first job: park it on a gate
            adapter.enqueue(jobs.gate, 0)
            if not jobs.GATE_ARRIVED.acquire(timeout=30):
                raise TimeoutError("the gate job never started")
        args = [("x" * (payload - 8)) + f"{i:08d}" for i in range(n)] if payload else None
        jobs.TRACKER.reset(n)
        enqueue, noop = adapter.enqueue, jobs.noop
        gc.collect()
        before = _rss()
        t0 = time.perf_counter()
        if args is None:
            for i in range(n):
                enqueue(noop, i)
        else:
            for a in args:
                enqueue(noop, a)
        elapsed = time.perf_counter() - t0
        grown = _rss() - before
        t1 = time.perf_counter()
        if gated:
            jobs.GATE_OPEN.set()
        else:
            adapter.start()  # type: ignore[misc]
        jobs.TRACKER.wait(240)
        drain = time.perf_counter() - t1
        return {
            "enqueue_us": elapsed / n * 1e6,
            "drain_jobs_s": n / drain,
            "bytes_per_job": grown / n,
            "consumer": "gated" if gated else "not started",
        }
    finally:
        jobs.GATE_OPEN.set()
        adapter.teardown()


def _throughput(name: str, n: int, tmp: str) -> dict[str, Any]:
    adapter = CONTENDERS[name][1](True, tmp)
    try:
        jobs.TRACKER.reset(100)
        for i in range(100):
            adapter.enqueue(jobs.noop, i)
        jobs.TRACKER.wait(60)
        jobs.TRACKER.reset(n)
        enqueue, noop = adapter.enqueue, jobs.noop
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(noop, i)
        t1 = time.perf_counter()
        jobs.TRACKER.wait(240)
        t2 = time.perf_counter()
        return {"jobs_s": n / (t2 - t0), "enqueue_phase_us": (t1 - t0) / n * 1e6}
    finally:
        adapter.teardown()


def _latency(name: str, count: int, tmp: str) -> dict[str, Any]:
    adapter = CONTENDERS[name][1](True, tmp)
    try:
        samples = []
        deadline = time.monotonic() + 30
        warm = 20
        jobs.TRACKER.reset(0, count + warm)
        for i in range(count + warm):
            if time.monotonic() > deadline:
                break
            jobs.TRACKER.reset(1, 1)
            t0 = time.perf_counter_ns()
            adapter.enqueue(jobs.stamp, 0)
            jobs.TRACKER.wait(10)
            if i >= warm:
                samples.append((jobs.TRACKER.stamps[0] - t0) / 1000)
            time.sleep(0.001)  # the benchmark's idle gap between jobs, not a synchronisation
        samples.sort()

        def rank(p: float) -> float:
            return samples[min(len(samples) - 1, max(0, int(round(p * len(samples) + 0.5)) - 1))]

        return {"p50_us": rank(0.50), "p99_us": rank(0.99), "samples": len(samples)}
    finally:
        adapter.teardown()


def child(name: str, workload: str, opts: dict[str, Any]) -> dict[str, Any]:
    base, _, ref = name.partition("@")
    if base in OURS:  # before anything imports flask_memqueue
        baseline.use(os.environ[baseline.ENV] if ref else baseline.WORKTREE)
    if ref:
        CONTENDERS[name] = CONTENDERS[base]
    tmp = tempfile.mkdtemp(prefix="mqbench-")
    os.makedirs(os.path.join(tmp, "a"))
    os.makedirs(os.path.join(tmp, "b"))
    try:
        result = _cell(name, workload, opts, tmp)
        if base in OURS:
            result["from"] = baseline.imported_from()  # which flask_memqueue this cell measured
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cell(name: str, workload: str, opts: dict[str, Any], tmp: str) -> dict[str, Any]:
    if workload == "A":
        return _parked(name, opts["n"], tmp)
    if workload == "B":
        return _throughput(name, opts["n"], tmp)
    if workload == "C":
        return _latency(name, opts["c_count"], tmp)
    if workload == "D":
        return _parked(name, opts["d_n"], tmp, payload=100)
    if workload == "J":
        out = _parked(name, opts["j_n"], os.path.join(tmp, "a"))
        out.update(_throughput(name, opts["j_n"], os.path.join(tmp, "b")))
        return out
    raise ValueError(workload)


# -- the parent -----------------------------------------------------------------
METRICS = {  # workload -> [(metric, label, higher is better)]
    "A": [("enqueue_us", "enqueue µs/job", False), ("drain_jobs_s", "drain jobs/s", True)],
    "B": [("jobs_s", "jobs/s", True), ("enqueue_phase_us", "enqueue-phase µs/job", False)],
    "C": [("p50_us", "p50 µs", False), ("p99_us", "p99 µs", False)],
    "D": [("bytes_per_job", "RSS bytes/job", False)],
    "J": [("enqueue_us", "durable enqueue µs/job", False), ("jobs_s", "end-to-end jobs/s", True)],
}
TITLES = {
    "A": "A. enqueue cost, consumer parked",
    "B": "B. end-to-end throughput",
    "C": "C. enqueue -> handler-start latency, idle consumer",
    "D": "D. memory per queued job (100-character argument each)",
    "J": "J. durable path (journal)",
}


@dataclass
class Results:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


#: The contenders that run flask-memqueue: the ones ``--baseline`` runs twice.
OURS = ("flask_memqueue", "memqueue_journal_normal", "memqueue_journal_full")


def available(name: str) -> bool:
    import importlib.util

    base = name.split("@")[0]
    if base in OURS:
        return True  # the working tree, or the baseline's directory: both exist
    return importlib.util.find_spec(CONTENDERS[base][0]) is not None


def run_cell(name: str, workload: str, opts: dict[str, Any]) -> dict[str, Any] | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, workload, json.dumps(opts)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired:
        print(f"  {workload} {name}: timed out", file=sys.stderr)
        return None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])  # type: ignore[no-any-return]
    print(f"  {workload} {name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def ratio(value: float, base: float | None) -> str:
    if not base:
        return "–"
    r = value / base
    if r >= 0.1:
        return f"{r:.2f}×"
    return f"1/{base / value:.0f}" if value else "0×"  # a memory growth below one page: 0 bytes per job


def median_of(results: Results, name: str, workload: str, key: str) -> float | None:
    vals = [r[key] for r in results.runs.get((name, workload), []) if key in r]
    return statistics.median(vals) if vals else None


def render(results: Results, workloads: str, names: list[str], reference: str, label: str | None = None) -> str:
    """The tables: median [min–max], ``× reference``, and with a baseline ``× label``
    (a contender against its own ``@label`` run, same workload, same run)."""
    out = []
    for w in workloads:
        rows = [n for n in names if (n, w) in results.runs and results.runs[(n, w)]]
        if not rows:
            continue
        ref = "huey_sqlite" if w == "J" else reference  # J: against the durable peer
        base = ref if (ref, w) in results.runs else None
        out.append(f"\n### {TITLES[w]}\n")
        head = ["contender"]
        for _, title, higher in METRICS[w]:
            head += [f"{title} ({'higher' if higher else 'lower'} is better)", f"× {base}" if base else "×"]
            if label:
                head.append(f"× {label}")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for n in rows:
            runs = results.runs[(n, w)]
            cells = [f"`{n}`"]
            for key, _, _ in METRICS[w]:
                vals = [r[key] for r in runs if key in r]
                if not vals:
                    cells += ["–", "–"] + (["–"] if label else [])
                    continue
                med = statistics.median(vals)
                base_med = median_of(results, base, w, key) if base else None
                cells += [f"{fmt(med)} [{fmt(min(vals))}–{fmt(max(vals))}]", ratio(med, base_med)]
                if label:
                    twin = median_of(results, f"{n}@{label}", w, key) if "@" not in n else None
                    cells.append(ratio(med, twin) if twin else "–")
            out.append("| " + " | ".join(cells) + " |")
    if label:
        out.append(f"\n### The working tree against {label} (same run, medians; × = working tree ÷ {label})\n")
        out.append(f"| workload | metric | contender | working tree | {label} | × {label} | better |")
        out.append("|---|---|---|---|---|---|---|")
        for w in workloads:
            for n in names:
                if "@" in n:
                    continue
                for key, title, higher in METRICS[w]:
                    a, b = median_of(results, n, w, key), median_of(results, f"{n}@{label}", w, key)
                    if a is None or b is None:
                        continue
                    better = a > b if higher else a < b
                    out.append(f"| {w} | {title} | `{n}` | {fmt(a)} | {fmt(b)} | {ratio(a, b)} |"
                               f" {'yes' if better else 'no'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("CONTENDER", "WORKLOAD", "OPTS"), help=argparse.SUPPRESS)
    parser.add_argument("--contenders", default="", help="comma-separated; default: every one installed")
    parser.add_argument("--workloads", default="ABCDJ")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=20_000, help="jobs per run in A and B")
    parser.add_argument("--c-count", type=int, default=1000, help="jobs in C")
    parser.add_argument("--d-n", type=int, default=100_000, help="queued jobs in D")
    parser.add_argument("--j-n", type=int, default=2000, help="jobs per run in J")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke test")
    parser.add_argument("--json", help="save every run to this file")
    parser.add_argument(
        "--baseline", nargs="?", const=baseline.DEFAULT_REF, metavar="REF",
        help=f"also run this git ref's flask-memqueue beside the working tree (default {baseline.DEFAULT_REF})",
    )
    args = parser.parse_args(argv)

    if args.child:
        name, workload, opts = args.child
        result = child(name, workload, json.loads(opts))
        print(MARK + json.dumps(result), flush=True)
        return 0

    opts = {"n": args.n, "c_count": args.c_count, "d_n": args.d_n, "j_n": args.j_n}
    reps = args.reps
    if args.quick:
        opts = {"n": 500, "c_count": 20, "d_n": 2000, "j_n": 100}
        reps = 1
    names = [n.strip() for n in args.contenders.split(",") if n.strip()] or list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    label = None
    if args.baseline:
        directory, label = baseline.checkout(args.baseline)
        os.environ[baseline.ENV] = directory  # the children read it
        for n in [n for n in names if n in OURS]:
            names.insert(names.index(n) + 1, f"{n}@{label}")
            CONTENDERS[f"{n}@{label}"] = CONTENDERS[n]
    try:
        return _run(args, opts, reps, names, workloads_of(args), label)
    finally:
        if args.baseline:
            baseline.remove(os.environ[baseline.ENV])


def workloads_of(args: argparse.Namespace) -> str:
    return "".join(w for w in args.workloads.replace(",", "").upper() if w in METRICS)


def _run(
    args: argparse.Namespace, opts: dict[str, Any], reps: int, names: list[str], workloads: str, label: str | None
) -> int:
    skipped = [n for n in names if not available(n)]
    names = [n for n in names if n not in skipped]
    results = Results()
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)] if names else []
        for w in workloads:
            for n in order:
                if w not in CONTENDERS[n][2]:
                    continue
                res = run_cell(n, w, opts)
                if res is not None:
                    results.runs.setdefault((n, w), []).append(res)
                    print(f"[rep {rep + 1}/{reps}] {w} {n}: {res}", file=sys.stderr, flush=True)
    import platform

    print(f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
          f"{reps} repetition(s), median [min–max], ratios to raw_flask (J: to huey_sqlite)"
          + (f" and to {label}, the baseline, run beside the working tree." if label else "."))
    if skipped:
        print(f"Skipped (not installed): {', '.join(skipped)}")
    print(render(results, workloads, names, "raw_flask", label))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"opts": opts, "baseline": label, "runs": {f"{n}/{w}": r for (n, w), r in results.runs.items()}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
