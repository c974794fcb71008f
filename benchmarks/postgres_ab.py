"""The PostgreSQL store's enqueue and claim path, two source trees side by side on one server.

One PostgreSQL server (started by ``tests/support/servers/postgres.py``, as the
tests start it), a fresh schema per cell. Each cell runs in a fresh process
with ``PYTHONPATH`` set to one tree: one thread enqueues N no-op jobs (µs/job),
then takes them one by one, each ``take(done=previous)`` recording the
previous job's outcome and claiming the next in one statement, and executes
them (µs/job). The trees alternate every repetition, so a noisy moment of the
machine hits both::

    .venv/bin/python benchmarks/postgres_ab.py --n 2000 --reps 6 --trees /path/to/main,.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

CELL = r'''
import json, os, sys, time
from flask import Flask
import flask_memqueue
from flask_memqueue import MemQueue

url, n = sys.argv[1], int(sys.argv[2])
mq = MemQueue()


@mq.task(name="noop")
def noop(x): return None


app = Flask("bench")  # testing: the schema is created on first use
app.config.update(TESTING=True, MEMQUEUE_STORAGE=url, MEMQUEUE_CONSUMER=False, MEMQUEUE_MAX_FINISHED=10**9)
mq.init_app(app)
queue = app.extensions["memqueue"]
with app.app_context():
    noop.delay("warm-up")  # the schema, the pool's first connection
    t0 = time.perf_counter()
    for _ in range(n):
        noop.delay("x" * 100)
    t1 = time.perf_counter()
    done, ran = None, 0
    while (job := queue.storage.take(0, done)) is not None:
        queue.consumer.execute(job)
        done, ran = job, ran + 1
    t2 = time.perf_counter()
    mq.shutdown(wait=False)
where = os.path.dirname(flask_memqueue.__file__)
print(json.dumps({"where": where, "enqueue": (t1 - t0) / n * 1e6, "take": (t2 - t1) / ran * 1e6}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--trees", required=True, help="two source trees, comma-separated: baseline,candidate")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from support.servers.postgres import PostgresServer  # the tests' server, started the same way

    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    results: dict[tuple[str, str], list[float]] = {}
    server = PostgresServer().start()
    try:
        for rep in range(args.reps):
            for tree in trees if rep % 2 == 0 else trees[::-1]:
                url = server.url() + f"?schema=ab_{uuid.uuid4().hex[:8]}"
                done = subprocess.run([sys.executable, "-c", CELL, url, str(args.n)],
                                      env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True,
                                      cwd="/tmp", timeout=600)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                cell = json.loads(done.stdout.strip().splitlines()[-1])
                assert cell["where"].startswith(tree), (cell["where"], tree)
                for key in ("enqueue", "take"):
                    results.setdefault((key, tree), []).append(cell[key])
    finally:
        server.stop()
    base, cand = trees
    for key in ("enqueue", "take"):
        b, c = results[(key, base)], results[(key, cand)]
        print(f"{key}: µs/job, median [min]: baseline {statistics.median(b):.1f} [{min(b):.1f}],"
              f" candidate {statistics.median(c):.1f} [{min(c):.1f}];"
              f" candidate/baseline {statistics.median(c) / statistics.median(b):.3f}")


if __name__ == "__main__":
    main()
