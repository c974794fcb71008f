"""fork safety (gunicorn --preload): a child starts its own consumer and never runs its parent's jobs.

Each test forks with ``os.fork()`` (:func:`support.forks.in_child`): the child
does its part and writes what it saw as JSON to a pipe; the parent reads it
and reaps the child with a deadline, killing it if it hangs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from support.forks import in_child
from support.threads import CONSUMER_PREFIX
from support.waiting import TIMEOUT, Gate

from flask_memqueue import MemQueue
from flask_memqueue.state import AppQueue

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def consumer_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(CONSUMER_PREFIX))


def test_child_runs_its_own_jobs_and_none_of_its_parents(
    app: Flask, mq: MemQueue, queue: AppQueue, gate: Gate
) -> None:
    ran: list[Any] = []
    blocker = mq.enqueue(gate)
    gate.wait_entered()  # the parent's consumer is busy: the jobs below wait in its queue
    inherited = [mq.enqueue(ran.append, i) for i in range(5)]
    parent_ids = {blocker.id, *(job.id for job in inherited)}

    def child() -> dict[str, Any]:
        seen: dict[str, Any] = {
            "pid": os.getpid(),
            "token": queue.token,
            "depth": queue.storage.depth(),
            "consumers_before": consumer_names(),
            "inherited_found": [mq.get_job(job.id) is not None for job in inherited],
        }
        job = mq.enqueue(ran.append, "child")
        job.wait(TIMEOUT)
        seen["job_id"] = job.id
        seen["consumers_after"] = consumer_names()
        seen["starts"] = queue.starts
        seen["joined"] = mq.join(TIMEOUT)
        seen["ran"] = list(ran)
        seen["shutdown"] = mq.shutdown(wait=True, timeout=TIMEOUT)
        return seen

    seen = in_child(child)
    assert seen["pid"] != os.getpid()
    assert seen["depth"] == 0  # the inherited jobs belong to the parent
    assert seen["inherited_found"] == [False] * 5
    assert seen["consumers_before"] == []  # the parent's thread did not survive the fork
    assert seen["consumers_after"] == [f"{CONSUMER_PREFIX}{app.name}]"]
    assert seen["starts"] == 1 and seen["joined"] is True and seen["shutdown"] is True
    assert seen["ran"] == ["child"]  # its own job ran, the inherited ones did not
    assert seen["token"] != queue.token
    assert seen["job_id"] not in parent_ids and not seen["job_id"].startswith(queue.token)

    gate.release()
    assert mq.join(TIMEOUT)
    assert ran == [0, 1, 2, 3, 4]  # every inherited job ran exactly once, here
    assert all(job.status == "succeeded" for job in inherited)
    assert queue.starts == 1 and queue.pid == os.getpid()


def test_fork_before_first_use_then_both_start_their_own(app: Flask, mq: MemQueue, queue: AppQueue) -> None:
    assert queue.consumer_thread is None

    def child() -> dict[str, Any]:
        job = mq.enqueue(os.getpid)
        result = job.wait(TIMEOUT)
        names = consumer_names()
        mq.shutdown(wait=True, timeout=TIMEOUT)
        return {"result": result, "pid": os.getpid(), "consumers": names, "id": job.id}

    seen = in_child(child)
    assert seen["result"] == seen["pid"]
    assert seen["consumers"] == [f"{CONSUMER_PREFIX}{app.name}]"]
    job = mq.enqueue(os.getpid)
    assert job.wait(TIMEOUT) == os.getpid()
    assert job.id != seen["id"]
    assert queue.starts == 1


def test_a_grandchild_is_fork_safe_too(app: Flask, mq: MemQueue) -> None:
    mq.enqueue(lambda: None).wait(TIMEOUT)

    def grandchild() -> dict[str, Any]:
        return {"result": mq.enqueue(lambda: "grandchild").wait(TIMEOUT)}

    def child() -> dict[str, Any]:
        mine = mq.enqueue(lambda: "child").wait(TIMEOUT)
        return {"mine": mine, **in_child(grandchild)}

    assert in_child(child) == {"mine": "child", "result": "grandchild"}


def test_a_queue_that_cannot_be_reset_in_the_child_never_stops_the_others(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork hook resets every queue; one that fails is closed with its reason, the next is still reset."""
    broken_app = make_app("broken")
    good_app = make_app("good")
    closed_app = make_app("closed_before_fork")
    broken: AppQueue = broken_app.extensions["memqueue"]
    good: AppQueue = good_app.extensions["memqueue"]
    closed: AppQueue = closed_app.extensions["memqueue"]
    closed.shutdown()
    parent_pid, good_token = os.getpid(), good.token

    def refuse() -> Any:
        raise OSError("injected: this store cannot be reopened here")

    monkeypatch.setattr(broken, "_fresh_process", lambda: refuse() if os.getpid() != parent_pid else None)

    def child() -> dict[str, Any]:
        return {
            "broken_closed": broken.closed, "broken_error": broken.start_error,
            "good_pid": good.pid, "good_token_new": good.token != good_token, "good_closed": good.closed,
            "closed_pid": closed.pid,
        }

    seen = in_child(child)
    assert seen["broken_closed"] is True and "cannot be reopened" in seen["broken_error"]
    assert seen["good_pid"] != parent_pid and seen["good_token_new"] and seen["good_closed"] is False
    assert seen["closed_pid"] == parent_pid  # shut down before the fork: left alone
