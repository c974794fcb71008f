"""Regressions of issue 9, defects 1-6: what the HTTP side must survive.

Each test is named after the defect it keeps fixed and fails on the code
before the fix. The fuzz suite (``test_fuzz.py``) looks for the next ones.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_memqueue import MemQueue
from flask_memqueue.job import json_safe
from flask_memqueue.state import AppQueue

HTML = {"Accept": "text/html"}
TOKEN = "s3cret-token-for-hardening-0123"


def _strict_json(response: TestResponse) -> Any:
    """The body parsed the way a browser's ``JSON.parse`` would: no NaN, no Infinity."""

    def refuse(name: str) -> None:
        raise AssertionError(f"the answer holds {name}, which JSON.parse rejects: {response.get_data(as_text=True)}")

    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


def assert_json_error(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:500]
    body = _strict_json(response)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    assert body["status"] == status
    assert "Traceback" not in body["error"]
    return body


def nested(depth: int, *, objects: bool = False) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value} if objects else [value]
    return value


def nested_text(depth: int, *, objects: bool = False) -> str:
    """Deep JSON as text, built without recursion (json.dumps could not)."""
    if objects:
        return '{"a":' * depth + "0" + "}" * depth
    return "[" * depth + "0" + "]" * depth


class Evil:
    """An argument whose ``__repr__`` raises, as a user's class may."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.fixture
def hq(make_app: Callable[..., Flask], mq: MemQueue) -> Iterator[tuple[Flask, MemQueue, FlaskClient]]:
    """A testing app whose jobs wait (no consumer), with a default handler."""

    @mq.handler
    def on_message(message: Any) -> None:
        pass

    app = make_app("hardening", MEMQUEUE_CONSUMER=False, SECRET_KEY="secret-for-hardening")
    yield app, mq, app.test_client()


def _total(app: Flask) -> int:
    queue: AppQueue = app.extensions["memqueue"]
    return sum(queue.storage.counts().values())


# -- defect 1 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("objects", [False, True], ids=["arrays", "objects"])
@pytest.mark.parametrize("depth", [1_000, 10_000])
def test_defect1_deeply_nested_json_body_is_400(hq: Any, objects: bool, depth: int) -> None:
    app, _, client = hq
    body = '{"message": ' + nested_text(depth, objects=objects) + "}"  # under the 64 KB limit
    response = client.post("/memqueue/produce", data=body, content_type="application/json")
    assert_json_error(response, 400)
    assert _total(app) == 0


def test_defect1_nesting_within_the_bound_is_accepted(hq: Any) -> None:
    from flask_memqueue.views import MAX_JSON_DEPTH

    app, _, client = hq
    inner = nested_text(MAX_JSON_DEPTH - 1)  # the body object is one level more
    ok = client.post("/memqueue/produce", data='{"message": ' + inner + "}", content_type="application/json")
    assert ok.status_code == 202, ok.get_data(as_text=True)
    deeper = client.post("/memqueue/produce", data='{"message": [' + inner + "]}", content_type="application/json")
    body = assert_json_error(deeper, 400)
    assert str(MAX_JSON_DEPTH) in body["error"]
    assert _total(app) == 1


# -- defect 2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arg",
    [nested(2_000), nested(2_000, objects=True), Evil(), [Evil(), 1], {1: "int key", "b": "str key"},
     {"deep": nested(5_000)}],
    ids=["deep-list", "deep-dict", "raising-repr", "raising-repr-inside", "mixed-keys", "deeper-inside"],
)
def test_defect2_one_job_never_takes_the_routes_down(hq: Any, arg: Any) -> None:
    app, mq, client = hq
    with app.app_context():
        job = mq.enqueue(lambda x: None, arg)
        data = job.to_dict()
    json.dumps(data, allow_nan=False, sort_keys=True)  # what jsonify does, strictly
    assert isinstance(_strict_json(client.get("/memqueue/jobs")), dict)
    assert _strict_json(client.get(f"/memqueue/jobs/{job.id}"))["id"] == job.id
    for path in ("/memqueue/", f"/memqueue/ui/jobs/{job.id}"):
        response = client.get(path, headers=HTML)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        assert response.mimetype == "text/html"


def test_defect2_json_safe_never_raises() -> None:
    for value in (nested(3_000), Evil(), [Evil()], {"k": Evil()}, float("nan"), [1, float("inf")]):
        shown = json_safe(value)
        json.dumps(shown, allow_nan=False, sort_keys=True)
    assert json_safe([1, "a", {"b": None}]) == [1, "a", {"b": None}]  # JSON stays as it is


# -- defect 3 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_defect3_nan_and_infinity_are_refused_at_the_door(hq: Any, constant: str) -> None:
    app, _, client = hq
    response = client.post("/memqueue/produce", data='{"message": [1, ' + constant + "]}",
                           content_type="application/json")
    assert_json_error(response, 400)
    assert _total(app) == 0


def test_defect3_nan_and_infinity_are_never_emitted(hq: Any) -> None:
    app, mq, client = hq
    with app.app_context():
        job = mq.enqueue(lambda *a: None, float("nan"), [float("inf")], {"x": -math.inf})
    data = _strict_json(client.get(f"/memqueue/jobs/{job.id}"))
    assert all(isinstance(a, str) for a in data["args"])  # shown as text, not as a number
    _strict_json(client.get("/memqueue/jobs"))


# -- defect 4 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "MKCOL", "CONNECT", "FOO-BAR"])
@pytest.mark.parametrize("path", ["/memqueue/stats", "/memqueue/produce", "/memqueue/nothing", "/memqueue/jobs/x"])
def test_defect4_any_method_under_the_prefix_answers_json(hq: Any, method: str, path: str) -> None:
    _, _, client = hq
    response = client.open(path, method=method)
    assert response.status_code in (404, 405)
    assert_json_error(response, response.status_code)
    if response.status_code == 405:
        assert response.headers["Allow"]


@pytest.mark.parametrize("path", ["/memqueue/produce/a%0Ab", "/memqueue/%0A", "/memqueue/jobs/%0D%0A/cancel",
                                  "/memqueue/produce/%00"])
def test_defect4_control_characters_in_the_path_answer_json(hq: Any, path: str) -> None:
    app, _, client = hq
    for method in ("GET", "POST", "TRACE"):
        response = client.open(path, method=method)
        assert response.status_code < 500
        if response.status_code >= 400:
            assert_json_error(response, response.status_code)
    assert _total(app) <= 1  # "/produce/%00" queues a message "\x00" (POST only); nothing else does


def test_defect4_unrouted_requests_still_need_the_token(make_app: Callable[..., Flask]) -> None:
    app = make_app("hardening_token", MEMQUEUE_TOKEN=TOKEN)
    client = app.test_client()
    for method, path in [("TRACE", "/memqueue/stats"), ("GET", "/memqueue/produce/a%0Ab"), ("GET", "/memqueue/x")]:
        assert_json_error(client.open(path, method=method), 401)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert_json_error(client.open("/memqueue/stats", method="TRACE", headers=auth), 405)
    assert_json_error(client.get("/memqueue/x", headers=auth), 404)


def test_defect4_the_apps_own_404_is_left_alone(make_app: Callable[..., Flask]) -> None:
    app = make_app("hardening_own")
    response = app.test_client().open("/ping", method="TRACE")
    assert response.status_code == 405 and response.mimetype == "text/html"
    assert app.test_client().get("/memqueuex").mimetype == "text/html"


def test_defect4_an_unexpected_error_is_a_json_500_without_traceback(
    hq: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, _, client = hq
    queue: AppQueue = app.extensions["memqueue"]

    def broken(*args: Any) -> Any:
        raise ZeroDivisionError("the store fell over")

    queue.storage.counts = broken  # type: ignore[method-assign]  # a fault, not a mock of behaviour
    body = assert_json_error(client.get("/memqueue/jobs"), 500)
    assert "the store fell over" not in body["error"]
    assert any("the store fell over" in r.getMessage() or (r.exc_info and "fell over" in str(r.exc_info[1]))
               for r in caplog.records), "the traceback must go to the app's log"
    page = client.get("/memqueue/", headers=HTML)
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "Traceback" not in page.get_data(as_text=True)


# -- defect 5 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["page=%C2%B2", "page=" + "9" * 5_000, "page=%EF%BC%91", "page=+1", "page=1_0",
                                   "refresh=%C2%BD", "refresh=1_0", "refresh=" + "1" * 5_000, "refresh=nan",
                                   "refresh=inf"])
def test_defect5_dashboard_numbers_are_validated_by_what_parses(hq: Any, query: str) -> None:
    _, _, client = hq
    response = client.get(f"/memqueue/?{query}", headers=HTML)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert len(response.get_data()) < 50_000  # a 5,000-digit value is not echoed in full


@pytest.mark.parametrize("query", ["limit=%C2%B2", "offset=" + "9" * 5_000, "limit=%EF%BC%91", "offset=+1",
                                   "limit=1_0", "offset=%D9%A5", "limit= 5"])
def test_defect5_json_numbers_are_validated_by_what_parses(hq: Any, query: str) -> None:
    _, _, client = hq
    body = assert_json_error(client.get(f"/memqueue/jobs?{query}"), 400)
    assert len(body["error"]) < 300


# -- defect 6 --------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@pytest.mark.parametrize(
    "cookie",
    [_b64(("[" * 2_000 + "]" * 2_000).encode()), _b64(b'{"k": "ok", "m": ' + b"[" * 1_500 + b"]" * 1_500 + b"}"),
     _b64(b"NaN"), _b64(b'{"k": ["ok"], "m": {"x": 1}}'), _b64(b"\xff\xfe"), "%%%not-base64", "a" * 100_000,
     _b64(json.dumps({"k": "ok", "m": "x" * 50_000}).encode()), _b64(b'["k", "m"]')],
    ids=["deep", "deep-m", "nan", "wrong-shape", "not-utf8", "not-base64", "huge", "huge-m", "list"],
)
def test_defect6_a_crafted_notice_cookie_is_ignored(hq: Any, cookie: str) -> None:
    app, mq, client = hq
    with app.app_context():
        job = mq.enqueue(lambda: None)
    for path in ("/memqueue/", f"/memqueue/ui/jobs/{job.id}"):  # a raw header: set_cookie() warns it is too big
        response = client.get(path, headers={**HTML, "Cookie": f"memqueue_notice={cookie}"})
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        assert "x" * 1_000 not in response.get_data(as_text=True)


def test_defect6_a_notice_we_wrote_is_shown(hq: Any) -> None:
    _, _, client = hq
    client.set_cookie("memqueue_notice", _b64(json.dumps({"k": "ok", "m": "Purged 3 jobs."}).encode()),
                      path="/memqueue")
    assert "Purged 3 jobs." in client.get("/memqueue/", headers=HTML).get_data(as_text=True)


@pytest.mark.parametrize("value", ["a" * 5_000, "é" * 40, "x" * 31, "\x00" * 40, "[" * 3_000])
def test_defect6_crafted_sign_in_and_csrf_cookies_are_refused_not_500(make_app: Callable[..., Flask],
                                                                      value: str) -> None:
    app = make_app("hardening_cookies", MEMQUEUE_TOKEN=TOKEN, SECRET_KEY="secret-for-hardening")
    client = app.test_client()
    cookies = {"Cookie": f"memqueue_session={value}; memqueue_csrf={value}"}  # raw: set_cookie() warns on size
    assert_json_error(client.get("/memqueue/stats", headers=cookies), 401)
    assert client.get("/memqueue/", headers={**HTML, **cookies}).status_code == 401
    page = client.get("/memqueue/ui/sign-in", headers={**HTML, **cookies})
    assert page.status_code == 200
    assert value not in page.get_data(as_text=True)  # a cookie that is no token of ours is replaced
    assert_json_error(client.post("/memqueue/jobs/purge", headers={"X-CSRF-Token": value, **cookies}), 401)


# -- found by the fuzz suite and while fixing the above ---------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PROPFIND", "DELETE"])
def test_a_wrong_method_on_the_dashboard_root_answers_json(hq: Any, method: str) -> None:
    """The old catch-all ``/<path:rest>`` did not match the prefix's root: an HTML 405."""
    _, _, client = hq
    assert_json_error(client.open("/memqueue/", method=method), 405)


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "https://]x["])
def test_a_broken_origin_header_is_refused_not_500(hq: Any, origin: str) -> None:
    app, _, client = hq
    response = client.post("/memqueue/produce", json={"message": 1}, headers={"Origin": origin})
    assert_json_error(response, 403)
    assert _total(app) == 0


def test_a_lone_surrogate_in_a_message_does_not_break_its_pages(hq: Any) -> None:
    """``"\\ud800"`` is valid JSON but no UTF-8 can encode it; the pages escape it."""
    app, _, client = hq
    response = client.post("/memqueue/produce", data='{"message": "a\\ud800b"}', content_type="application/json")
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    assert _strict_json(client.get(f"/memqueue/jobs/{job_id}"))["args"] == ["a\ud800b"]
    for path in ("/memqueue/", f"/memqueue/ui/jobs/{job_id}"):
        page = client.get(path, headers=HTML)
        assert page.status_code == 200, page.get_data()[:300]
    assert "a\\ud800b" in client.get(f"/memqueue/ui/jobs/{job_id}", headers=HTML).get_data(as_text=True)


def test_an_eta_no_datetime_can_hold_does_not_break_to_dict(hq: Any) -> None:
    app, mq, client = hq
    with app.app_context():
        job = mq.enqueue_in(1e20, lambda: None)
        assert job.to_dict()["eta"] is None
    assert _strict_json(client.get(f"/memqueue/jobs/{job.id}"))["status"] == "scheduled"
    assert client.get(f"/memqueue/ui/jobs/{job.id}", headers=HTML).status_code == 200
