"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

The example app is served on 127.0.0.1 (a free port, read back from the
server) by Werkzeug in a thread of this process; the tests enqueue through
the HTTP API and watch the page follow. Jobs that must be caught mid-way
wait on events the test sets, and every wait on the page is Playwright's
auto-waiting ``expect`` with a deadline: no sleeps.

Screenshots (desktop 1280 and phone 390 wide, light and dark) are written
to ``test-artifacts/dashboard/`` (git-ignored).

Skipped, with the reason, when Playwright or /usr/bin/chromium is missing
(``scripts/test.sh`` installs both where it can); under CI that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.servers import unavailable

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    unavailable("playwright is not installed (pip install playwright; it is in the test extras)", module=True)
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):  # pragma: no cover
    unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", module=True)

from flask import Flask  # noqa: E402
from werkzeug.serving import BaseWSGIServer, make_server  # noqa: E402

from example_app import create_app  # noqa: E402
from example_app.tasks import mq  # noqa: E402
from flask_memqueue import JobStatus, current_job  # noqa: E402

HOST = "127.0.0.1"
WAIT = 10.0  # seconds: the longest any one wait in these tests may take
#: Seconds a gated job waits for its gate at most: it must outlast a whole test
#: (the screenshot test photographs it for a while); teardown opens every gate.
GATE_WAIT = 120.0
TOKEN = "browser-test-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
EVIL = "<script>window.__pwned=1</script>"
EVIL_IMG = "<img src=x onerror=\"window.__pwned=2\">"

expect.set_options(timeout=WAIT * 1000)


# -- test-only message handlers on the example's queue ------------------------------
@dataclass
class Control:
    """What the handlers below do in the current test (reset for every test)."""

    gates: list[threading.Event] = field(default_factory=lambda: [threading.Event() for _ in range(3)])
    failing: bool = True

    def release(self) -> None:
        for gate in self.gates:
            gate.set()


CONTROL = Control()
STEPS, FLAKY, ECHO, FAIL = (f"dashboard-test:{name}" for name in ("steps", "flaky", "echo", "fail"))


@mq.handler(STEPS)
def _steps(message: Any) -> str:
    """Reports 25%, 50%, 75%, each time waiting for the test to open the next gate."""
    for number, gate in enumerate(CONTROL.gates, 1):
        current_job.set_progress(number / 4, f"step {number} of 3")
        if not gate.wait(GATE_WAIT):
            raise TimeoutError(f"gate {number} was never opened")
    return f"done: {message}"


@mq.handler(FLAKY)
def _flaky(message: Any) -> str:
    if CONTROL.failing:
        raise ConnectionError("the mail server did not answer")
    return "delivered"


@mq.handler(ECHO)
def _echo(message: Any) -> Any:
    return message


@mq.handler(FAIL)
def _fail(message: Any) -> None:
    raise ValueError(f"cannot handle {message}")


POLITE = "dashboard-test:polite"


@mq.handler(POLITE)
def _polite(message: Any) -> str:
    """Runs until an abort is asked of it (``current_job.abort_requested``), then returns."""
    for _ in range(int(GATE_WAIT / 0.01)):
        if current_job.abort_requested:
            return "stopped when asked"
        if CONTROL.gates[0].wait(0.01):  # teardown: never asked
            break
    return "never asked"


SLOW = "dashboard-test:slow"


@mq.handler(SLOW, queue="slow", priority=5)
def _slow(message: Any) -> Any:
    return message


LIMITED = "dashboard-test.limited"


@mq.task(name=LIMITED, concurrency=1, concurrency_key="customer")
def _limited(customer: str) -> str:
    """One job per customer at a time; each waits for the first gate."""
    if not CONTROL.gates[0].wait(GATE_WAIT):
        raise TimeoutError("gate 1 was never opened")
    return customer


# -- server, browser, page -----------------------------------------------------------------
@dataclass
class Served:
    app: Flask
    server: BaseWSGIServer
    url: str

    def produce(self, message: Any, topic: str, token: str | None = None) -> str:
        """Enqueue through the HTTP API, as any client would; returns the job id."""
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps({"message": message, "topic": topic}).encode()
        req = urllib.request.Request(self.url + "/memqueue/produce", body, headers, method="POST")
        with urllib.request.urlopen(req, timeout=WAIT) as response:  # loopback only
            assert response.status == 202
            return str(json.load(response)["id"])

    def dashboard(self, query: str = "refresh=0.3") -> str:
        return f"{self.url}/memqueue/?{query}"


def _serve(config: dict[str, Any]) -> Iterator[Served]:
    global CONTROL
    CONTROL = Control()
    app = create_app({"TESTING": True, **config})
    server = make_server(HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test-server", daemon=True)
    thread.start()
    try:
        yield Served(app, server, f"http://{HOST}:{server.server_port}")
    finally:
        CONTROL.release()
        server.shutdown()
        thread.join(WAIT)
        server.server_close()
        queue = app.extensions["memqueue"]
        for status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
            for job in queue.storage.jobs(status, 10_000, 0):
                job.cancel()
        queue.shutdown(wait=True, timeout=WAIT)


@pytest.fixture
def served() -> Iterator[Served]:
    """The example app (testing, no token) on a free loopback port."""
    yield from _serve({})


@pytest.fixture
def served_with_token() -> Iterator[Served]:
    """The example app as in production: a MEMQUEUE_TOKEN and a SECRET_KEY, not testing."""
    yield from _serve({"TESTING": False, "MEMQUEUE_TOKEN": TOKEN, "SECRET_KEY": "browser-tests-secret"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def _context(browser: Browser, **options: Any) -> BrowserContext:
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
    context.set_default_timeout(WAIT * 1000)
    return context


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page; any script dialog fails the test."""
    context = _context(browser)
    pg = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert dialogs == [], f"a script opened a dialog: {dialogs}"
    assert errors == [], f"the page's script raised: {errors}"


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'#rows tr[data-id="{job_id}"]')


# -- the tests ---------------------------------------------------------------------------
def test_consumer_alive_and_a_job_progresses_live(page: Page, served: Served) -> None:
    page.goto(served.dashboard())
    expect(page.locator('[data-f="state"]')).to_have_text("Alive, waiting for jobs")
    expect(page.locator('[data-f="name"]')).to_have_text(f"memqueue-consumer[{served.app.name}]")
    expect(page.locator("#live")).to_contain_text("Live")

    job_id = served.produce("monthly report", STEPS)
    job_row = row(page, job_id)
    expect(job_row).to_be_visible()  # the script added the row: no reload
    expect(job_row.locator('[data-c="status"]')).to_have_text("running")
    expect(job_row.locator('[data-c="progtext"]')).to_have_text("25% · step 1 of 3")
    expect(page.locator('[data-f="state"]')).to_have_text("Running a job")
    expect(page.locator('[data-f="current"]')).to_contain_text(job_id)
    for number, percent in ((1, 50), (2, 75)):
        CONTROL.gates[number - 1].set()
        expect(job_row.locator('[data-c="progtext"]')).to_have_text(f"{percent}% · step {number + 1} of 3")
        expect(job_row.locator("progress")).to_have_js_property("value", percent / 100)
    CONTROL.gates[2].set()
    expect(job_row.locator('[data-c="status"]')).to_have_text("succeeded")
    expect(page.locator('[data-f="state"]')).to_have_text("Alive, waiting for jobs")
    expect(page.locator('[data-count="succeeded"]').first).to_have_text("1")


def test_job_page_follows_a_running_job(page: Page, served: Served) -> None:
    job_id = served.produce("one report", STEPS)
    page.goto(f"{served.url}/memqueue/ui/jobs/{job_id}?refresh=0.3")
    expect(page.locator("#job-progress-text")).to_have_text("25% · step 1 of 3")
    CONTROL.gates[0].set()
    expect(page.locator("#job-progress-text")).to_have_text("50% · step 2 of 3")
    CONTROL.release()
    expect(page.locator(".head .pill")).to_have_text("succeeded")  # the page reloaded itself
    expect(page.get_by_role("heading", name="Result")).to_be_visible()


def test_a_failed_job_is_retried_from_the_dashboard(page: Page, served: Served) -> None:
    job_id = served.produce("to: a@b.c", FLAKY)
    page.goto(served.dashboard())
    job_row = row(page, job_id)
    expect(job_row.locator('[data-c="status"]')).to_have_text("failed")
    expect(page.locator('[data-count="failed"]').first).to_have_text("1")
    CONTROL.failing = False
    job_row.get_by_role("button", name=f"Retry job {job_id}").click()
    expect(page.locator(".notice.ok")).to_contain_text(f"Job {job_id}")
    expect(page.locator(".notice.ok")).to_contain_text("is queued again")
    expect(row(page, job_id).locator('[data-c="status"]')).to_have_text("succeeded")
    page.get_by_role("link", name=job_id).click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible()
    expect(page.locator("pre").nth(1)).to_have_text('"delivered"')


def test_a_waiting_job_is_cancelled_from_the_dashboard(page: Page, served: Served) -> None:
    blocker = served.produce("blocks the consumer", STEPS)
    waiting = served.produce("waits behind it", ECHO)
    page.goto(served.dashboard())
    expect(row(page, blocker).locator('[data-c="status"]')).to_have_text("running")
    expect(row(page, waiting).locator('[data-c="status"]')).to_have_text("queued")
    expect(row(page, blocker).get_by_role("button", name=f"Cancel job {blocker}")).to_be_hidden()
    row(page, waiting).get_by_role("button", name=f"Cancel job {waiting}").click()
    expect(page.locator(".notice.ok")).to_have_text(f"Cancelled job {waiting} (message:{ECHO}).")
    expect(row(page, waiting).locator('[data-c="status"]')).to_have_text("cancelled")
    CONTROL.release()
    expect(row(page, blocker).locator('[data-c="status"]')).to_have_text("succeeded")
    expect(row(page, waiting).locator('[data-c="status"]')).to_have_text("cancelled")


def test_a_running_job_is_aborted_from_its_page(page: Page, served: Served) -> None:
    job_id = served.produce("runs until asked", POLITE)
    page.goto(f"{served.url}/memqueue/ui/jobs/{job_id}?refresh=0.3")
    expect(page.locator(".head .pill")).to_have_text("running")
    expect(page.get_by_role("button", name="Cancel this job")).to_have_count(0)
    page.get_by_role("button", name="Abort this job").click()
    expect(page.locator(".notice.ok")).to_contain_text(f"Job {job_id} (message:{POLITE})")
    expect(page.locator(".head .pill")).to_have_text("aborted")  # the job saw the request and returned
    expect(page.get_by_role("heading", name="Who aborted it")).to_be_visible()
    expect(page.locator(".error-line")).to_contain_text("aborted by the dashboard (127.0.0.1) at ")
    expect(page.get_by_role("button", name="Abort this job")).to_have_count(0)
    job = served.app.extensions["memqueue"].get_job(job_id)
    assert job is not None and job.status is JobStatus.ABORTED and job.result is None


def test_sign_in_with_the_token_and_be_refused_without_it(browser: Browser, served_with_token: Served) -> None:
    served = served_with_token
    context = _context(browser)
    try:
        page = context.new_page()
        page.goto(served.dashboard())
        expect(page.get_by_role("heading", name="Sign in to the queue")).to_be_visible()
        api = page.request.get(served.url + "/memqueue/stats")
        assert api.status == 401  # no cookie yet, no Bearer header
        page.get_by_label("Token").fill("not-the-token-at-all-no")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#signin-error")).to_have_text("That is not this app's MEMQUEUE_TOKEN.")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator('[data-f="state"]')).to_have_text("Alive, waiting for jobs")
        assert page.url == served.dashboard()  # back where the sign-in started
        assert page.request.get(served.url + "/memqueue/stats").status == 200  # the cookie works for the API
        job_id = served.produce("hello", ECHO, token=TOKEN)  # API clients keep the Bearer header
        expect(row(page, job_id).locator('[data-c="status"]')).to_have_text("succeeded")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in to the queue")).to_be_visible()
    finally:
        context.close()
    stranger = _context(browser)  # another browser: no cookie, refused
    try:
        page = stranger.new_page()
        response = page.goto(served.dashboard())
        assert response is not None and response.status == 401
        expect(page.get_by_role("heading", name="Sign in to the queue")).to_be_visible()
        expect(page.locator("#rows")).to_have_count(0)
    finally:
        stranger.close()


def test_script_in_job_data_shows_as_text_and_never_runs(page: Page, served: Served) -> None:
    before = served.produce(EVIL, FAIL)  # rendered by the server
    page.goto(served.dashboard())
    expect(row(page, before).locator('[data-c="status"]')).to_have_text("failed")
    after = served.produce(EVIL_IMG, ECHO)  # rendered by the page's script
    expect(row(page, after).locator('[data-c="status"]')).to_have_text("succeeded")
    page.goto(f"{served.url}/memqueue/ui/jobs/{before}")
    expect(page.locator(".error-line")).to_have_text(f"ValueError: cannot handle {EVIL}")
    expect(page.locator("pre").first).to_contain_text(EVIL)
    page.goto(f"{served.url}/memqueue/ui/jobs/{after}")
    expect(page.locator("pre").nth(1)).to_contain_text("<img src=x onerror=")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0


def test_everything_works_with_javascript_off(browser: Browser, served: Served) -> None:
    context = _context(browser, java_script_enabled=False)
    try:
        page = context.new_page()
        blocker = served.produce("blocks", STEPS)
        waiting = served.produce("waits", ECHO)
        page.goto(served.dashboard(""))
        expect(page.locator("#live")).to_contain_text("reload for fresh data")
        expect(row(page, blocker).locator('[data-c="progtext"]')).to_have_text("25% · step 1 of 3")
        row(page, waiting).get_by_role("button", name=f"Cancel job {waiting}").click()
        expect(page.locator(".notice.ok")).to_contain_text(f"Cancelled job {waiting}")
        expect(row(page, waiting).locator('[data-c="status"]')).to_have_text("cancelled")
        page.get_by_role("link", name="failed").first.click()
        expect(page.locator("#empty")).to_have_text("No failed jobs here yet.")
    finally:
        context.close()


def test_screenshots(browser: Browser, served: Served) -> None:
    """A realistic mix of jobs, photographed at desktop and phone widths, light and dark."""
    for n in range(9):
        served.produce({"order": 1000 + n}, ECHO)
    failed = served.produce("row 17: 2026-02-30", FAIL)
    with served.app.app_context():
        assert mq.join(WAIT)
    running = served.produce("quarterly report", STEPS)
    queued = [served.produce({"order": 2000 + n}, ECHO) for n in range(3)]
    with served.app.app_context():
        scheduled = mq.enqueue_in(600, f"message:{ECHO}", {"reminder": "tomorrow"})
        later = mq.enqueue_in(900, f"message:{ECHO}", {"reminder": "next week"})
    assert later.cancel()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for label, width, height in (("desktop", 1280, 900), ("phone", 390, 844)):
            context = _context(browser, viewport={"width": width, "height": height}, color_scheme=scheme,
                               device_scale_factor=1)
            try:
                page = context.new_page()
                page.goto(served.dashboard("refresh=1"))
                expect(row(page, running).locator('[data-c="progtext"]')).to_have_text("25% · step 1 of 3")
                expect(row(page, queued[0]).locator('[data-c="status"]')).to_have_text("queued")
                expect(row(page, scheduled.id).locator('[data-c="status"]')).to_have_text("scheduled")
                expect(page.locator("#live")).to_contain_text("Live")
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{label}-{scheme}.png"), full_page=True)
                page.goto(f"{served.url}/memqueue/ui/jobs/{failed}")
                expect(page.locator(".error-line")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / f"job-{label}-{scheme}.png"), full_page=True)
                page.goto(f"{served.url}/memqueue/?status=nope")
                expect(page.locator("#error-message")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / f"error-{label}-{scheme}.png"))
            finally:
                context.close()
    for name in ("dashboard-desktop-light", "dashboard-phone-dark", "job-desktop-dark", "job-phone-light"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000


def test_sign_in_screenshot(browser: Browser, served_with_token: Served) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, width, height in (("desktop", 1280, 800), ("phone", 390, 844)):
        context = _context(browser, viewport={"width": width, "height": height}, color_scheme="dark")
        try:
            page = context.new_page()
            page.goto(served_with_token.dashboard())
            expect(page.get_by_label("Token")).to_be_focused()
            page.screenshot(path=str(ARTIFACTS / f"sign-in-{label}-dark.png"))
        finally:
            context.close()


def test_queues_show_live_and_filter_the_jobs(page: Page) -> None:
    with contextlib.contextmanager(_serve)({"MEMQUEUE_QUEUES": {"slow": 2}}) as served:
        page.goto(served.dashboard())
        slow_row = page.locator('#queues tr[data-queue="slow"]')
        expect(slow_row.locator('[data-q="threads"]')).to_have_text("2 / 2")
        slow_job = served.produce("to the slow queue", SLOW)
        default_job = served.produce("to the default queue", ECHO)
        expect(row(page, slow_job).locator('[data-c="queue"]')).to_have_text("slow · priority 5")
        expect(row(page, slow_job).locator('[data-c="status"]')).to_have_text("succeeded")
        expect(row(page, default_job).locator('[data-c="queue"]')).to_have_text("")
        page.get_by_role("navigation", name="Show jobs by queue").get_by_role("link", name="slow").click()
        expect(row(page, slow_job)).to_be_visible()
        expect(row(page, default_job)).to_have_count(0)
        expect(page.locator("#jobs-caption")).to_contain_text("jobs of queue slow")


@pytest.fixture
def served_big() -> Iterator[Served]:
    """As ``served_with_token``, keeping up to 5,000 finished jobs (a bulk action over 1,000)."""
    yield from _serve({"TESTING": False, "MEMQUEUE_TOKEN": TOKEN, "SECRET_KEY": "browser-tests-secret",
                       "MEMQUEUE_MAX_FINISHED": 5_000})


def test_bulk_retry_of_1000_failed_jobs_matching_a_search(browser: Browser, served_big: Served) -> None:
    """Sign in (token), search, "Retry all", a confirmation that says how many, then every match runs again."""
    served = served_big
    queue = served.app.extensions["memqueue"]
    with served.app.app_context():
        for i in range(1000):
            mq.produce(f"bulk-{i}", FLAKY)
        for i in range(5):
            mq.produce(f"other-{i}", FLAKY)
    assert queue.join(WAIT * 6)
    assert queue.storage.counts()["failed"] == 1005
    context = _context(browser)
    try:
        page = context.new_page()
        page.goto(served.dashboard("refresh=0"))
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="failed").first.click()
        page.get_by_label("Text").fill("bulk-")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#act-on-matches")).to_contain_text("All 1000 matching")
        CONTROL.failing = False  # the retried jobs succeed now
        page.get_by_role("button", name="Retry all").click()
        expect(page.get_by_role("heading", name="Retry 1,000 jobs?")).to_be_visible()
        expect(page.locator("#confirm-message")).to_contain_text("q=bulk-")
        page.get_by_role("button", name="Yes, retry 1,000 jobs").click()
        expect(page.locator(".notice.ok")).to_contain_text("1000 jobs queued again")
    finally:
        context.close()
    assert queue.join(WAIT * 6)
    counts = queue.storage.counts()
    assert counts["succeeded"] == 1000 and counts["failed"] == 5  # the other five did not match


def test_a_queue_is_paused_and_resumed_from_its_row(page: Page, served: Served) -> None:
    page.goto(served.dashboard("refresh=0"))
    queue_row = page.locator('#queues tr[data-queue="default"]')
    queue_row.get_by_role("button", name="Pause").click()
    expect(page.locator(".notice.ok")).to_contain_text("Queue default is paused")
    expect(page.locator('#queues tr[data-queue="default"] [data-q="state"]')).to_contain_text("paused")
    job_id = served.produce("while paused", ECHO)
    queue = served.app.extensions["memqueue"]
    assert queue.storage.get(job_id).status == "queued"  # type: ignore[union-attr]
    page.locator('#queues tr[data-queue="default"]').get_by_role("button", name="Resume").click()
    expect(page.locator(".notice.ok")).to_contain_text("Queue default runs again")
    assert queue.storage.get(job_id).wait(WAIT) == "while paused"  # type: ignore[union-attr]


# -- workflows (issue 21): a chord's page, its links, and the group filter -----------------------
@mq.task(name="dashboard-test.add")
def _add(x: int, y: int = 0) -> int:
    return x + y


@mq.task(name="dashboard-test.gated")
def _gated(x: int) -> int:
    if not CONTROL.gates[0].wait(GATE_WAIT):
        raise TimeoutError("the gate was never opened")
    return x


@mq.task(name="dashboard-test.total")
def _total(values: list[int]) -> int:
    return sum(values)


def test_a_chord_is_shown_as_a_workflow_linked_and_filtered_by_group(page: Page, served: Served) -> None:
    with served.app.app_context():
        callback = mq.chord(mq.group(_add.s(1), _add.s(2), _gated.s(3)), _total.s()).delay()
        members = [mq.get_job(i) for i in callback.to_dict()["depends_on"]]
    assert all(m is not None for m in members) and len(members) == 3
    group_id = members[0].to_dict()["group"]  # type: ignore[union-attr]
    gated = members[2].id  # type: ignore[union-attr]
    # The callback's page: deferred (cancellable), its parents linked, and the way to the whole workflow.
    page.goto(f"{served.url}/memqueue/ui/jobs/{callback.id}?refresh=0")
    expect(page.locator(".head .pill")).to_have_text("deferred")
    expect(page.get_by_role("button", name="Cancel this job")).to_be_visible()
    parents = page.locator('#job-workflow a[data-rel="parent"]')
    expect(parents).to_have_text([m.id for m in members])  # type: ignore[union-attr]
    page.locator("#workflow-link").click()
    # The workflow page: the members first, then the callback, each with its state, while one member runs.
    rows = page.locator("#workflow-jobs tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.last).to_have_attribute("data-id", callback.id)
    expect(page.locator(f'#workflow-jobs tr[data-id="{callback.id}"] .pill')).to_have_text("deferred")
    expect(page.locator(f'#workflow-jobs tr[data-id="{gated}"] .pill')).to_have_text("running")
    expect(page.locator(f'#workflow-jobs tr[data-id="{gated}"] a[data-rel="dependent"]')).to_have_text(callback.id)
    CONTROL.gates[0].set()
    assert callback.wait(WAIT) == 6
    page.reload()
    expect(page.locator(f'#workflow-jobs tr[data-id="{callback.id}"] .pill')).to_have_text("succeeded")
    # A member's page links its dependent and its group; the group page shows its status and members.
    page.locator(f'#workflow-jobs tr[data-id="{gated}"] th a').click()
    expect(page.locator('#job-workflow a[data-rel="dependent"]')).to_have_text(callback.id)
    page.locator('#job-workflow a[data-rel="group"]').click()
    expect(page.locator("#group-status")).to_have_text("succeeded")
    expect(page.locator("#workflow-jobs tbody tr")).to_have_count(4)  # the members and what waits on them
    # The group filter of the jobs list, combined with the task search: the gated member only.
    page.locator("#group-filter").click()
    for member in members:
        expect(row(page, member.id)).to_be_visible()  # type: ignore[union-attr]
    expect(row(page, callback.id)).to_have_count(0)
    expect(row(page, gated).locator('[data-c="workflow"]')).to_be_visible()
    expect(page.locator("#act-on-matches")).to_have_count(0)  # bulk actions take no group
    page.get_by_label("Task").fill("dashboard-test.gated")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_label("Group")).to_have_value(group_id)
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, gated)).to_be_visible()
    row(page, gated).locator('[data-c="workflow"]').click()
    expect(page.locator("#workflow-jobs tbody tr")).to_have_count(4)


def test_the_limits_panel_shows_a_full_slot_and_the_jobs_waiting_on_it(page: Page, served: Served) -> None:
    with served.app.app_context():
        jobs = [_limited.delay("acme") for _ in range(3)]
    page.goto(served.dashboard("refresh=0"))
    limit_row = page.locator(f'#limits-table tr[data-limit="concurrency:{LIMITED}:acme"]')
    expect(limit_row).to_have_count(1)
    for _ in range(int(WAIT / 0.1)):  # the first job takes the one slot: reload until it shows
        if limit_row.locator('[data-l="in_use"]').inner_text().startswith("1 /"):
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(limit_row.locator('[data-l="in_use"]')).to_have_text("1 / 1")
    expect(limit_row.locator('[data-l="waiting"]')).to_have_text("2")
    expect(limit_row.locator("th")).to_have_text(LIMITED)
    CONTROL.gates[0].set()
    for job in jobs:
        assert job.wait(WAIT) == "acme"
    page.reload()
    expect(page.locator("#limits")).to_have_count(0)  # no limit in use: no panel
