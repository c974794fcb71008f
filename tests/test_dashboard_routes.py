"""Route tests for the dashboard (issue 6) and the JSON job routes it builds on.

Every route and every status code it can answer: 200/202/303 on success,
400 for a bad query, 401 without a token, 403 in production without one,
for a cross-site request or a missing/wrong CSRF token, 404 for an unknown
job, 409 for an action the job's state does not allow, 500 for a sign-in
the app cannot sign (no SECRET_KEY), 503 after shutdown. No sleeps: jobs
wait on events, the queue is drained with ``join(timeout)``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_memqueue import Job, JobStatus, MemQueue, current_job

TOKEN = "s3cret-token-for-the-tests-0123"
SECRET = "a-secret-key-only-for-these-tests"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
WAIT = 10.0  # seconds any single wait in these tests may take at most
#: A job's row in the table (not the blank row the page's script clones).
ROW = re.compile(r'<tr role="row" data-id="(?!__ID__)')


@dataclass
class Harness:
    """One app with its own MemQueue and tasks whose timing the test controls."""

    app: Flask
    mq: MemQueue
    client: FlaskClient
    #: Set by the test to let ``block`` jobs finish.
    gate: threading.Event = field(default_factory=threading.Event)
    #: Set by a ``block`` job once it runs.
    started: threading.Event = field(default_factory=threading.Event)
    #: While True, ``flaky`` jobs fail.
    failing: dict[str, bool] = field(default_factory=lambda: {"on": True})
    tasks: dict[str, Any] = field(default_factory=dict)

    def enqueue(self, name: str, *args: Any) -> Job:
        with self.app.app_context():
            return self.mq.enqueue(self.tasks[name], *args)

    def schedule(self, name: str, *args: Any) -> Job:
        """A job due in an hour: it waits (and can be cancelled) for the whole test."""
        with self.app.app_context():
            return self.mq.enqueue_in(3600, self.tasks[name], *args)

    def join(self) -> None:
        with self.app.app_context():
            assert self.mq.join(WAIT), "the queue did not drain in time"

    def running_job(self) -> Job:
        """A job that is running (blocked on :attr:`gate`) when this returns."""
        job = self.enqueue("block")
        assert self.started.wait(WAIT), "the block job did not start"
        return job

    def close(self) -> None:
        self.gate.set()
        queue = self.app.extensions["memqueue"]
        for status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
            for job in queue.storage.jobs(status, 10_000, 0):
                job.cancel()
        if not queue.closed:
            assert queue.shutdown(wait=True, timeout=WAIT) is not None


def _build(**config: Any) -> Harness:
    mq = MemQueue()
    app = Flask(f"dash_routes_{len(config)}")
    app.config.update({"TESTING": True, **config})
    h = Harness(app, mq, app.test_client())

    @mq.task
    def ok(value: Any = None) -> Any:
        current_job.set_progress(0.5, "half way")
        return {"echo": value}

    @mq.task
    def fail(value: Any = None) -> None:
        raise ValueError(f"bad value: {value}")

    @mq.task
    def flaky(value: Any = None) -> str:
        if h.failing["on"]:
            raise RuntimeError("flaky failed")
        return "fine"

    @mq.task
    def block() -> str:
        h.started.set()
        assert h.gate.wait(WAIT)
        return "unblocked"

    h.tasks.update(ok=ok, fail=fail, flaky=flaky, block=block)
    mq.init_app(app)
    return h


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    """Build apps (config keywords -> app.config); every one is shut down after the test."""
    made: list[Harness] = []

    def build(**config: Any) -> Harness:
        h = _build(**config)
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    """A testing app without a token (the routes answer it without one)."""
    return make()


@pytest.fixture
def ht(make: Callable[..., Harness]) -> Harness:
    """A production app (not testing) with MEMQUEUE_TOKEN and a SECRET_KEY."""
    return make(TESTING=False, MEMQUEUE_TOKEN=TOKEN, SECRET_KEY=SECRET)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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


def status_of(job: Job) -> JobStatus:
    """The job's status now (a call, so the type checker does not keep an earlier assert's narrowing)."""
    return job.status


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


# == JSON: GET /jobs ===========================================================
def test_jobs_lists_newest_first_with_total(h: Harness) -> None:
    first, second = h.enqueue("ok", 1), h.enqueue("ok", 2)
    h.join()
    r = h.client.get("/memqueue/jobs")
    assert r.status_code == 200
    data = r.get_json()
    assert [j["id"] for j in data["jobs"]] == [second.id, first.id]
    assert data["total"] == 2 and data["limit"] == 50 and data["offset"] == 0 and data["status"] is None
    assert data["jobs"][0]["progress"] == 0.5 and data["jobs"][0]["progress_message"] == "half way"


def test_jobs_filter_by_status_and_page(h: Harness) -> None:
    oks = [h.enqueue("ok", i) for i in range(3)]
    failed = h.enqueue("fail", "x")
    h.join()
    r = h.client.get("/memqueue/jobs?status=failed")
    assert r.status_code == 200
    assert [j["id"] for j in r.get_json()["jobs"]] == [failed.id]
    r = h.client.get("/memqueue/jobs?status=succeeded&limit=2&offset=1")
    data = r.get_json()
    assert data["total"] == 3 and data["status"] == "succeeded"
    assert [j["id"] for j in data["jobs"]] == [oks[1].id, oks[0].id]


@pytest.mark.parametrize(
    "query, word",
    [("status=bogus", "status"), ("limit=0", "limit"), ("limit=abc", "limit"), ("limit=501", "limit"),
     ("offset=-1", "offset")],
)
def test_jobs_bad_query_is_400(h: Harness, query: str, word: str) -> None:
    r = h.client.get(f"/memqueue/jobs?{query}")
    assert r.status_code == 400
    assert word in r.get_json()["error"]


# == JSON: POST /jobs/<id>/cancel ==============================================
def test_cancel_waiting_job_is_200(h: Harness) -> None:
    job = h.schedule("ok", 1)
    r = h.client.post(f"/memqueue/jobs/{job.id}/cancel")
    assert r.status_code == 200
    assert r.get_json() == {"id": job.id, "status": "cancelled"}
    assert job.status is JobStatus.CANCELLED


def test_cancel_running_or_finished_job_is_409(h: Harness) -> None:
    running = h.running_job()
    r = h.client.post(f"/memqueue/jobs/{running.id}/cancel")
    assert r.status_code == 409 and "running" in r.get_json()["error"]
    h.gate.set()
    h.join()
    r = h.client.post(f"/memqueue/jobs/{running.id}/cancel")
    assert r.status_code == 409 and "succeeded" in r.get_json()["error"]


def test_cancel_unknown_job_is_404(h: Harness) -> None:
    assert h.client.post("/memqueue/jobs/nope-1/cancel").status_code == 404


# == JSON: POST /jobs/<id>/retry ===============================================
def test_retry_failed_job_is_202_and_it_runs_again(h: Harness) -> None:
    job = h.enqueue("flaky")
    h.join()
    assert job.status is JobStatus.FAILED
    h.failing["on"] = False
    r = h.client.post(f"/memqueue/jobs/{job.id}/retry")
    assert r.status_code == 202
    assert r.get_json() == {"id": job.id, "status": "queued"}
    assert r.headers["Location"].endswith(f"/memqueue/jobs/{job.id}")
    h.join()
    assert status_of(job) is JobStatus.SUCCEEDED and job.result == "fine"


def test_retry_cancelled_job_is_202(h: Harness) -> None:
    job = h.schedule("ok", 1)
    assert job.cancel()
    assert h.client.post(f"/memqueue/jobs/{job.id}/retry").status_code == 202
    h.join()
    assert job.status is JobStatus.SUCCEEDED


def test_retry_succeeded_job_is_409_and_unknown_is_404(h: Harness) -> None:
    job = h.enqueue("ok", 1)
    h.join()
    r = h.client.post(f"/memqueue/jobs/{job.id}/retry")
    assert r.status_code == 409 and "only a failed or cancelled job" in r.get_json()["error"]
    assert h.client.post("/memqueue/jobs/nope-1/retry").status_code == 404


def test_retry_after_shutdown_is_503(h: Harness) -> None:
    job = h.enqueue("fail", 1)
    h.join()
    with h.app.app_context():
        h.mq.shutdown(timeout=WAIT)
    r = h.client.post(f"/memqueue/jobs/{job.id}/retry")
    assert r.status_code == 503 and "shut down" in r.get_json()["error"]


# == JSON: POST /jobs/purge ====================================================
def test_purge_forgets_finished_jobs_only(h: Harness) -> None:
    h.enqueue("ok", 1)
    h.enqueue("fail", 2)
    h.join()
    waiting = h.schedule("ok", 3)
    r = h.client.post("/memqueue/jobs/purge")
    assert r.status_code == 200 and r.get_json() == {"purged": 2}
    assert [j["id"] for j in h.client.get("/memqueue/jobs").get_json()["jobs"]] == [waiting.id]
    assert h.client.post("/memqueue/jobs/purge").get_json() == {"purged": 0}


# == JSON: access ==============================================================
JSON_ROUTES = [("GET", "/memqueue/jobs"), ("POST", "/memqueue/jobs/{id}/cancel"),
               ("POST", "/memqueue/jobs/{id}/retry"), ("POST", "/memqueue/jobs/purge")]


@pytest.mark.parametrize("method, path", JSON_ROUTES)
def test_json_routes_need_the_token(ht: Harness, method: str, path: str) -> None:
    job = ht.schedule("ok", 1)
    url = path.format(id=job.id)
    r = ht.client.open(url, method=method)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "MEMQUEUE_TOKEN" in r.get_json()["error"]
    assert ht.client.open(url, method=method, headers=bearer("wrong-token-wrong-token")).status_code == 401
    assert ht.client.open(url, method=method, headers=bearer()).status_code in (200, 202, 409)


@pytest.mark.parametrize("method, path", JSON_ROUTES)
def test_json_routes_are_off_in_production_without_token(make: Callable[..., Harness], method: str, path: str) -> None:
    hp = make(TESTING=False)
    r = hp.client.open(path.format(id="x-1"), method=method)
    assert r.status_code == 403
    assert "MEMQUEUE_TOKEN" in r.get_json()["error"]


@pytest.mark.parametrize("path", [p for m, p in JSON_ROUTES if m == "POST"])
@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
     {"Origin": "http://localhost", "Sec-Fetch-Site": "same-site"}],
)
def test_cross_site_posts_are_refused(h: Harness, path: str, headers: dict[str, str]) -> None:
    job = h.schedule("ok", 1)
    r = h.client.post(path.format(id=job.id), headers=headers)
    assert r.status_code == 403
    assert "cross-site" in r.get_json()["error"]
    assert job.status is JobStatus.SCHEDULED  # nothing happened


def test_same_origin_post_is_allowed(h: Harness) -> None:
    job = h.schedule("ok", 1)
    r = h.client.post(f"/memqueue/jobs/{job.id}/cancel",
                      headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200


def test_sign_in_cookie_authorizes_json_reads_but_posts_need_the_csrf_header(ht: Harness) -> None:
    job = ht.schedule("ok", 1)
    assert sign_in(ht.client).status_code == 303
    assert ht.client.get("/memqueue/jobs").status_code == 200
    r = ht.client.post(f"/memqueue/jobs/{job.id}/cancel")
    assert r.status_code == 403 and "CSRF" in r.get_json()["error"]
    r = ht.client.post(f"/memqueue/jobs/{job.id}/cancel", headers={"X-CSRF-Token": "wrong" * 10})
    assert r.status_code == 403
    assert job.status is JobStatus.SCHEDULED
    token = ht.client.get_cookie("memqueue_csrf", path="/memqueue")
    assert token is not None
    r = ht.client.post(f"/memqueue/jobs/{job.id}/cancel", headers={"X-CSRF-Token": token.value})
    assert r.status_code == 200 and status_of(job) is JobStatus.CANCELLED


# == the dashboard page ========================================================
def test_dashboard_renders_the_queue(h: Harness) -> None:
    h.enqueue("ok", 1)
    failed = h.enqueue("fail", 2)
    h.join()
    waiting = h.schedule("ok", 3)
    r = h.client.get("/memqueue/", headers=HTML)
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = text(r)
    assert "Consumer thread" in page and "Alive, waiting for jobs" in page
    assert f"memqueue-consumer[{h.app.name}]" in page
    assert re.search(r'data-f="depth">1<', page)
    assert re.search(r'data-count="failed">1<', page) and re.search(r'data-count="succeeded">1<', page)
    assert 'role="meter"' in page and '<svg class="chart"' in page
    assert f'data-id="{failed.id}"' in page and f'data-id="{waiting.id}"' in page
    assert "<caption" in page and 'scope="col"' in page
    assert "cdn" not in page.lower() and "https://" not in page  # nothing loaded from elsewhere


def test_dashboard_says_when_the_consumer_runs_a_job_and_when_it_is_gone(h: Harness) -> None:
    job = h.running_job()
    page = text(h.client.get("/memqueue/", headers=HTML))
    assert "Running a job" in page and f"{job.id}</a>" in page
    h.gate.set()
    h.join()
    with h.app.app_context():
        h.mq.shutdown(timeout=WAIT)
    page = text(h.client.get("/memqueue/", headers=HTML))
    assert 'class="state dead"' in page and "Shut down" in page


def test_dashboard_headers_forbid_foreign_scripts_and_framing(h: Harness) -> None:
    r = h.client.get("/memqueue/", headers=HTML)
    csp = r.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in text(r)
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    cookie = r.headers.getlist("Set-Cookie")
    assert any(c.startswith("memqueue_csrf=") and "HttpOnly" in c and "SameSite=Strict" in c for c in cookie)


@pytest.mark.parametrize("accept", [None, "application/json"])
def test_index_answers_json_to_clients_that_do_not_ask_for_html(h: Harness, accept: str | None) -> None:
    r = h.client.get("/memqueue/", headers={"Accept": accept} if accept else {})
    assert r.status_code == 200 and r.is_json
    assert "/memqueue/jobs" in r.get_json()["routes"]


def test_dashboard_filters_and_pages(h: Harness) -> None:
    jobs = [h.enqueue("ok", i) for i in range(30)]
    h.join()
    page1 = text(h.client.get("/memqueue/?status=succeeded", headers=HTML))
    assert len(ROW.findall(page1)) == 25 and "Older" in page1 and "Page 1 of 2" in page1
    page2 = text(h.client.get("/memqueue/?status=succeeded&page=2", headers=HTML))
    assert len(ROW.findall(page2)) == 5 and "Newer" in page2
    assert f'data-id="{jobs[0].id}"' in page2 and "26–30 of 30" in page2
    empty = text(h.client.get("/memqueue/?status=failed", headers=HTML))
    assert "No failed jobs here yet." in empty


@pytest.mark.parametrize("query", ["status=nope", "page=0", "page=x", "refresh=abc", "refresh=0.01"])
def test_dashboard_bad_query_is_400_page(h: Harness, query: str) -> None:
    r = h.client.get(f"/memqueue/?{query}", headers=HTML)
    assert r.status_code == 400 and r.mimetype == "text/html"


def test_dashboard_is_403_in_production_without_token(make: Callable[..., Harness]) -> None:
    hp = make(TESTING=False)
    r = hp.client.get("/memqueue/", headers=HTML)
    assert r.status_code == 403 and r.mimetype == "text/html"
    assert "MEMQUEUE_TOKEN" in text(r)


@pytest.mark.parametrize("accept", [None, "application/json", "application/json, text/html;q=0.5"])
def test_dashboard_url_refuses_an_api_client_in_json(make: Callable[..., Harness], accept: str | None) -> None:
    """``GET /memqueue/`` answers a client that does not ask for HTML in JSON (its list of
    routes), so its refusals are JSON too: a 403 page to an API client is not an answer."""
    hp = make(TESTING=False)
    r = hp.client.get("/memqueue/", headers={"Accept": accept} if accept else {})
    assert r.status_code == 403 and r.mimetype == "application/json"
    assert r.get_json()["status"] == 403 and "MEMQUEUE_TOKEN" in r.get_json()["error"]


@pytest.mark.parametrize("path", ["/memqueue/ui/jobs/nope", "/memqueue/ui/groups/nope",
                                  "/memqueue/ui/jobs/nope/workflow"])
def test_pages_answer_errors_in_json_to_a_client_that_asks_for_json(h: Harness, path: str) -> None:
    """A page's error is a page for a browser (and ``*/*``), JSON for a client preferring JSON."""
    r = h.client.get(path, headers={"Accept": "application/json"})
    assert r.status_code in (400, 404) and r.mimetype == "application/json"
    assert r.get_json()["status"] == r.status_code and r.get_json()["error"]
    for accept in (HTML["Accept"], "*/*"):
        r = h.client.get(path, headers={"Accept": accept})
        assert r.status_code in (400, 404) and r.mimetype == "text/html"


def test_job_page_shows_arguments_result_error_and_traceback(h: Harness) -> None:
    ok = h.enqueue("ok", {"user": 7})
    failed = h.enqueue("fail", "boom")
    h.join()
    page = text(h.client.get(f"/memqueue/ui/jobs/{ok.id}", headers=HTML))
    assert "&#34;user&#34;: 7" in page and "&#34;echo&#34;" in page and "50% · half way" in page
    page = text(h.client.get(f"/memqueue/ui/jobs/{failed.id}", headers=HTML))
    assert "ValueError: bad value: boom" in page and "Traceback (most recent call last)" in page
    assert "Retry this job" in page


def test_job_page_cuts_huge_arguments(h: Harness) -> None:
    job = h.schedule("ok", "x" * 100_000)
    page = text(h.client.get(f"/memqueue/ui/jobs/{job.id}", headers=HTML))
    assert len(page) < 60_000 and "more characters" in page


def test_job_page_of_unknown_job_is_404_page(h: Harness) -> None:
    r = h.client.get("/memqueue/ui/jobs/nope-1", headers=HTML)
    assert r.status_code == 404 and r.mimetype == "text/html" and "nope-1" in text(r)


def test_script_in_job_data_is_escaped_everywhere(h: Harness) -> None:
    evil = "<script>window.__pwned=1</script>"
    job = h.enqueue("fail", evil)
    h.join()
    for url in ("/memqueue/", f"/memqueue/ui/jobs/{job.id}"):
        page = text(h.client.get(url, headers=HTML))
        assert "<script>window.__pwned" not in page
    page = text(h.client.get(f"/memqueue/ui/jobs/{job.id}", headers=HTML))
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page


# == the dashboard's forms =====================================================
def test_cancel_form_redirects_with_a_notice(h: Harness) -> None:
    job = h.schedule("ok", 1)
    token = csrf_of(h.client)
    r = h.client.post(f"/memqueue/ui/jobs/{job.id}/cancel",
                      data={"csrf_token": token, "next": "/memqueue/?status=scheduled"})
    assert r.status_code == 303 and r.headers["Location"] == "/memqueue/?status=scheduled"
    assert job.status is JobStatus.CANCELLED
    page = text(h.client.get(r.headers["Location"], headers=HTML))
    assert f"Cancelled job {job.id}" in page and 'role="status"' in page
    assert f"Cancelled job {job.id}" not in text(h.client.get("/memqueue/", headers=HTML))  # shown once


def test_cancel_form_on_a_running_job_says_why_not(h: Harness) -> None:
    job = h.running_job()
    r = h.client.post(f"/memqueue/ui/jobs/{job.id}/cancel", data={"csrf_token": csrf_of(h.client)})
    assert r.status_code == 303
    assert "only a waiting job can be cancelled" in text(h.client.get("/memqueue/", headers=HTML))
    r = h.client.post("/memqueue/ui/jobs/nope-1/cancel", data={"csrf_token": csrf_of(h.client)})
    assert r.status_code == 303
    assert "nope-1 is not known here" in text(h.client.get("/memqueue/", headers=HTML))


def test_retry_form_queues_a_failed_job_again(h: Harness) -> None:
    job = h.enqueue("flaky")
    h.join()
    h.failing["on"] = False
    r = h.client.post(f"/memqueue/ui/jobs/{job.id}/retry", data={"csrf_token": csrf_of(h.client)})
    assert r.status_code == 303
    h.join()
    assert job.status is JobStatus.SUCCEEDED
    assert "is queued again" in text(h.client.get("/memqueue/", headers=HTML))
    h.client.post(f"/memqueue/ui/jobs/{job.id}/retry", data={"csrf_token": csrf_of(h.client)})
    assert "only a failed or cancelled job can be retried" in text(h.client.get("/memqueue/", headers=HTML))


def test_purge_form(h: Harness) -> None:
    h.enqueue("ok", 1)
    h.enqueue("ok", 2)
    h.join()
    r = h.client.post("/memqueue/ui/purge", data={"csrf_token": csrf_of(h.client)})
    assert r.status_code == 303
    assert "Purged 2 finished jobs." in text(h.client.get("/memqueue/", headers=HTML))


@pytest.mark.parametrize("action", ["cancel", "retry", "purge"])
@pytest.mark.parametrize("how", ["missing", "wrong", "no-cookie", "cross-origin"])
def test_forms_refuse_a_missing_or_wrong_csrf_token(h: Harness, action: str, how: str) -> None:
    job = h.schedule("ok", 1)
    url = "/memqueue/ui/purge" if action == "purge" else f"/memqueue/ui/jobs/{job.id}/{action}"
    token = csrf_of(h.client)
    data: dict[str, str] = {"csrf_token": token}
    headers: dict[str, str] = {}
    if how == "missing":
        data = {}
    elif how == "wrong":
        data = {"csrf_token": "x" * len(token)}
    elif how == "no-cookie":
        h.client.delete_cookie("memqueue_csrf", path="/memqueue")
    else:
        headers = {"Origin": "https://evil.example"}
    r = h.client.post(url, data=data, headers=headers)
    assert r.status_code == 403 and r.mimetype == "text/html"
    assert ("cross-site" if how == "cross-origin" else "security token") in text(r)
    assert job.status is JobStatus.SCHEDULED


def test_next_never_leaves_the_dashboard(h: Harness) -> None:
    token = csrf_of(h.client)
    for target in ("https://evil.example/", "//evil.example/", "/elsewhere", "/memqueue//evil.example"):
        r = h.client.post("/memqueue/ui/purge", data={"csrf_token": token, "next": target})
        assert r.headers["Location"] == "/memqueue/"


# == signing in ================================================================
def test_with_a_token_the_dashboard_asks_to_sign_in(ht: Harness) -> None:
    r = ht.client.get("/memqueue/", headers=HTML)
    assert r.status_code == 401 and r.mimetype == "text/html"
    page = text(r)
    assert 'type="password"' in page and '<label for="token">' in page
    assert ht.client.get("/memqueue/ui/jobs/x-1", headers=HTML).status_code == 401


@pytest.mark.parametrize("path", ["/memqueue/ui/jobs/x-1/cancel", "/memqueue/ui/jobs/x-1/retry", "/memqueue/ui/purge",
                                  "/memqueue/ui/sign-out"])
def test_with_a_token_the_forms_refuse_a_browser_that_did_not_sign_in(ht: Harness, path: str) -> None:
    token = csrf_of(ht.client)
    r = ht.client.post(path, data={"csrf_token": token})
    assert r.status_code == 401 and 'type="password"' in text(r)


def test_sign_in_from_another_site_is_refused(ht: Harness) -> None:
    token = csrf_of(ht.client)
    r = ht.client.post("/memqueue/ui/sign-in", data={"token": TOKEN, "csrf_token": token},
                       headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert ht.client.get_cookie("memqueue_session", path="/memqueue") is None


def test_a_signed_in_browser_posts_forms_with_the_csrf_token(ht: Harness) -> None:
    job = ht.schedule("ok", 1)
    sign_in(ht.client)
    token = ht.client.get_cookie("memqueue_csrf", path="/memqueue")
    assert token is not None
    assert ht.client.post(f"/memqueue/ui/jobs/{job.id}/cancel").status_code == 403
    assert job.status is JobStatus.SCHEDULED
    r = ht.client.post(f"/memqueue/ui/jobs/{job.id}/cancel", data={"csrf_token": token.value})
    assert r.status_code == 303 and status_of(job) is JobStatus.CANCELLED


def test_sign_in_with_a_wrong_token_is_refused(ht: Harness) -> None:
    r = sign_in(ht.client, "not-the-token-not-the-token")
    assert r.status_code == 401 and "not this app&#39;s MEMQUEUE_TOKEN" in text(r)
    assert ht.client.get_cookie("memqueue_session", path="/memqueue") is None
    assert ht.client.get("/memqueue/", headers=HTML).status_code == 401


def test_sign_in_sets_a_signed_cookie_that_opens_the_dashboard(ht: Harness) -> None:
    r = sign_in(ht.client)
    assert r.status_code == 303 and r.headers["Location"] == "/memqueue/"
    set_cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("memqueue_session="))
    assert "HttpOnly" in set_cookie and "Path=/memqueue" in set_cookie and "SameSite=Lax" in set_cookie
    assert TOKEN not in set_cookie
    r = ht.client.get("/memqueue/", headers=HTML)
    assert r.status_code == 200 and "Sign out" in text(r)
    assert ht.client.get("/memqueue/ui/sign-in", headers=HTML).status_code == 303  # already in


def test_sign_in_form_needs_its_csrf_token(ht: Harness) -> None:
    ht.client.get("/memqueue/ui/sign-in", headers=HTML)
    r = ht.client.post("/memqueue/ui/sign-in", data={"token": TOKEN})
    assert r.status_code == 403
    assert ht.client.get_cookie("memqueue_session", path="/memqueue") is None


def test_a_tampered_cookie_is_refused(ht: Harness) -> None:
    sign_in(ht.client)
    cookie = ht.client.get_cookie("memqueue_session", path="/memqueue")
    assert cookie is not None
    ht.client.set_cookie("memqueue_session", cookie.value[:-2] + "xx", path="/memqueue")
    assert ht.client.get("/memqueue/", headers=HTML).status_code == 401


def test_a_new_token_signs_everyone_out(make: Callable[..., Harness]) -> None:
    first = make(TESTING=False, MEMQUEUE_TOKEN=TOKEN, SECRET_KEY=SECRET)
    sign_in(first.client)
    cookie = first.client.get_cookie("memqueue_session", path="/memqueue")
    assert cookie is not None
    rotated = make(TESTING=False, MEMQUEUE_TOKEN=TOKEN + "-rotated", SECRET_KEY=SECRET)
    rotated.client.set_cookie("memqueue_session", cookie.value, path="/memqueue")
    assert rotated.client.get("/memqueue/", headers=HTML).status_code == 401


def test_sign_out_forgets_the_cookie(ht: Harness) -> None:
    sign_in(ht.client)
    token = ht.client.get_cookie("memqueue_csrf", path="/memqueue")
    assert token is not None
    r = ht.client.post("/memqueue/ui/sign-out", data={"csrf_token": token.value})
    assert r.status_code == 303
    assert ht.client.get("/memqueue/", headers=HTML).status_code == 401


def test_sign_in_without_secret_key_fails_with_a_clear_message(make: Callable[..., Harness]) -> None:
    hn = make(TESTING=False, MEMQUEUE_TOKEN=TOKEN)
    r = hn.client.get("/memqueue/", headers=HTML)
    assert r.status_code == 401 and "SECRET_KEY" in text(r)
    cookie = hn.client.get_cookie("memqueue_csrf", path="/memqueue")
    assert cookie is not None
    r = hn.client.post("/memqueue/ui/sign-in", data={"token": TOKEN, "csrf_token": cookie.value})
    assert r.status_code == 500 and "SECRET_KEY" in text(r)
    assert hn.client.get("/memqueue/jobs", headers=bearer()).status_code == 200  # the API still works


def test_without_a_token_there_is_nothing_to_sign_in_to(h: Harness) -> None:
    r = h.client.get("/memqueue/ui/sign-in", headers=HTML)
    assert r.status_code == 303 and r.headers["Location"] == "/memqueue/"


# -- queues (issue 11) -----------------------------------------------------------------------------
def test_the_dashboard_shows_a_row_per_queue_and_filters_by_queue(make: Callable[..., Harness]) -> None:
    h = make(MEMQUEUE_QUEUES={"emails": 2, "reports": 0})
    with h.app.app_context():
        waiting = h.mq.options(queue="reports", priority=7).enqueue(h.tasks["ok"], "r")
        done = h.mq.options(queue="emails").enqueue(h.tasks["ok"], "e")
        assert done.wait(WAIT) == {"echo": "e"}
    page = h.client.get("/memqueue/", headers=HTML)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for name in ("default", "emails", "reports"):
        assert f'<tr role="row" data-queue="{name}">' in text
    assert re.search(r'data-queue="emails">.*?data-q="threads">2 / 2<', text, re.S)
    assert re.search(r'data-queue="reports">.*?data-q="threads">0 / 0<.*?data-q="queued">1<', text, re.S)
    only = h.client.get("/memqueue/?queue=reports", headers=HTML).get_data(as_text=True)
    assert len(ROW.findall(only)) == 1 and waiting.id in only and done.id not in only
    assert "reports · priority 7" in only and "jobs of queue reports" in only
    bad = h.client.get("/memqueue/?queue=no%20such", headers=HTML)
    assert bad.status_code == 400 and "queue name" in bad.get_data(as_text=True)
