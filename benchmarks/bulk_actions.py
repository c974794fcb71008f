"""Bulk actions on ``--n`` matching jobs: one step of the store per batch against one per job.

For each store (the SQLite journal, Redis, optionally PostgreSQL), ``--n`` jobs are queued
with ``enqueue_many`` (untimed), then three bulk actions are timed, each over every match:
``cancel`` (queued -> cancelled), ``retry`` (cancelled -> queued), and, after a second
(untimed) cancel, ``delete`` (cancelled -> gone). Two modes run side by side, interleaved in
each repetition on the same store and server: ``batched`` (the store's
``capabilities.bulk_actions``: :meth:`Storage.act_on_batch`, one transaction or script per
500 jobs) and ``one-by-one`` (the same store with the capability turned off: the loop every
store had before, one conditional step per job). The time covers the whole ``act_on``
(reading the matches, then changing them). The median of ``--reps`` is reported, with each
mode's ratio to one-by-one.

    python benchmarks/bulk_actions.py --n 10000 --reps 3
    python benchmarks/bulk_actions.py --stores sqlite,redis,postgres --postgres-url postgresql://...

Redis: without ``--redis-url`` it starts its own redis-server on a free port (no persistence).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis_workers import start_redis  # noqa: E402 - run as a script from benchmarks/

ACTIONS = ("cancel", "retry", "delete")


def noop(payload: str) -> None:
    """The jobs' task (never run: no consumer)."""


def make_app(url: str, name: str) -> Any:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()
    task = mq.task(name="bench.bulk")(noop)
    app = Flask(name)
    app.config.update(MEMQUEUE_STORAGE=url, MEMQUEUE_MAXSIZE=0, MEMQUEUE_CONSUMER=False, MEMQUEUE_URL_PREFIX=None,
                      MEMQUEUE_MAX_FINISHED=10**7)
    mq.init_app(app)
    return app, mq, task


def one_run(app: Any, mq: Any, task: Any, n: int, batched: bool) -> dict[str, float]:
    from flask_memqueue.jobfilter import JobFilter

    queue = app.extensions["memqueue"]
    storage = queue.storage
    declared = type(storage).capabilities
    storage.capabilities = dataclasses.replace(declared, bulk_actions=batched)  # this object only
    every = JobFilter(task="bench.bulk")
    out: dict[str, float] = {}
    try:
        with app.app_context():
            mq.enqueue_many([task.s("x" * 100) for _ in range(n)])
            for action in ACTIONS:
                if action == "delete":
                    assert queue.act_on(every, "cancel") == n
                t0 = time.perf_counter()
                changed = queue.act_on(every, action)
                out[action] = time.perf_counter() - t0
                assert changed == n, (action, changed)
    finally:
        storage.capabilities = declared
    return out


def bench_store(label: str, url: str, n: int, reps: int) -> list[str]:
    app, mq, task = make_app(url, f"bench_bulk_{label}")
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    try:
        for _ in range(reps):
            for batched in (False, True):
                runs[batched].append(one_run(app, mq, task, n, batched))
    finally:
        app.extensions["memqueue"].shutdown(wait=False)
    rows = []
    for action in ACTIONS:
        slow = statistics.median(r[action] for r in runs[False])
        fast = statistics.median(r[action] for r in runs[True])
        rows.append(f"| {label} | {action} | {slow:.3f} s | {fast:.3f} s | {slow / fast:.1f}x |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--redis-url")
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    stores = args.stores.split(",")
    rows = ["| store | action | one-by-one (median) | batched (median) | speed-up |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="memq-bulk-") as tmp:
        folder = Path(tmp)
        proc = None
        try:
            if "sqlite" in stores:
                rows += bench_store("sqlite", f"sqlite:///{folder / 'bulk.db'}", args.n, args.reps)
            if "redis" in stores:
                url = args.redis_url
                if url is None:
                    proc, url = start_redis(folder)
                rows += bench_store("redis", url, args.n, args.reps)
            if "postgres" in stores:
                if not args.postgres_url:
                    print("--postgres-url is needed for postgres", file=sys.stderr)
                    return 2
                rows += bench_store("postgres", args.postgres_url, args.n, args.reps)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    print(f"{args.n} matching jobs, {args.reps} repetition(s), the modes interleaved\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
