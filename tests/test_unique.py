"""Unique jobs: ``task.options(unique_key=...).delay(...)`` through the public API.

The store-level rules (held while queued, scheduled or running; freed by a
final state; atomic with the insert) are in the storage contract; here the
API over them: one job for 8 threads racing, the key accepted again once its
job finished, no ``job_enqueued`` for a call that got the holder back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.backends import STORAGE_BACKENDS, backend_params
from support.waiting import TIMEOUT, Gate

from flask_memqueue import Job, MemQueue, job_enqueued

STORES: dict[str, Callable[[Path], dict[str, Any]]] = {
    name: STORAGE_BACKENDS[name] for name in ("memory", "sqlite", "redis")
}


@pytest.fixture(params=backend_params(STORES))
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return STORES[request.param](tmp_path)


def test_eight_threads_with_one_key_get_one_job_and_the_key_is_free_once_it_finished(
    mq: MemQueue, make_app: Callable[..., Flask], store_config: dict[str, Any], gate: Gate
) -> None:
    @mq.task(name="unique.report")
    def report(n: int) -> int:
        gate()
        return n

    app = make_app(**store_config)
    sent: list[Job] = []
    job_enqueued.connect(lambda sender, job, **kw: sent.append(job), app, weak=False)
    barrier = threading.Barrier(8)
    got: list[Job] = []
    lock = threading.Lock()

    def racer(n: int) -> None:
        with app.app_context():
            barrier.wait(TIMEOUT)
            job = report.options(unique_key="report:42").delay(n)
            with lock:
                got.append(job)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(got) == 8 and len({job.id for job in got}) == 1
    assert len(sent) == 1 and sent[0].id == got[0].id
    gate.wait_entered()  # running: still held
    with app.app_context():
        assert report.options(unique_key="report:42").delay(99).id == got[0].id
        gate.release()
        winner = got[0].wait(TIMEOUT)
        assert winner in range(8)
        again = report.options(unique_key="report:42").delay(100)
        assert again.id != got[0].id
        assert again.wait(TIMEOUT) == 100
        other = mq.options(unique_key="report:43").enqueue(report, 7)
        assert other.wait(TIMEOUT) == 7 and other.unique_key == "report:43"
        assert other.to_dict()["unique_key"] == "report:43"


def test_a_bad_key_is_refused_naming_the_option(mq: MemQueue) -> None:
    @mq.task
    def noop() -> None: ...

    for bad in ("", 42, "x" * 256):
        with pytest.raises(ValueError, match="unique_key"):
            noop.options(unique_key=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unique_key"):
            mq.options(unique_key=bad)  # type: ignore[arg-type]


def test_eager_mode_runs_every_call(mq: MemQueue, make_app: Callable[..., Flask]) -> None:
    """Eager jobs finish inside the call, so no key is ever held when the next call comes."""
    ran: list[int] = []

    @mq.task
    def record(n: int) -> None:
        ran.append(n)

    app = make_app(MEMQUEUE_EAGER=True)
    with app.app_context():
        record.options(unique_key="k").delay(1)
        record.options(unique_key="k").delay(2)
    assert ran == [1, 2]
