"""Fuzz every route of the blueprint with hypothesis (issue 9).

Requests are built from the ground up: any method (the usual ones, WebDAV's,
made-up tokens), raw paths under the prefix (control characters, percent
signs, non-UTF-8 bytes, unicode), raw query strings, headers, cookies and
bodies of any content type, sent through the werkzeug test client with the
raw ``PATH_INFO`` and ``QUERY_STRING`` a server would pass on. They go to
four apps: memory and SQLite journal, each without a token (a testing app)
and with ``MEMQUEUE_TOKEN``. The properties:

- never a 5xx other than a queue's 503, never a traceback in an error;
- every answer under the prefix that is not a dashboard page is JSON, and an
  error is ``{"error": <str>, "status": <its status>}``; every JSON answer
  is strict JSON (no NaN or Infinity);
- a refused request (4xx) changes no job;
- with a token set, a request without it is a 401 (only the sign-in form
  answers, and routing redirects, which carry nothing);
- a message accepted by ``/produce`` can be read back as strict JSON and
  shown on the dashboard.

Runs are bounded (:data:`EXAMPLES` per property, no deadline) and
deterministic by default: a fixed seed (``derandomize``), always in CI (the
``CI`` variable). Locally, ``MEMQUEUE_FUZZ_RANDOM=1`` draws new examples each
run (and keeps failures in ``.hypothesis/`` to replay them), and
``MEMQUEUE_FUZZ_EXAMPLES=2000`` searches longer::

    MEMQUEUE_FUZZ_RANDOM=1 MEMQUEUE_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.factory import build_app
from support.net import HOST, http
from support.processes import flask_run
from werkzeug.exceptions import HTTPException
from werkzeug.test import TestResponse

from flask_memqueue import MemQueue
from flask_memqueue.access import PAGE_ATTR, PUBLIC_ATTR
from flask_memqueue.state import AppQueue

PREFIX = "/memqueue"
TOKEN = "fuzz-token-0123456789abcdef"
SECRET = "fuzz-secret-key"

RANDOM = os.environ.get("MEMQUEUE_FUZZ_RANDOM") == "1" and not os.environ.get("CI")
#: Examples per property (per app).
EXAMPLES = int(os.environ.get("MEMQUEUE_FUZZ_EXAMPLES", "150"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded CI machine must not turn slowness into a failure
    derandomize=not RANDOM,
    database=None if not RANDOM else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)


# -- the apps -------------------------------------------------------------------------------------
@dataclass
class Target:
    app: Flask
    mq: MemQueue
    token: str | None
    ids: list[str]  # jobs made at the start, in every state

    @property
    def queue(self) -> AppQueue:
        return self.app.extensions["memqueue"]  # type: ignore[no-any-return]

    def snapshot(self) -> tuple[Any, ...]:
        storage = self.queue.storage
        return (storage.counts(), sorted((j.id, j.status.value) for j in storage.jobs(None, 100_000, 0)))


def _make_target(name: str, journal: Path | None, token: str | None) -> Target:
    mq = MemQueue()

    @mq.handler
    def on_message(message: Any) -> None:
        pass

    @mq.handler("orders")
    def on_order(message: Any) -> None:
        raise ValueError(f"cannot take order {message!r}")

    config: dict[str, Any] = {"MEMQUEUE_CONSUMER": False, "SECRET_KEY": SECRET, "MEMQUEUE_MAX_MESSAGE_BYTES": 4096}
    if journal is not None:
        config["MEMQUEUE_JOURNAL"] = str(journal)
    if token is not None:
        config["MEMQUEUE_TOKEN"] = token
    app = build_app(mq, name, **config)
    with app.app_context():
        done = mq.produce("done")
        failed = mq.produce({"order": 1}, topic="orders")
        assert mq.run_once() and mq.run_once()
        waiting = mq.produce([1, "two", {"three": None}])
        scheduled = mq.enqueue_in(3600, on_message, "later")
    return Target(app, mq, token, [done.id, failed.id, waiting.id, scheduled.id])


@pytest.fixture(scope="module", params=["memory", "journal", "memory-token", "journal-token"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    journal = tmp_path_factory.mktemp("fuzz") / "journal.db" if "journal" in request.param else None
    made = _make_target(f"fuzz_{request.param.replace('-', '_')}", journal, TOKEN if "token" in request.param else None)
    yield made
    made.queue.shutdown(wait=False)


# -- strategies ---------------------------------------------------------------------------------------
METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]),
    st.sampled_from(["PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "QUERY"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_.!#$%&'*+^`|~-]{0,15}", fullmatch=True),  # any token RFC 9110 allows
)

#: Path segments: plain, percent-encoded, control characters, non-ASCII, what the routes take.
SEGMENT_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="/"), max_size=20)
SEGMENT_BYTES = st.binary(max_size=12).map(lambda b: b.replace(b"/", b"").decode("latin-1"))
SEGMENTS = st.one_of(
    st.sampled_from(["produce", "jobs", "stats", "health", "threads", "ui", "purge", "cancel", "retry", "delete",
                     "abort", "queues", "pause", "resume", "groups", "dead", "requeue",
                     "sign-in", "sign-out", "", ".", "..", "%0A", "%2F", "%00", "\n", "\r\n", "\x00", "²"]),
    SEGMENT_TEXT.map(lambda t: t.encode("utf-8").decode("latin-1")),  # PATH_INFO is bytes as latin-1
    SEGMENT_BYTES,
)


@st.composite
def paths(draw: st.DrawFn, target: Target) -> str:
    """A raw PATH_INFO under the prefix: a known route with fuzzed parts, or anything."""
    job_id = draw(st.one_of(st.sampled_from(target.ids), SEGMENTS))
    known = [
        "/", "/produce", f"/produce/{draw(SEGMENTS)}", "/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/cancel",
        f"/jobs/{job_id}/retry", f"/jobs/{job_id}/abort", "/jobs/purge", "/jobs/retry", "/jobs/cancel",
        "/jobs/delete", f"/queues/{draw(SEGMENTS)}/pause", f"/queues/{draw(SEGMENTS)}/resume",
        f"/groups/{job_id}", "/stats", "/limits", "/health", "/threads", f"/ui/jobs/{job_id}",
        f"/ui/jobs/{job_id}/cancel", f"/ui/jobs/{job_id}/retry", f"/ui/jobs/{job_id}/abort",
        f"/ui/jobs/{job_id}/workflow", f"/ui/groups/{job_id}", f"/jobs?group={job_id}&task=x",
        "/ui/purge", "/ui/sign-in", "/ui/sign-out", "/dead", f"/dead/{draw(SEGMENTS)}",
        f"/dead/{draw(SEGMENTS)}/{job_id}", f"/dead/{draw(SEGMENTS)}/requeue",
        f"/dead/{draw(SEGMENTS)}/{job_id}/requeue",
        "/ui/dead", f"/ui/dead/{draw(SEGMENTS)}/requeue",
    ]
    tail = draw(st.one_of(st.sampled_from(known), st.lists(SEGMENTS, min_size=1, max_size=4).map(
        lambda parts: "/" + "/".join(parts))))
    return PREFIX + tail


NUMBERISH = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["²", "½", "１", "٥", "+1", "-0", " 5", "1_0", "1e3", "nan", "inf", "0x1f", "", "9" * 5000,
                     "0.2", "3600", "1.5", "0.1", "%C2%B2"]),
    st.text(max_size=10),
)
QUERY_KEYS = st.sampled_from(["page", "limit", "offset", "refresh", "status", "topic", "next", "x", "task", "q",
                              "since", "until", "queue"])


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """A raw QUERY_STRING (latin-1 text of its bytes), mostly ``key=value`` pairs, sometimes garbage."""
    if draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(QUERY_KEYS, st.one_of(NUMBERISH, st.sampled_from(
            ["queued", "failed", "QUEUED", "running", "/memqueue/", "//evil.example", "http://evil.example"]))),
            max_size=4))
        text = "&".join(f"{key}={value}" for key, value in pairs)
    else:
        text = draw(st.text(max_size=40))
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                       max_size=60)
CONTENT_TYPES = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
                     "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "multipart/form-data", "application/octet-stream", "", "*/*", "application/json;;;"]),
    HEADER_VALUE,
)


def nested_text(depth: int, objects: bool) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if objects else ("[" * depth + "1" + "]" * depth)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
MESSAGES = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" * 5000, '"\\ud800"', '"\\udfff x"',
                     '"\\u0000"', "[1,]", "{", "", "null", '"<script>alert(1)</script>"']),
    st.tuples(st.integers(1, 3000), st.booleans()).map(lambda d: nested_text(*d)),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 4:  # what /jobs/retry|cancel|delete want, with a fuzzed filter
        field = draw(st.sampled_from(["task", "q", "status", "queue", "since", "until", "other"]))
        return ('{"filter": {"' + field + '": ' + draw(MESSAGES) + "}}").encode("utf-8", "surrogatepass")
    if kind == 0:  # what /produce wants, with a fuzzed message and topic
        topic = draw(st.one_of(st.none(), st.just('"orders"'), st.just('""'), st.just("1"), st.text(max_size=8).map(
            json.dumps)))
        extra = draw(st.sampled_from(["", ', "other": 1']))
        body = '{"message": ' + draw(MESSAGES) + ("" if topic is None else ', "topic": ' + topic) + extra + "}"
        return body.encode("utf-8", "surrogatepass")
    if kind == 1:
        return draw(MESSAGES).encode("utf-8", "surrogatepass")
    if kind == 2:  # a form
        return draw(st.sampled_from([b"csrf_token=x&next=/memqueue/", b"token=" + TOKEN.encode(), b"a=%ZZ&&=",
                                     b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n"]))
    return draw(st.binary(max_size=200))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()


COOKIE_VALUES = st.one_of(
    HEADER_VALUE.filter(lambda v: ";" not in v),
    st.sampled_from(["", "a" * 4000, "x" * 43]),
    MESSAGES.map(_b64),
    st.builds(lambda k, m: _b64(json.dumps({"k": k, "m": m})), st.sampled_from(["ok", "error", "x"]), st.text()),
)


@st.composite
def headers(draw: st.DrawFn, target: Target) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    auth = draw(st.sampled_from(["none", "good", "wrong", "random"]))
    if auth == "good" and target.token:
        found.append(("Authorization", f"Bearer {target.token}"))
    elif auth == "wrong":
        found.append(("Authorization", "Bearer not-the-token-0123456789"))
    elif auth == "random":
        found.append(("Authorization", draw(HEADER_VALUE)))
    for name, values in [
        ("Content-Type", CONTENT_TYPES),
        ("Accept", st.sampled_from(["text/html", "application/json", "*/*", "text/html;q=0", "", "a/b;q=x"])
         | HEADER_VALUE),
        ("Origin", st.sampled_from(["null", "http://localhost", "http://evil.example", "http://[", "://"])
         | HEADER_VALUE),
        ("Sec-Fetch-Site", st.sampled_from(["same-origin", "cross-site", "none"]) | HEADER_VALUE),
        ("X-CSRF-Token", st.sampled_from(["x" * 43]) | HEADER_VALUE),
        ("Content-Length", st.sampled_from(["0", "-1", "99999999", "abc", "1"])),
    ]:
        if draw(st.integers(0, 3)) == 0:
            found.append((name, draw(values)))
    cookies = []
    for name in ("memqueue_notice", "memqueue_session", "memqueue_csrf"):
        if draw(st.booleans()):
            cookies.append(f"{name}={draw(COOKIE_VALUES)}")
    if cookies:
        found.append(("Cookie", "; ".join(cookies)))
    return found


# -- sending and checking ------------------------------------------------------------------------------
@dataclass
class Sent:
    method: str
    path_info: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


def send(target: Target, sent: Sent) -> TestResponse:
    client = target.app.test_client()
    return client.open(
        "/", method=sent.method, headers=sent.headers, data=sent.body,
        environ_overrides={"PATH_INFO": sent.path_info, "QUERY_STRING": sent.query, "REQUEST_URI": None},
    )


def _route(target: Target, sent: Sent) -> Any:
    """The view the request was routed to, or None (an unrouted request)."""
    path = sent.path_info.encode("latin-1").decode("utf-8", "replace")
    try:
        endpoint, _ = target.app.url_map.bind("localhost").match(path, method=sent.method)
    except HTTPException:
        return None
    return target.app.view_functions.get(endpoint)


def check(target: Target, sent: Sent, response: TestResponse, before: tuple[Any, ...]) -> None:
    status = response.status_code
    text = response.get_data(as_text=True)
    where = f"{sent.method} {sent.path_info!r}?{sent.query!r} -> {status}: {text[:300]!r}"
    assert status < 500 or status == 503, where
    if status >= 400:  # a job's own traceback is data /jobs and its page show; an error never carries one
        assert "Traceback" not in text, where
    view = _route(target, sent)
    page = getattr(view, PAGE_ATTR, None) is not None
    if response.mimetype == "application/json":
        def refuse(name: str) -> None:
            raise AssertionError(f"{name} in a JSON answer: {where}")

        body = json.loads(text, parse_constant=refuse) if text else None
        if status >= 400 and sent.method != "HEAD":  # a HEAD answer has no body
            assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], where
            assert body["status"] == status, where
    elif status >= 300 and status < 400:
        pass  # a redirect: a form's post/redirect/get, or routing's trailing slash
    elif text or status >= 400:
        assert page, f"not JSON outside a dashboard page: {where}"
        assert response.mimetype == "text/html", where
    if status >= 400:
        assert target.snapshot() == before, f"a refused request changed the jobs: {where}"
    if target.token is not None and ("Authorization", f"Bearer {target.token}") not in sent.headers:
        public = getattr(view, PUBLIC_ATTR, False)
        assert status == 401 or public or 300 <= status < 400, f"answered without the token: {where}"
        if not public:
            assert target.snapshot() == before, where


@st.composite
def requests(draw: st.DrawFn, target: Target) -> Sent:
    return Sent(draw(METHODS), draw(paths(target)), draw(query_strings()), draw(headers(target)), draw(bodies()))


# -- the properties -------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_any_request_under_the_prefix(target: Target, data: st.DataObject) -> None:
    sent = data.draw(requests(target))
    before = target.snapshot()
    check(target, sent, send(target, sent), before)


@FUZZ
@given(body=bodies(), content_type=CONTENT_TYPES, topic_in_path=st.booleans())
def test_produce_accepts_json_or_refuses_it_cleanly(
    target: Target, body: bytes, content_type: str, topic_in_path: bool
) -> None:
    auth = [("Authorization", f"Bearer {target.token}")] if target.token else []
    sent = Sent("POST", f"{PREFIX}/produce", "", [("Content-Type", content_type), *auth], body)
    before = target.snapshot()
    response = send(target, sent)
    check(target, sent, response, before)
    assert response.status_code in (202, 400, 404, 413), response.get_data(as_text=True)
    if response.status_code != 202:
        return
    job_id = response.get_json()["id"]
    assert sum(target.queue.storage.counts().values()) == sum(before[0].values()) + 1
    for path, kind in [(f"{PREFIX}/jobs/{job_id}", "application/json"), (f"{PREFIX}/jobs", "application/json"),
                       (f"{PREFIX}/ui/jobs/{job_id}", "text/html"), (f"{PREFIX}/", "text/html")]:
        read = Sent("GET", path, "", [("Accept", kind), *auth], b"")
        answer = send(target, read)
        assert answer.status_code == 200 and answer.mimetype == kind, answer.get_data(as_text=True)[:500]
        check(target, read, answer, target.snapshot())


@st.composite
def page_queries(draw: st.DrawFn) -> str:
    """The dashboard's own query arguments, each present or not, with number-like values."""
    args = draw(st.dictionaries(st.sampled_from(["page", "refresh", "status"]), NUMBERISH, max_size=3))
    text = "&".join(f"{key}={value}" for key, value in args.items())
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


@FUZZ
@given(query=st.one_of(page_queries(), query_strings()), hdrs=st.data())
def test_dashboard_pages_answer_a_page_for_any_query_and_cookie(
    target: Target, query: str, hdrs: st.DataObject
) -> None:
    auth = [("Authorization", f"Bearer {target.token}")] if target.token else []
    extra = [h for h in hdrs.draw(headers(target)) if h[0] in ("Cookie", "Accept")]
    for path in (f"{PREFIX}/", f"{PREFIX}/ui/jobs/{target.ids[0]}", f"{PREFIX}/ui/sign-in"):
        sent = Sent("GET", path, query, [*auth, *extra, ("Accept", "text/html")], b"")
        before = target.snapshot()
        response = send(target, sent)
        check(target, sent, response, before)
        assert response.status_code in (200, 303, 400), response.get_data(as_text=True)[:500]


# -- a real server, raw bytes on a socket --------------------------------------------------------------------
RAW_REQUESTS = [
    b"TRACE /memqueue/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"PROPFIND /memqueue/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"BREW /memqueue/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /memqueue/produce/a%0Ab HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /memqueue/jobs/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /memqueue/produce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2010\r\n"
    b"Connection: close\r\n\r\n{\"message\": " + b"[" * 999 + b"]" * 999 + b"}",
    b"POST /memqueue/produce HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\nConnection: close\r\n\r\n"
    b"{\"message\": NaN}",
]


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.processes
def test_raw_requests_to_a_real_server_answer_json(tmp_path: Path) -> None:
    """The same answers through a real ``flask run`` (Werkzeug's server parses the bytes, not the test client)."""
    root = Path(__file__).resolve().parent.parent
    with flask_run("example_app", cwd=root, log_path=tmp_path / "server.log", args=["--no-reload"]) as server:
        assert http("GET", server.url + "/memqueue/stats").status == 200, server.describe()
        for request in RAW_REQUESTS:
            answer = _raw(server.port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            assert status in (400, 404, 405), (request[:60], answer[:400])
            assert b"content-type: application/json" in head.lower(), (request[:60], answer[:400])
            assert json.loads(body)["status"] == status
        page = _raw(server.port, b"GET /memqueue/?page=%C2%B2 HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"
                                 b"Connection: close\r\n\r\n")
        assert page.startswith(b"HTTP/1.1 400 ") and b"content-type: text/html" in page.lower(), page[:400]
        assert "Traceback" not in server.output(), server.describe()
