"""example_app in-process: its factory, config, views, tasks and handlers.

Jobs run in eager mode (inline, retries without their delays), so every
assertion holds the moment the view returns. The real-server behaviour is in
test_reloader.py and test_gunicorn.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.tasks import mq
from flask_memqueue import Job


# Not named ``app``: pytest-flask would push a request context around every test.
@pytest.fixture
def example() -> Iterator[Flask]:
    app = create_app({"TESTING": True, "MEMQUEUE_EAGER": True})
    yield app
    with app.app_context():
        mq.shutdown(timeout=5)


@pytest.fixture
def client(example: Flask) -> FlaskClient:
    return example.test_client()


def post_job(client: FlaskClient, example: Flask, kind: str, **form: str) -> Job:
    r = client.post(f"/jobs/{kind}", data=form)
    assert r.status_code == 303
    job_id = r.headers["Location"].partition("?job=")[2]
    with example.app_context():
        job = mq.get_job(job_id)
    assert job is not None
    return job


def test_index_links_every_kind_of_job_and_the_queue(client: FlaskClient) -> None:
    page = client.get("/").text
    for kind in ("report", "flaky", "doomed", "message"):
        assert f'action="/jobs/{kind}"' in page
    assert 'href="/memqueue/"' in page


def test_index_links_the_job_just_queued(client: FlaskClient, example: Flask) -> None:
    job = post_job(client, example, "message", message="hi")
    assert f'href="/memqueue/jobs/{job.id}"' in client.get(f"/?job={job.id}").text


def test_report_reports_progress(client: FlaskClient, example: Flask) -> None:
    job = post_job(client, example, "report", steps="2")
    assert job.status == "succeeded"
    assert (job.progress, job.progress_message) == (1.0, "step 2 of 2")
    assert job.result == "report of 2 steps built by example_app"


def test_flaky_succeeds_after_retries(client: FlaskClient, example: Flask) -> None:
    job = post_job(client, example, "flaky", failures="2")
    assert (job.status, job.attempts, job.result) == ("succeeded", 3, "succeeded on attempt 3")


def test_doomed_fails_after_its_retries(client: FlaskClient, example: Flask) -> None:
    job = post_job(client, example, "doomed")
    assert (job.status, job.attempts) == ("failed", 3)
    assert job.error == "ValueError: this task always fails"


@pytest.mark.parametrize(("topic", "result"), [("", {"received": "hi"}), ("greetings", "hello, hi!")])
def test_messages_reach_their_handler(client: FlaskClient, example: Flask, topic: str, result: object) -> None:
    job = post_job(client, example, "message", message="hi", topic=topic)
    assert (job.status, job.result) == ("succeeded", result)


def test_unknown_kind_is_404(client: FlaskClient) -> None:
    assert client.post("/jobs/nothing").status_code == 404


def test_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("FLASK_MEMQUEUE_TOKEN", "a-token-of-24-characters")
    app = create_app({"TESTING": True})
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.extensions["memqueue"].config.token == "a-token-of-24-characters"


def test_dev_secret_key_only_in_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    assert create_app({"DEBUG": True}).config["SECRET_KEY"] == "dev"
    assert create_app().config["SECRET_KEY"] is None
