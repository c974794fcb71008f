"""Issue 24 in one process: enqueue_many, pause and resume, and the filter that finds jobs and acts on them
(the API, the HTTP routes with the token and CSRF, the CLI). The store's side is the contract
(flask_memqueue/testing/storage.py); real processes are in test_control_processes.py."""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support.backends import STORAGE_BACKENDS, backend_params
from support.waiting import TIMEOUT, Gate, wait_until
from werkzeug.test import TestResponse

from flask_memqueue import MemQueue, QueueFull
from flask_memqueue.jobfilter import FilterError, JobFilter, parse_filter
from flask_memqueue.signals import job_cancelled, job_enqueued

TOKEN = "control-test-token-0123456789"
HTML = {"Accept": "text/html"}


def assert_error(response: TestResponse, status: int) -> dict[str, Any]:
    """Every failure answers JSON with an "error" message."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    return body  # type: ignore[no-any-return]


def csrf_of(client: FlaskClient) -> str:
    """Open the dashboard like a browser and return the CSRF token it handed out."""
    client.get("/memqueue/", headers=HTML)
    cookie = client.get_cookie("memqueue_csrf", path="/memqueue")
    assert cookie is not None, "the dashboard set no CSRF cookie"
    return cookie.value


def sign_in(client: FlaskClient, token: str = TOKEN) -> TestResponse:
    client.get("/memqueue/ui/sign-in", headers=HTML)
    cookie = client.get_cookie("memqueue_csrf", path="/memqueue")
    assert cookie is not None
    return client.post("/memqueue/ui/sign-in", data={"token": token, "csrf_token": cookie.value, "next": "/memqueue/"})


@pytest.fixture
def tasks(mq: MemQueue) -> dict[str, Any]:
    @mq.task(name="send")
    def send(address: str) -> str:
        return f"sent {address}"

    @mq.task(name="boom")
    def boom(value: Any = None) -> None:
        raise ValueError(f"boom {value}")

    return {"send": send, "boom": boom}


# -- enqueue_many ----------------------------------------------------------------------------------
def test_enqueue_many_queues_every_call_in_order_with_its_options(
    make_app: Callable[..., Flask], mq: MemQueue, tasks: dict[str, Any]
) -> None:
    app = make_app(MEMQUEUE_QUEUES={"default": 1, "urgent": 1}, MEMQUEUE_CONSUMER=False)
    send, boom = tasks["send"], tasks["boom"]
    seen: list[str] = []

    def on_enqueued(sender: Flask, job: Any, **_: Any) -> None:
        seen.append(job.id)

    when = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1)
    with app.app_context(), job_enqueued.connected_to(on_enqueued, app):
        calls = [send.s(f"a{i}@example.com") for i in range(3)]
        calls.append(send.s("vip@example.com").options(queue="urgent", priority=50))
        calls.append(boom.s(1))
        jobs = mq.enqueue_many(calls)
        later = mq.enqueue_many([send.s("later")])[0]
        assert mq.enqueue_many([]) == []
    assert [j.args for j in jobs] == [("a0@example.com",), ("a1@example.com",), ("a2@example.com",),
                                      ("vip@example.com",), (1,)]
    assert [j.name for j in jobs] == ["send"] * 4 + ["boom"]
    assert (jobs[3].queue, jobs[3].priority) == ("urgent", 50)
    assert seen == [j.id for j in jobs] + [later.id]  # one signal per job, in order
    queue = app.extensions["memqueue"]
    assert queue.storage.depth() == 6 and queue.storage.depth("urgent") == 1
    # a call whose options hold a time (what a workflow's delayed link makes) is scheduled
    at = send.s("at")
    timed = type(at)(at.task, at.args, at.kwargs, at.job_options.replace(eta=when.timestamp()), immutable=False)
    with app.app_context():
        scheduled = mq.enqueue_many([timed])[0]
    assert scheduled.status == "scheduled" and scheduled.eta == when.timestamp()


def test_enqueue_many_refuses_what_a_batch_cannot_keep_and_queues_nothing(
    make_app: Callable[..., Flask], mq: MemQueue, tasks: dict[str, Any]
) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False)
    send = tasks["send"]
    queue = app.extensions["memqueue"]
    with app.app_context():
        with pytest.raises(TypeError, match=r"item 1 is the task 'send' itself.*send\.s\(arguments\)"):
            mq.enqueue_many([send.s("a"), send])
        with pytest.raises(TypeError, match=r"task\.s\(\.\.\.\).*item 0 is str"):
            mq.enqueue_many(["send"])
        with pytest.raises(ValueError, match=r"item 0 \(send\) has options\(unique_key=\.\.\.\)"):
            mq.enqueue_many([send.s("a").options(unique_key="k")])
        with pytest.raises(TypeError):
            mq.enqueue_many([send.s("a"), send.s()])  # the second misses its argument
    assert queue.storage.depth() == 0


@pytest.mark.parametrize("backend", backend_params(STORAGE_BACKENDS))
def test_enqueue_many_of_10000_jobs_on_every_store_and_maxsize_refuses_a_batch_whole(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tasks: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False, MEMQUEUE_MAXSIZE=15_000, **STORAGE_BACKENDS[backend](tmp_path))
    send = tasks["send"]
    queue = app.extensions["memqueue"]
    with app.app_context():
        jobs = mq.enqueue_many([send.s(f"user{i}@example.com") for i in range(10_000)])
        assert len(jobs) == 10_000 and queue.storage.depth() == 10_000
        with pytest.raises(QueueFull, match="MEMQUEUE_MAXSIZE"):
            mq.enqueue_many([send.s(f"more{i}") for i in range(5_001)])  # 15,001 would not fit
        assert queue.storage.depth() == 10_000  # nothing of it was queued
        assert queue.count_jobs(JobFilter(q="more")) == 0
        mq.enqueue_many([send.s(f"more{i}") for i in range(5_000)])  # exactly fits
    assert queue.storage.depth() == 15_000
    first, last = queue.storage.get(jobs[0].id), queue.storage.get(jobs[-1].id)
    assert first is not None and first.args == ("user0@example.com",)
    assert last is not None and last.args == ("user9999@example.com",)
    taken = queue.storage.take(0)
    assert taken is not None and taken.id == jobs[0].id  # FIFO: the batch's first job first
    queue.storage.finish(queue.consumer.execute(taken) or taken)


def test_enqueue_many_runs_inline_in_eager_mode(
    make_app: Callable[..., Flask], mq: MemQueue, tasks: dict[str, Any]
) -> None:
    app = make_app(MEMQUEUE_EAGER=True)
    with app.app_context():
        jobs = mq.enqueue_many([tasks["send"].s("x"), tasks["send"].s("y")])
    assert [j.result for j in jobs] == ["sent x", "sent y"]


# -- pause and resume ----------------------------------------------------------------------------
def test_a_paused_queue_keeps_taking_jobs_starts_none_and_a_running_job_goes_on(
    make_app: Callable[..., Flask], mq: MemQueue, gate: Gate
) -> None:
    started: list[str] = []

    @mq.task(name="work")
    def work(name: str) -> str:
        started.append(name)
        if name == "held":
            gate()
        return name

    app = make_app()
    queue = app.extensions["memqueue"]
    with app.app_context():
        held = work.delay("held")
        wait_until(lambda: started == ["held"], TIMEOUT)
        assert mq.pause("default") is True and mq.paused() == {"default"}
        assert mq.pause("default") is False
        waiting = work.delay("waiting")
        assert waiting.status == "queued"
        gate.release()  # the running job was not interrupted: it finishes
        assert held.wait(TIMEOUT) and held.result == "held"
        stats = queue.stats()
        assert stats["paused"] == ["default"] and stats["queues"]["default"]["paused"] is True
        assert started == ["held"] and waiting.status == "queued"
        assert mq.resume("default") is True and mq.resume("default") is False
        assert waiting.wait(TIMEOUT) and waiting.result == "waiting"
        with pytest.raises(ValueError, match="queue"):
            mq.pause("no spaces allowed")


# -- the filter ----------------------------------------------------------------------------------
def test_parse_filter_names_the_field_that_is_wrong() -> None:
    assert parse_filter({"since": "2026-01-31T12:00:00Z"}).since == 1769860800.0
    assert parse_filter({"since": "1769860800"}).since == 1769860800.0
    assert parse_filter({"until": 5}).until == 5.0
    assert parse_filter({"status": "failed, cancelled"}).statuses == ("failed", "cancelled")
    assert parse_filter({"status": ["failed"], "task": "", "q": None}) == JobFilter(statuses=("failed",))
    for bad, message in [({"since": "yesterday"}, "'since'.*ISO 8601"), ({"status": "done"}, "'done' is not a status"),
                         ({"task": 5}, "'task': give a text"), ({"colour": "red"}, "unknown key 'colour'"),
                         ({"since": 10, "until": 5}, "'since' is after 'until'"), ({"since": True}, "'since'"),
                         ({"q": "x" * 501}, "'q': at most 500"), ({"since": "nan"}, "'since'")]:
        with pytest.raises(FilterError, match=message):
            parse_filter(bad)


@pytest.fixture
def secured(make_app: Callable[..., Flask], tasks: dict[str, Any]) -> Flask:
    return make_app(MEMQUEUE_TOKEN=TOKEN, MEMQUEUE_CONSUMER=False, MEMQUEUE_MAX_FINISHED=5_000)


def fail_jobs(app: Flask, n: int, prefix: str = "v") -> list[Any]:
    """``n`` jobs of ``boom`` run (in this thread) to their failure."""
    queue = app.extensions["memqueue"]
    boom = queue.registry.resolve("boom")
    with app.app_context():
        jobs = [boom.delay(f"{prefix}{i}") for i in range(n)]
    while queue.run_once(0):
        pass
    jobs = [queue.storage.get(j.id) for j in jobs]  # a store without local objects: read them back
    assert all(j is not None and j.status == "failed" for j in jobs)
    return jobs


def test_get_jobs_takes_the_filter_as_query_parameters(secured: Flask) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    failed = fail_jobs(secured, 3)
    with secured.app_context():
        send = secured.extensions["memqueue"].registry.resolve("send")
        sent = send.delay("alice@example.com")
    client = secured.test_client()
    body = client.get("/memqueue/jobs?task=boom&q=v1", headers=auth).get_json()
    assert [j["id"] for j in body["jobs"]] == [failed[1].id] and body["total"] == 1
    assert body["filter"] == {"task": "boom", "q": "v1"}
    body = client.get("/memqueue/jobs?q=ALICE", headers=auth).get_json()
    assert [j["id"] for j in body["jobs"]] == [sent.id]
    body = client.get("/memqueue/jobs?status=failed,queued&limit=2", headers=auth).get_json()
    assert body["total"] == 4 and len(body["jobs"]) == 2
    since = failed[2].enqueued_at
    body = client.get(f"/memqueue/jobs?since={since}&status=failed", headers=auth).get_json()
    assert [j["id"] for j in body["jobs"]] == [failed[2].id]
    assert client.get("/memqueue/jobs?status=failed", headers=auth).get_json()["total"] == 3  # as before
    assert_error(client.get("/memqueue/jobs?since=soon", headers=auth), 400)
    assert_error(client.get("/memqueue/jobs?status=failed,nope", headers=auth), 400)
    assert_error(client.get("/memqueue/jobs?task=boom"), 401)


def test_bulk_retry_cancel_delete_act_on_every_match_and_answer_the_count(secured: Flask) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fail_jobs(secured, 1_000)
    other = fail_jobs(secured, 5, prefix="other")
    client = secured.test_client()
    queue = secured.extensions["memqueue"]
    r = client.post("/memqueue/jobs/retry", json={"filter": {"task": "boom", "q": "boom v"}}, headers=auth)
    assert r.status_code == 200 and r.get_json() == {"action": "retry", "count": 1_000,
                                                      "filter": {"task": "boom", "q": "boom v"}}
    assert queue.storage.depth() == 1_000 and all(j.status == "failed" for j in other)
    cancelled: list[str] = []

    def on_cancel(sender: Flask, job: Any, **_: Any) -> None:
        cancelled.append(job.id)

    with job_cancelled.connected_to(on_cancel, secured):
        r = client.post("/memqueue/jobs/cancel", json={"filter": {"status": "queued"}}, headers=auth)
    assert r.get_json()["count"] == 1_000 and len(cancelled) == 1_000 and queue.storage.depth() == 0
    r = client.post("/memqueue/jobs/delete", json={"filter": {"q": "other"}}, headers=auth)
    assert r.get_json()["count"] == 5
    assert all(queue.storage.get(j.id) is None for j in other)
    # errors: JSON with a message and the right status
    assert_error(client.post("/memqueue/jobs/retry", json={"task": "boom"}, headers=auth), 400)
    assert_error(client.post("/memqueue/jobs/retry", json={"filter": {"status": "x"}}, headers=auth), 400)
    assert_error(client.post("/memqueue/jobs/retry", json={"filter": [], "x": 1}, headers=auth), 400)
    assert_error(client.post("/memqueue/jobs/retry", data="{", headers=auth), 400)
    assert_error(client.get("/memqueue/jobs/retry", headers=auth), 405)
    assert_error(client.post("/memqueue/jobs/retry", json={"filter": {}}), 401)


def test_bulk_actions_need_the_csrf_header_with_the_sign_in_cookie(
    make_app: Callable[..., Flask], tasks: dict[str, Any], tmp_path: Path
) -> None:
    secured = make_app(testing=False, MEMQUEUE_TOKEN=TOKEN, MEMQUEUE_CONSUMER=False, SECRET_KEY="k" * 32,
                       MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'jobs.db'}")
    fail_jobs(secured, 3)
    client = secured.test_client()
    assert sign_in(client, TOKEN).status_code in (302, 303)
    r = client.post("/memqueue/jobs/retry", json={"filter": {"status": "failed"}})
    assert_error(r, 403)
    assert "CSRF" in r.get_json()["error"]
    r = client.post("/memqueue/jobs/retry", json={"filter": {"status": "failed"}},
                    headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 200 and r.get_json()["count"] == 3
    r = client.post("/memqueue/queues/default/pause", headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 200


def test_pause_and_resume_over_http(secured: Flask) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client = secured.test_client()
    r = client.post("/memqueue/queues/emails/pause", headers=auth)
    assert r.get_json() == {"queue": "emails", "paused": True, "changed": True}
    assert client.post("/memqueue/queues/emails/pause", headers=auth).get_json()["changed"] is False
    assert client.get("/memqueue/stats", headers=auth).get_json()["paused"] == ["emails"]
    assert client.get("/memqueue/threads", headers=auth).get_json()["paused"] == ["emails"]
    r = client.post("/memqueue/queues/emails/resume", headers=auth)
    assert r.get_json() == {"queue": "emails", "paused": False, "changed": True}
    assert client.get("/memqueue/stats", headers=auth).get_json()["paused"] == []
    assert_error(client.post("/memqueue/queues/bad%20name/pause", headers=auth), 400)
    assert_error(client.post("/memqueue/queues/emails/pause"), 401)
    assert_error(client.get("/memqueue/queues/emails/pause", headers=auth), 405)


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_pause_resume_and_bulk_actions_on_a_shared_store(
    make_app: Callable[..., Flask], tasks: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'jobs.db'}", MEMQUEUE_CONSUMER=False)
    failed = fail_jobs(app, 4)
    runner = app.test_cli_runner()
    r = runner.invoke(args=["memqueue", "pause", "default"])
    assert r.exit_code == 0 and "queue default paused" in r.output
    assert app.extensions["memqueue"].storage.paused() == {"default"}
    r = runner.invoke(args=["memqueue", "resume", "default"])
    assert r.exit_code == 0 and "resumed" in r.output
    r = runner.invoke(args=["memqueue", "retry", "--task", "boom", "--q", "v1"], input="n\n")
    assert r.exit_code == 1 and "1 job(s) match" in r.output  # asked, refused: nothing done
    assert app.extensions["memqueue"].storage.get(failed[1].id).status == "failed"  # type: ignore[union-attr]
    r = runner.invoke(args=["memqueue", "retry", "--status", "failed", "--yes"])
    assert r.exit_code == 0 and "retry: 4 job(s) changed of 4" in r.output, r.output
    r = runner.invoke(args=["memqueue", "cancel", "--task", "boom"], input="y\n")
    assert r.exit_code == 0 and "4 job(s) match" in r.output and "cancel: 4" in r.output
    r = runner.invoke(args=["memqueue", "delete", failed[0].id])
    assert r.exit_code == 0 and "deleted" in r.output
    r = runner.invoke(args=["memqueue", "retry", failed[1].id])  # the old form still works
    assert r.exit_code == 0 and f"{failed[1].id}\tqueued\tboom" in r.output
    r = runner.invoke(args=["memqueue", "retry", failed[1].id, "--task", "boom"])
    assert r.exit_code == 2 and "not both" in r.output
    r = runner.invoke(args=["memqueue", "delete"])
    assert r.exit_code == 2 and "say which jobs" in r.output
    r = runner.invoke(args=["memqueue", "retry", "--since", "soon", "--yes"])
    assert r.exit_code == 2 and "'since'" in r.output


def test_a_consumer_thread_of_a_paused_queue_waits_without_spinning(
    make_app: Callable[..., Flask], mq: MemQueue
) -> None:
    """A paused lane with a due scheduled job must not make its consumer loop: it sleeps until resume."""
    ran = threading.Event()

    @mq.task(name="tick")
    def tick() -> None:
        ran.set()

    app = make_app()
    queue = app.extensions["memqueue"]
    with app.app_context():
        mq.pause("default")
        mq.enqueue_at(_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=1), tick)  # due already
        queue.ensure_consumer()
        lane = queue.storage._lanes["default"]
        # asleep on its wake-up lock with no deadline (a due job would otherwise wake it at once)
        wait_until(lambda: len(lane.sleepers) == 1, TIMEOUT)
        assert not ran.is_set() and queue.pools.consumer.jobs_done == 0
        mq.resume("default")
        assert ran.wait(TIMEOUT)


def test_the_dashboards_act_form_confirms_with_the_count_then_acts_and_needs_its_csrf_token(
    make_app: Callable[..., Flask], tasks: dict[str, Any], tmp_path: Path
) -> None:
    app = make_app(testing=False, MEMQUEUE_TOKEN=TOKEN, MEMQUEUE_CONSUMER=False, SECRET_KEY="k" * 32,
                   MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'jobs.db'}")
    failed = fail_jobs(app, 3)
    client = app.test_client()
    sign_in(client, TOKEN)
    form = {"action": "retry", "task": "boom", "q": "v1", "next": "/memqueue/"}
    r = client.post("/memqueue/ui/jobs/act", data=form)
    assert r.status_code == 403  # no CSRF token: refused
    form["csrf_token"] = csrf_of(client)
    r = client.post("/memqueue/ui/jobs/act", data=form)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Retry 1 job?" in page and "q=v1" in page
    assert app.extensions["memqueue"].storage.get(failed[1].id).status == "failed"  # type: ignore[union-attr]
    r = client.post("/memqueue/ui/jobs/act", data={**form, "confirmed": "yes"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/memqueue/")
    assert app.extensions["memqueue"].storage.get(failed[1].id).status == "queued"  # type: ignore[union-attr]
    assert app.extensions["memqueue"].storage.get(failed[0].id).status == "failed"  # type: ignore[union-attr]
    r = client.post("/memqueue/ui/jobs/act", data={**form, "action": "explode"})
    assert r.status_code == 400
    r = client.post("/memqueue/ui/queues/default/pause", data={"csrf_token": csrf_of(client), "next": "/memqueue/"})
    assert r.status_code == 303 and app.extensions["memqueue"].storage.paused() == {"default"}
    r = client.post("/memqueue/ui/queues/default/resume", data={"next": "/memqueue/"})
    assert r.status_code == 403 and app.extensions["memqueue"].storage.paused() == {"default"}
    html = client.get("/memqueue/?task=boom&q=v2", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert failed[2].id in html and failed[0].id not in html and "All 1 matching" in html
