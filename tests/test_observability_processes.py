"""Async jobs and their traces across processes (issue 25): a web process that only enqueues
(``flask run``, an ``async def`` view) and a ``flask memqueue worker`` (10 async jobs at once
on its thread), on one journal and on Redis.

The job's span, exported by the worker, is the child of the request's span, exported by the
web process: the trace context travelled in the stored job. The worker runs the async jobs
with their app context, a retry, a failure and a time limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from support.harness import DEADLINE, Env
from support.net import http
from support.waiting import wait_until

pytest.importorskip("opentelemetry.sdk", reason="the otel test dependencies are not installed")

MakeEnv = Callable[..., Env]


def _spans(env: Env) -> list[dict[str, Any]]:
    try:
        text = env.path("spans.log").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _run(env: Env) -> None:
    with env.flask_run("web", debug=False, env={"OBS_CONSUMER": "0"}) as web:
        env.worker("worker")
        sent: dict[str, dict[str, Any]] = {}
        for name, n in (("fetch", 21), ("fetch", -1), ("broken", 0), ("slow", 0)):
            r = http("POST", f"{web.url}/enqueue/{name}/{n}")
            assert r.status == 200, r.text
            sent[f"{name}{n}"] = r.json()
        wait_until(lambda: len([s for s in _spans(env) if s["name"] == "process default"]) == 5, DEADLINE,
                   lambda: f"5 job spans: {_spans(env)}\n{env.output('worker')}")
        for key, expected in (("fetch21", "succeeded"), ("fetch-1", "succeeded"), ("broken0", "failed"),
                              ("slow0", "failed")):
            r = http("GET", f"{web.url}/memqueue/jobs/{sent[key]['id']}")
            assert r.status == 200 and r.json()["status"] == expected, (key, r.text)
        slow = http("GET", f"{web.url}/memqueue/jobs/{sent['slow0']['id']}").json()
        assert slow["error"].startswith("TimeLimitExceeded: ") and "time limit of 0.2 s" in slow["error"]
        assert http("GET", f"{web.url}/memqueue/jobs/{sent['fetch21']['id']}").json()["result"] == 42

    spans = _spans(env)
    worker_pid = {s["pid"] for s in spans if s["name"] == "process default"}
    assert len(worker_pid) == 1 and worker_pid != {s["pid"] for s in spans if s["name"] == "POST /enqueue"}
    for key, attempts in (("fetch21", 1), ("fetch-1", 2), ("broken0", 1), ("slow0", 1)):
        request = sent[key]
        mine = sorted((s for s in spans if s["name"] == "process default"
                       and s["attributes"]["messaging.message.id"] == request["id"]),
                      key=lambda s: s["attributes"]["flask_memqueue.attempt"])
        assert len(mine) == attempts, (key, mine)
        for span in mine:
            assert span["trace"] == request["trace"] and span["parent"] == request["span"], (key, span)
            assert span["kind"] == "CONSUMER"
            assert span["attributes"]["messaging.destination.name"] == "default"
            assert span["attributes"]["messaging.system"] == "flask_memqueue"
        assert mine[-1]["attributes"]["flask_memqueue.outcome"] == ("failed" if key in ("broken0", "slow0")
                                                                    else "succeeded")
        if attempts == 2:
            assert mine[0]["attributes"]["flask_memqueue.outcome"] == "retrying"
            assert mine[1]["links"] == [mine[0]["span"]]  # the retry ran in the same worker
    runs = env.events()
    assert {(f[0], f[4]) for f in runs} == {("fetch", "obs_app"), ("broken", "obs_app"), ("slow", "obs_app")}


def test_a_jobs_span_in_a_worker_is_the_child_of_the_requests_span_in_the_web_process_on_a_journal(
    make_env: MakeEnv, tmp_path: Any
) -> None:
    env = make_env("obs_app", OBS_STORAGE=f"sqlite:///{tmp_path / 'journal.db'}")
    _run(env)


def test_a_jobs_span_in_a_worker_is_the_child_of_the_requests_span_in_the_web_process_on_redis(
    make_env: MakeEnv, redis_server: Any
) -> None:
    redis_server.flush()
    env = make_env("obs_app", OBS_STORAGE=redis_server.url())
    _run(env)
