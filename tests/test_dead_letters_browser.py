"""The dashboard's dead-letters page in a real headless Chromium, against a real rabbitmq-server.

An app whose handler fails for good on some messages is served on 127.0.0.1
(a free port, read back from the server) by Werkzeug in a thread; the page
lists the dead letters, a Requeue button sends one back, Requeue all the
rest. Every wait is Playwright's auto-waiting ``expect`` or ``wait_until``
with a deadline: no sleeps. Skipped, with the reason, without Playwright or
Chromium (a failure under CI, as for tests/test_dashboard_browser.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from support.servers import unavailable
from support.servers.rabbitmq import Broker
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import MemQueue

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    unavailable("playwright is not installed (pip install playwright; it is in the test extras)", module=True)
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):  # pragma: no cover
    unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", module=True)

from werkzeug.serving import make_server  # noqa: E402

pika = pytest.importorskip("pika")
WAIT = 10.0
TOKEN = "dead-letters-browser-token-0123456789"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def dead_count(broker: Broker, queue: str) -> int:
    connection = broker.connection()
    try:
        return int(connection.channel().queue_declare(queue=queue, durable=True).method.message_count)
    finally:
        connection.close()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(WAIT * 1000)
            pg = context.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            yield pg
            assert errors == [], errors
        finally:
            browser.close()


def test_the_dead_letters_page_lists_and_requeues_one_then_all(
    page: Page, rabbitmq: Broker, make_app: Callable[..., Flask], mq: MemQueue
) -> None:
    qname = f"t.deadui.{secrets.token_hex(4)}"
    failing = {"a", "b", "c"}
    handled: list[str] = []
    lock = threading.Lock()

    @mq.handler("orders", amqp_queue=qname, retries=0)
    def on_order(message: Any) -> None:
        if message["n"] in failing:
            raise ValueError(f"cannot handle order {message['n']} <b>bold</b>")
        with lock:
            handled.append(message["n"])

    app = make_app(testing=False, MEMQUEUE_AMQP_URL=rabbitmq.url, MEMQUEUE_TOKEN=TOKEN, SECRET_KEY="browser-secret")
    with app.app_context():
        for n in "abc":
            mq.produce({"n": n}, topic="orders")
    mq.queue_for(app).ensure_consumer()
    wait_until(lambda: dead_count(rabbitmq, qname + ".dead") == 3)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dead-letters-test-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}/memqueue"
    try:
        page.goto(f"{base}/ui/dead")  # no token: the sign-in form
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="RabbitMQ dead letters")).to_be_visible()
        section = page.locator(f'section[data-queue="{qname}"]')
        expect(section.locator('[data-f="count"]')).to_have_text("3")
        rows = section.locator("tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.nth(0)).to_contain_text("ValueError: cannot handle order a <b>bold</b>")  # text, not markup
        expect(rows.nth(0)).to_contain_text('{"n":"a"}')
        failing.clear()
        first_id = rows.nth(0).get_attribute("data-id")
        rows.nth(0).get_by_role("button", name="Requeue").click()
        expect(page.locator("#notice")).to_have_text(f"Dead letter {first_id} is back in {qname}.")
        expect(section.locator('[data-f="count"]')).to_have_text("2")
        wait_until(lambda: handled == ["a"])
        section.get_by_role("button", name="Requeue all 2").click()
        expect(page.locator("#notice")).to_have_text(f"2 dead letters sent back to {qname}.")
        expect(section.locator('[data-f="count"]')).to_have_text("0")
        wait_until(lambda: sorted(handled) == ["a", "b", "c"])
        # the form without its CSRF token is refused
        r = page.request.post(f"{base}/ui/dead/{qname}/requeue", form={"id": "x"})
        assert r.status == 403
    finally:
        server.shutdown()
        thread.join(WAIT)
        server.server_close()
        mq.queue_for(app).shutdown(timeout=TIMEOUT)
        connection = rabbitmq.connection()
        try:
            for name in (qname, qname + ".dead"):
                connection.channel().queue_delete(name)
        finally:
            connection.close()
    assert sorted(handled) == ["a", "b", "c"]  # each handled once
