"""The journal's prune with a long workflow history (issue 21's leftovers).

Fills a journal with N finished chord members (one link and one group row each,
N/100 callbacks) and times ``_prune``: once deleting nothing, once deleting 1,000
members, against the same journal without workflow rows (``--nolinks``). Every
prune holds the journal's write lock, so its fixed cost is paid by every writer.

    .venv/bin/python benchmarks/journal_prune.py 100000
    .venv/bin/python benchmarks/journal_prune.py 100000 --nolinks
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable

from flask import Flask

from flask_memqueue import MemQueue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=100_000, help="finished chord members")
    parser.add_argument("--nolinks", action="store_true", help="the same jobs without workflow rows")
    args = parser.parse_args()
    n = args.n
    folder = tempfile.mkdtemp()
    app = Flask("prunebench")
    app.config.update(MEMQUEUE_STORAGE=f"sqlite:///{folder}/j.db", MEMQUEUE_CONSUMER=False,
                      MEMQUEUE_MAX_FINISHED=10**9)
    MemQueue(app)
    storage = app.extensions["memqueue"].storage
    conn = sqlite3.connect(f"{folder}/j.db")
    with conn:
        conn.executemany(
            "INSERT INTO memqueue_jobs (id, queue, task, args, status, enqueued_at, finished_at, options)"
            " VALUES (?, 'prunebench', 't', '[]', 'succeeded', ?, ?, ?)",
            [(f"m{i}", i, i, f'{{"group":"g{i // 100}"}}') for i in range(n)])
        conn.executemany(
            "INSERT INTO memqueue_jobs (id, queue, task, args, status, enqueued_at, finished_at)"
            " VALUES (?, 'prunebench', 't', '[]', 'succeeded', ?, ?)",
            [(f"c{i}", n + i, n + i) for i in range(n // 100)])
        if not args.nolinks:
            conn.executemany("INSERT INTO memqueue_links (queue, parent, child, position, done)"
                             " VALUES ('prunebench', ?, ?, ?, 1)",
                             [(f"m{i}", f"c{i // 100}", i % 100) for i in range(n)])
            conn.executemany("INSERT INTO memqueue_groups (queue, grp, idx, job_id) VALUES ('prunebench', ?, ?, ?)",
                             [(f"g{i // 100}", i % 100, f"m{i}") for i in range(n)])

    def timed(label: str, fn: Callable[[], None]) -> None:
        start = time.perf_counter()
        fn()
        print(f"{label}: {(time.perf_counter() - start) * 1000:.1f} ms")

    timed("prune deleting nothing", lambda: storage._prune(-1.0, 10**9))
    timed("prune deleting 1,000 members", lambda: storage._prune(999.5, 10**9))
    timed("prune deleting nothing again", lambda: storage._prune(-1.0, 10**9))
    links, groups = conn.execute(
        "SELECT (SELECT count(*) FROM memqueue_links), (SELECT count(*) FROM memqueue_groups)").fetchone()
    print(f"links, group rows left: {links}, {groups}")
    conn.close()
    storage.close()


if __name__ == "__main__":
    main()
