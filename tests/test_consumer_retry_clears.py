"""A job that succeeds on a retry does not keep the failure of an earlier attempt."""

from __future__ import annotations

from flask import Flask

from flask_memqueue import MemQueue


def test_success_after_retry_clears_the_earlier_error() -> None:
    app = Flask(__name__)
    app.testing = True
    mq = MemQueue(app)
    attempts: list[int] = []

    @mq.task(retries=2, retry_delay=0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise ValueError("first attempt fails")
        return "ok"

    with app.app_context():
        job = flaky.delay()
        assert job.wait(timeout=10) == "ok"
        assert job.attempts == 2
        assert job.error is None and job.traceback is None
        assert job.to_dict()["error"] is None
        mq.shutdown(timeout=10)
