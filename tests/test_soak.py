"""Soak under contention: many threads doing mixed operations against one app, then the books must balance.

Twelve threads enqueue, cancel, look jobs up, serialise them, join with a
timeout, read stats and read the JSON routes through the test client, for a
bounded number of operations each, against the memory store and the journal.
Threads switch every microsecond (``contention.switch_often``) so races a few
bytecodes wide show up here. Then:

- every accepted job reached exactly one final status, and ran exactly once
  if it succeeded, never if it was cancelled;
- every job was findable by id whenever it was looked up, and a cancel that
  failed found the job already running or finished (never still queued);
- the counts of ``/stats`` add up to the jobs accepted;
- ``MEMQUEUE_MAXSIZE`` is exact: with a parked consumer, exactly that many
  enqueues are accepted and every other one raises ``QueueFull``.

Seeded: ``MEMQUEUE_SOAK_SEED=<n>`` runs another mix (the seed is printed on
failure).
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.contention import switch_often
from support.waiting import TIMEOUT, Gate

from flask_memqueue import Job, JobStatus, MemQueue, QueueFull, current_job

MakeApp = Callable[..., Flask]
THREADS = 12
SEED = int(os.environ.get("MEMQUEUE_SOAK_SEED", "9"))
#: Operations per thread: the journal commits to disk on every enqueue, so it does fewer.
OPS = {"memory": 400, "journal": 60}


@pytest.fixture(params=["memory", "journal"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "memory":
        return "memory", {}
    return "journal", {"MEMQUEUE_JOURNAL": str(tmp_path / "journal.db")}


def test_mixed_operations_from_many_threads_balance(
    mq: MemQueue, make_app: MakeApp, backend: tuple[str, dict[str, Any]]
) -> None:
    name, config = backend
    runs: Counter[str] = Counter()
    runs_lock = threading.Lock()

    @mq.task(name="work")
    def work(n: int) -> int:
        with runs_lock:
            runs[current_job.id] += 1
        return n

    app = make_app("soak", MEMQUEUE_MAXSIZE=0, MEMQUEUE_MAX_FINISHED=100_000, **config)
    accepted: list[Job] = []
    cancelled_ok: set[str] = set()
    problems: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def note(problem: str) -> None:
        with lock:
            problems.append(problem)

    def worker(k: int) -> None:
        rnd = random.Random(SEED * 1000 + k)
        mine: list[Job] = []
        client = app.test_client()
        with app.app_context():
            start.wait(TIMEOUT)
            for i in range(OPS[name]):
                op = rnd.random()
                if op < 0.45 or not mine:
                    job = mq.enqueue(work, i)
                    mine.append(job)
                    with lock:
                        accepted.append(job)
                elif op < 0.60:
                    job = rnd.choice(mine)
                    if job.cancel():
                        with lock:
                            cancelled_ok.add(job.id)
                    elif job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
                        again = mq.get_job(job.id)
                        if again is not None and again.status is JobStatus.QUEUED:
                            note(f"cancel({job.id}) failed while the job was still queued")
                elif op < 0.75:
                    with lock:
                        job = rnd.choice(accepted)
                    if mq.get_job(job.id) is None:
                        note(f"get_job({job.id}) found nothing ({job.status.value})")
                elif op < 0.82:
                    d = rnd.choice(mine).to_dict()
                    if d["status"] not in {s.value for s in JobStatus}:
                        note(f"to_dict gave status {d['status']!r}")
                elif op < 0.86:
                    mq.join(timeout=0.001)  # may well time out: the point is that it returns
                elif op < 0.90:
                    counts = app.extensions["memqueue"].stats()["counts"]
                    if any(v < 0 for v in counts.values()):
                        note(f"negative counts {counts}")
                else:
                    with lock:
                        job = rnd.choice(accepted)
                    path = rnd.choice([f"/memqueue/jobs/{job.id}", "/memqueue/stats", "/memqueue/jobs?limit=5"])
                    r = client.get(path)
                    if r.status_code != 200 or not r.is_json:
                        note(f"GET {path}: {r.status_code} {r.data[:200]!r}")

    threads = [threading.Thread(target=worker, args=(k,), name=f"soak-{k}") for k in range(THREADS)]
    with switch_often(1e-5):
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 6)
    assert not any(t.is_alive() for t in threads), "a soak thread hung"
    with app.app_context():
        assert mq.join(timeout=TIMEOUT * 3), "jobs left unfinished"
    assert problems == [], f"seed {SEED}: {problems[:10]} ({len(problems)} in all)"

    ids = [job.id for job in accepted]
    assert len(set(ids)) == len(ids), "two jobs share an id"
    with app.app_context():
        final = {jid: mq.get_job(jid) for jid in ids}
    lost = [jid for jid, job in final.items() if job is None]
    assert lost == [], f"seed {SEED}: {len(lost)} accepted jobs are gone, e.g. {lost[:3]}"
    statuses = Counter(job.status.value for job in final.values() if job is not None)
    assert set(statuses) <= {"succeeded", "cancelled"}, statuses
    for jid, job in final.items():
        assert job is not None
        if job.status is JobStatus.SUCCEEDED:
            assert runs[jid] == 1 and jid not in cancelled_ok, (jid, runs[jid])
        else:
            assert runs[jid] == 0 and jid in cancelled_ok, (jid, runs[jid])
    assert sum(runs.values()) == statuses["succeeded"]
    assert len(cancelled_ok) == statuses["cancelled"]
    counts = app.test_client().get("/memqueue/stats").get_json()["counts"]
    assert counts == {"queued": 0, "scheduled": 0, "deferred": 0, "running": 0, "failed": 0,
                      "succeeded": statuses["succeeded"], "cancelled": statuses["cancelled"], "aborted": 0}
    assert sum(counts.values()) == len(accepted)


def test_maxsize_is_exact_under_contention(mq: MemQueue, make_app: MakeApp, backend: tuple[str, dict[str, Any]],
                                          gate: Gate) -> None:
    maxsize, attempts = 40, 20

    @mq.task(name="work")
    def work(n: int) -> int:
        return n

    app = make_app("soak", MEMQUEUE_MAXSIZE=maxsize, **backend[1])
    with app.app_context():
        if backend[0] == "journal":
            mq.task(name="gate")(gate)
            blocker = mq.enqueue("gate")
        else:
            blocker = mq.enqueue(gate)
        gate.wait_entered()  # the consumer is parked: nothing leaves the queue from here on
    accepted: list[Job] = []
    refused: list[QueueFull] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(k: int) -> None:
        with app.app_context():
            start.wait(TIMEOUT)
            for i in range(attempts):
                try:
                    job = mq.enqueue(work, i) if (k + i) % 3 else mq.enqueue_in(3600, work, i)
                except QueueFull as exc:
                    with lock:
                        refused.append(exc)
                else:
                    with lock:
                        accepted.append(job)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    with switch_often(1e-5):
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 3)
    assert not any(t.is_alive() for t in threads)
    assert len(accepted) == maxsize, f"{len(accepted)} accepted with MEMQUEUE_MAXSIZE={maxsize}"
    assert len(refused) == THREADS * attempts - maxsize
    assert all("MEMQUEUE_MAXSIZE" in str(exc) for exc in refused)
    queue = app.extensions["memqueue"]
    assert queue.storage.depth() == maxsize
    with app.app_context():
        assert all(mq.get_job(job.id) is not None for job in accepted)
    assert all(job.cancel() for job in accepted)  # all waited, so all are cancellable
    assert queue.storage.depth() == 0
    gate.release()
    assert blocker.wait(TIMEOUT) == "gate"
