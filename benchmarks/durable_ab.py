"""The CPU cost of DurableStorage's machinery alone, two source trees side by side.

A backend with no I/O (a deque behind the primitives) isolates what the
shared-store machinery costs per job: enqueue N jobs (µs/job), then
``take(done=previous)`` + execute until empty (µs/job). Each cell runs in a
fresh process with ``PYTHONPATH`` set to one tree; the trees alternate every
repetition, so a noisy moment of the machine hits both::

    python benchmarks/durable_ab.py --n 20000 --reps 9 --trees /path/to/main,.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CELL = r'''
import json, os, sys, tempfile, time
from collections import deque
from flask import Flask
import flask_memqueue
from flask_memqueue import MemQueue
from flask_memqueue.storage import register_backend
from flask_memqueue.storage.durable import DurableStorage


class Null(DurableStorage):
    """The cheapest backend that honours the claim path: a deque, no I/O."""

    def __init__(self, url, context):
        super().__init__(url, context)
        self.q = deque()

    def _insert(self, records):
        self.q.extend(records)
        return len(records)

    def _claim(self, settle, owner, now, stop, queue):
        return None if stop() or not self.q else self.q.popleft()

    def _save(self, record): pass
    def _transition(self, job_id, from_status, record): return False
    def _take_over_one(self, job_id, owner, record): return False
    def _load(self, job_id, visible_after): return None
    def _load_many(self, job_ids, finished_only): return []
    def _list(self, status, limit, offset, visible_after, queue=None): return []
    def _count(self, visible_after, queue=None): return {}
    def _queue_counts(self): return {}
    def _busy(self, statuses, due_before, queue=None): return len(self.q)
    def _running_owners(self): return set()
    def _running_of(self, owner): return []
    def _prune(self, finished_before, keep): pass
    def _purge(self): return 0
    def _remove_waiting(self): return []
    def _next_eta(self, queue=None): return None
    def _close(self): pass
    def _insert_unique(self, record, full): return record
    def _claim_tick(self, task, tick, record, now): return True
    def _ticks(self): return {}


register_backend("null", lambda url, options, context: Null(url, context))
n = int(sys.argv[1])
mq = MemQueue()


@mq.task(name="noop")
def noop(x): return None


folder = tempfile.mkdtemp()
app = Flask("bench", instance_path=folder)
app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_CONSUMER=False, MEMQUEUE_STORAGE="null://",
                  MEMQUEUE_MAX_FINISHED=10**9)
mq.init_app(app)
queue = app.extensions["memqueue"]
with app.app_context():
    t0 = time.perf_counter()
    for _ in range(n):
        noop.delay("x" * 100)
    t1 = time.perf_counter()
    done = None
    while (job := queue.storage.take(0, done)) is not None:
        queue.consumer.execute(job)
        done = job
    t2 = time.perf_counter()
    mq.shutdown(wait=False)
where = os.path.dirname(flask_memqueue.__file__)
print(json.dumps({"where": where, "enqueue": (t1 - t0) / n * 1e6, "take": (t2 - t1) / n * 1e6}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--trees", required=True, help="two source trees, comma-separated: baseline,candidate")
    args = parser.parse_args()
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    results: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for tree in trees if rep % 2 == 0 else trees[::-1]:
            done = subprocess.run([sys.executable, "-c", CELL, str(args.n)], env={**os.environ, "PYTHONPATH": tree},
                                  capture_output=True, text=True, cwd="/tmp", timeout=600)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            cell = json.loads(done.stdout.strip().splitlines()[-1])
            assert cell["where"].startswith(tree), (cell["where"], tree)
            for key in ("enqueue", "take"):
                results.setdefault((key, tree), []).append(cell[key])
    base, cand = trees
    for key in ("enqueue", "take"):
        b, c = results[(key, base)], results[(key, cand)]
        print(f"{key}: µs/job, median [min]: baseline {statistics.median(b):.1f} [{min(b):.1f}],"
              f" candidate {statistics.median(c):.1f} [{min(c):.1f}];"
              f" candidate/baseline {statistics.median(c) / statistics.median(b):.3f}")


if __name__ == "__main__":
    main()
