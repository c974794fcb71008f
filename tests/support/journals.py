"""SQLite journals for the fault tests: one full of waiting jobs, and one page of it damaged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flask import Flask

from flask_memqueue import MemQueue


def make_journal(path: Path, jobs: int = 300) -> None:
    """A journal with ``jobs`` waiting jobs, checkpointed into the main file (no -wal left)."""
    mq = MemQueue()

    @mq.task(name="noop")
    def noop(payload: str) -> None: ...

    app = Flask("faults_app")
    app.config.update(TESTING=True, MEMQUEUE_JOURNAL=str(path), MEMQUEUE_CONSUMER=False, MEMQUEUE_MAXSIZE=0)
    mq.init_app(app)
    with app.app_context():
        for _ in range(jobs):
            mq.enqueue(noop, "x" * 200)
    app.extensions["memqueue"].shutdown(wait=False)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def damage(path: Path, page: int) -> None:
    """Overwrite one page of a SQLite file with garbage (a deterministic pattern)."""
    conn = sqlite3.connect(path)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    assert page < count
    with open(path, "r+b") as f:
        f.seek(size * (page - 1))
        f.write(bytes((i * 131 + 17) % 251 for i in range(size)))
