"""The JSON blueprint: /produce's status-code table, access rules, jobs, threads, stats, health."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from flask import Flask, has_request_context
from flask.testing import FlaskClient
from support.waiting import TIMEOUT, Gate, wait_until
from werkzeug.test import TestResponse

from flask_memqueue import MemQueue, enqueue
from flask_memqueue.state import AppQueue

TOKEN = "s3cret-token-0123456789"


def assert_error(response: TestResponse, status: int) -> dict[str, Any]:
    """Every failure answers JSON with an "error" message."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    return body  # type: ignore[no-any-return]


@pytest.fixture
def received(mq: MemQueue) -> list[tuple[str | None, Any]]:
    """Messages the default handler and the "orders" handler got."""
    got: list[tuple[str | None, Any]] = []

    @mq.handler
    def on_message(message: Any) -> None:
        got.append((None, message))

    @mq.handler("orders")
    def on_order(message: Any) -> None:
        got.append(("orders", message))

    return got


# -- POST /produce ------------------------------------------------------------------------
def test_produce_accepts_a_message(client: FlaskClient, mq: MemQueue, received: list[Any]) -> None:
    response = client.post("/memqueue/produce", json={"message": {"any": ["json", 1]}})
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"id", "status"}
    assert body["status"] in ("queued", "running", "succeeded")
    job = mq.get_job(body["id"])
    assert job is not None
    job.wait(TIMEOUT)
    assert received == [(None, {"any": ["json", 1]})]
    assert client.get(response.headers["Location"]).get_json()["id"] == body["id"]


def test_produce_with_a_topic(client: FlaskClient, mq: MemQueue, received: list[Any]) -> None:
    for message in (None, 0, "text", [1, 2]):
        response = client.post("/memqueue/produce", json={"message": message, "topic": "orders"})
        assert response.status_code == 202
    assert mq.join(TIMEOUT)
    assert received == [("orders", None), ("orders", 0), ("orders", "text"), ("orders", [1, 2])]


@pytest.mark.parametrize(
    "data",
    ["{not json", "", "\xff", '{"message": 1', "NaN-ish"],
)
def test_produce_malformed_json_is_400(client: FlaskClient, received: list[Any], data: str) -> None:
    response = client.post("/memqueue/produce", data=data, content_type="application/json")
    assert_error(response, 400)


@pytest.mark.parametrize("payload", [{}, {"msg": 1}, [1, 2], "message", 42, None, {"topic": "orders"}])
def test_produce_without_a_message_is_400(client: FlaskClient, received: list[Any], payload: Any) -> None:
    assert_error(client.post("/memqueue/produce", json=payload), 400)


@pytest.mark.parametrize("topic", [5, "", ["orders"], {"a": 1}, True])
def test_produce_with_a_bad_topic_is_400(client: FlaskClient, received: list[Any], topic: Any) -> None:
    assert_error(client.post("/memqueue/produce", json={"message": 1, "topic": topic}), 400)


def test_produce_for_a_topic_without_handler_is_404(client: FlaskClient, received: list[Any]) -> None:
    body = assert_error(client.post("/memqueue/produce", json={"message": 1, "topic": "nobody"}), 404)
    assert "nobody" in body["error"]


def test_produce_without_a_default_handler_is_404(client: FlaskClient) -> None:
    assert_error(client.post("/memqueue/produce", json={"message": 1}), 404)


@pytest.mark.app_config(MEMQUEUE_MAX_MESSAGE_BYTES=100)
def test_produce_over_max_message_bytes_is_413(client: FlaskClient, mq: MemQueue, received: list[Any]) -> None:
    body = assert_error(client.post("/memqueue/produce", json={"message": "x" * 200}), 413)
    assert "MEMQUEUE_MAX_MESSAGE_BYTES" in body["error"]
    assert_error(client.post("/memqueue/produce/" + "y" * 200), 413)
    assert client.post("/memqueue/produce", json={"message": "x" * 50}).status_code == 202
    assert mq.join(TIMEOUT)
    assert received == [(None, "x" * 50)]


@pytest.mark.app_config(MEMQUEUE_MAXSIZE=1)
def test_produce_on_a_full_queue_is_503_with_retry_after(
    client: FlaskClient, mq: MemQueue, gate: Gate, received: list[Any]
) -> None:
    mq.enqueue(gate)
    gate.wait_entered()
    assert client.post("/memqueue/produce", json={"message": 1}).status_code == 202
    response = client.post("/memqueue/produce", json={"message": 2})
    assert_error(response, 503)
    assert int(response.headers["Retry-After"]) >= 1
    assert_error(client.post("/memqueue/produce/3"), 503)
    gate.release()
    assert mq.join(TIMEOUT)
    assert received == [(None, 1)]


# -- /produce/<message> --------------------------------------------------------------------
def test_produce_from_the_path(client: FlaskClient, mq: MemQueue, received: list[Any]) -> None:
    response = client.post("/memqueue/produce/hello%20world")
    assert response.status_code == 202
    assert client.post("/memqueue/produce/a/b?topic=orders").status_code == 202
    assert mq.join(TIMEOUT)
    assert received == [(None, "hello world"), ("orders", "a/b")]
    assert_error(client.post("/memqueue/produce/x?topic=nobody"), 404)


def test_get_produce_from_the_path_is_405_unless_debug(client: FlaskClient, received: list[Any]) -> None:
    response = client.get("/memqueue/produce/hello")
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]
    assert received == []


def test_get_produce_from_the_path_works_in_debug(
    make_app: Any, mq: MemQueue, received: list[Any]
) -> None:
    app = make_app("debugging", testing=False)
    app.debug = True
    response = app.test_client().get("/memqueue/produce/hello")
    assert response.status_code == 202
    with app.app_context():
        assert mq.join(TIMEOUT)
    assert received == [(None, "hello")]


# -- JSON errors for everything under the prefix ------------------------------------------------
@pytest.mark.parametrize("path", ["/memqueue/nothing-here", "/memqueue/jobs/a/b/c", "/memqueue/produce-x"])
def test_unknown_url_under_the_prefix_is_json_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404)
    assert_error(client.post(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/memqueue/produce", "POST"), ("DELETE", "/memqueue/stats", "GET"),
     ("PUT", "/memqueue/threads", "GET"), ("POST", "/memqueue/health", "GET")],
)
def test_wrong_method_is_json_405_with_allow(client: FlaskClient, method: str, path: str, allowed: str) -> None:
    response = client.open(path, method=method)
    assert_error(response, 405)
    assert allowed in [m.strip() for m in response.headers["Allow"].split(",")]


# -- access --------------------------------------------------------------------------------
@pytest.mark.app_config(MEMQUEUE_TOKEN=TOKEN)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", TOKEN],
)
def test_with_a_token_requests_without_it_are_401(
    client: FlaskClient, received: list[Any], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in (
        client.get("/memqueue/stats", headers=headers),
        client.post("/memqueue/produce", json={"message": 1}, headers=headers),
        client.get("/memqueue/threads", headers=headers),
    ):
        body = assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in body["error"].lower()
    assert received == []


@pytest.mark.parametrize("testing", [True, False])
def test_with_the_right_token_requests_pass(make_app: Any, mq: MemQueue, received: list[Any], testing: bool) -> None:
    app = make_app("tokened", testing=testing, MEMQUEUE_TOKEN=TOKEN)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/memqueue/stats", headers=headers).status_code == 200
    response = client.post("/memqueue/produce", json={"message": 1}, headers=headers)
    assert response.status_code == 202
    assert client.get(f"/memqueue/jobs/{response.get_json()['id']}", headers=headers).status_code == 200
    with app.app_context():
        assert mq.join(TIMEOUT)
    assert received == [(None, 1)]


def test_without_a_token_a_production_app_answers_403(make_app: Any, received: list[Any]) -> None:
    app = make_app("production", testing=False)
    client = app.test_client()
    for response in (
        client.get("/memqueue/stats"),
        client.get("/memqueue/threads"),
        client.post("/memqueue/produce", json={"message": 1}),
        client.post("/memqueue/produce/hi"),
    ):
        body = assert_error(response, 403)
        assert "MEMQUEUE_TOKEN" in body["error"]
    assert received == []


@pytest.mark.parametrize(("debug", "testing"), [(True, False), (False, True)])
def test_without_a_token_debug_or_testing_apps_answer(
    make_app: Any, received: list[Any], debug: bool, testing: bool
) -> None:
    app = make_app("devapp", testing=testing)
    app.debug = debug
    client = app.test_client()
    assert client.get("/memqueue/stats").status_code == 200
    assert client.post("/memqueue/produce", json={"message": 1}).status_code == 202


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "https://localhost"},
     {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://localhost:9999"}],
)
def test_cross_origin_posts_are_refused(client: FlaskClient, received: list[Any], headers: dict[str, str]) -> None:
    assert_error(client.post("/memqueue/produce", json={"message": 1}, headers=headers), 403)
    assert_error(client.post("/memqueue/produce/hi", headers=headers), 403)
    assert received == []


def test_same_origin_posts_pass(client: FlaskClient, mq: MemQueue, received: list[Any]) -> None:
    for headers in ({"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}, {}):
        assert client.post("/memqueue/produce", json={"message": 1}, headers=headers).status_code == 202
    assert mq.join(TIMEOUT)
    assert len(received) == 3


# -- looking at the process and the jobs ---------------------------------------------------------
def test_threads(client: FlaskClient, app: Flask, queue: AppQueue) -> None:
    body = client.get("/memqueue/threads").get_json()
    assert body["pid"] == os.getpid()
    consumer = body["consumer"]
    assert consumer["name"] == f"memqueue-consumer[{app.name}]"
    assert consumer["alive"] is True and consumer["ident"] == queue.consumer_ident
    assert consumer["jobs_done"] == 0
    for entry in body["threads"]:
        assert {"name", "ident", "daemon", "alive", "is_consumer"} <= set(entry)
    consumers = [t for t in body["threads"] if t["is_consumer"]]
    assert [(t["name"], t["ident"]) for t in consumers] == [(consumer["name"], consumer["ident"])]
    main = [t for t in body["threads"] if t["ident"] == threading.main_thread().ident]
    assert main and main[0]["is_consumer"] is False


def test_job_by_id(client: FlaskClient, mq: MemQueue) -> None:
    job = mq.enqueue(lambda: {"answer": 42})
    job.wait(TIMEOUT)
    body = client.get(f"/memqueue/jobs/{job.id}").get_json()
    assert body["id"] == job.id and body["status"] == "succeeded" and body["result"] == {"answer": 42}
    assert_error(client.get("/memqueue/jobs/nope-1"), 404)
    assert_error(client.get("/memqueue/jobs/nope"), 404)


def test_stats(client: FlaskClient, mq: MemQueue) -> None:
    mq.enqueue(lambda: None).wait(TIMEOUT)
    assert mq.join(TIMEOUT)
    body = client.get("/memqueue/stats").get_json()
    assert set(body["counts"]) == {"queued", "scheduled", "deferred", "running", "succeeded", "failed", "cancelled",
                                   "aborted"}
    assert body["counts"]["succeeded"] == 1
    assert body["depth"] == 0 and body["maxsize"] == 10_000
    assert body["consumer_alive"] is True
    assert body["uptime"] >= 0


def test_health(client: FlaskClient) -> None:
    response = client.get("/memqueue/health")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_health_is_503_when_the_consumer_is_dead_and_cannot_be_restarted(
    client: FlaskClient, queue: AppQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    response = client.get("/memqueue/health")
    body = assert_error(response, 503)
    assert "can't start new thread" in body["error"]
    monkeypatch.undo()
    assert client.get("/memqueue/health").status_code == 200
    assert queue.consumer_thread is not None


def test_health_after_a_consumer_crash_restarts_it(
    client: FlaskClient, mq: MemQueue, queue: AppQueue
) -> None:
    def die() -> None:
        raise SystemExit

    mq.enqueue(die)
    wait_until(lambda: queue.starts == 2 and queue.consumer_thread is not None)
    assert client.get("/memqueue/health").status_code == 200


def test_jobs_listing_cancel_retry_and_purge(client: FlaskClient, mq: MemQueue, gate: Gate) -> None:
    def boom() -> None:
        raise ValueError("x")

    failed = mq.enqueue(boom)
    blocker = mq.enqueue(gate)
    gate.wait_entered()
    waiting = mq.enqueue(lambda: 1)
    listing = client.get("/memqueue/jobs").get_json()
    assert [j["id"] for j in listing["jobs"]] == [waiting.id, blocker.id, failed.id]  # newest first
    assert [j["id"] for j in client.get("/memqueue/jobs?status=failed").get_json()["jobs"]] == [failed.id]
    assert len(client.get("/memqueue/jobs?limit=1").get_json()["jobs"]) == 1
    assert_error(client.get("/memqueue/jobs?status=bogus"), 400)
    assert_error(client.get("/memqueue/jobs?limit=0"), 400)
    assert client.post(f"/memqueue/jobs/{waiting.id}/cancel").get_json()["status"] == "cancelled"
    assert_error(client.post(f"/memqueue/jobs/{blocker.id}/cancel"), 409)
    assert client.post(f"/memqueue/jobs/{waiting.id}/retry").status_code == 202
    gate.release()
    assert waiting.wait(TIMEOUT) == 1
    assert mq.join(TIMEOUT)
    assert client.post("/memqueue/jobs/purge").get_json()["purged"] == 3


# -- where the blueprint is mounted --------------------------------------------------------------
def test_url_prefix_none_registers_no_routes(make_app: Any) -> None:
    app = make_app("noroutes", MEMQUEUE_URL_PREFIX=None)
    assert not any(rule.endpoint.startswith("memqueue.") for rule in app.url_map.iter_rules())
    assert app.test_client().get("/memqueue/stats").status_code == 404


def test_a_custom_url_prefix(make_app: Any) -> None:
    app = make_app("prefixed", MEMQUEUE_URL_PREFIX="/admin/queue")
    client = app.test_client()
    assert client.get("/admin/queue/stats").status_code == 200
    assert client.get("/memqueue/stats").status_code == 404
    assert_error(client.get("/admin/queue/nothing"), 404)


# -- enqueue() from a view ---------------------------------------------------------------------
def test_a_view_enqueues_and_answers_before_the_job_runs(app: Flask, mq: MemQueue, gate: Gate) -> None:
    @app.post("/signup")
    def signup() -> Any:
        blocker = enqueue(gate)  # the response must not wait for it
        job = enqueue(lambda email: (email, has_request_context()), "a@b.c")
        return {"blocker": blocker.id, "job": job.id}, 202

    response = app.test_client().post("/signup")
    assert response.status_code == 202
    ids = response.get_json()
    blocker = mq.get_job(ids["blocker"])
    job = mq.get_job(ids["job"])
    assert blocker is not None and job is not None
    assert job.status == "queued"  # answered while the first job still blocks the consumer
    gate.release()
    assert job.wait(TIMEOUT) == ("a@b.c", False)  # a job never sees the request


def test_produce_after_shutdown_is_503(client: FlaskClient, mq: MemQueue, received: list[Any]) -> None:
    mq.shutdown()
    assert_error(client.post("/memqueue/produce", json={"message": 1}), 503)
    assert received == []
