"""The example's tasks and message handlers.

They are registered on ``mq`` at import time, before any app exists; every
app that ``mq.init_app(app)`` binds can run them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app

from flask_memqueue import MemQueue, current_job

mq = MemQueue()
logger = logging.getLogger(__name__)


@mq.task
def build_report(steps: int = 5, step_seconds: float = 0.4) -> str:
    """A slow job that reports its progress, so /memqueue/jobs/<id> shows it move."""
    for step in range(1, steps + 1):
        time.sleep(step_seconds)  # stands in for real work
        current_job.set_progress(step / steps, f"step {step} of {steps}")
    return f"report of {steps} steps built by {current_app.name}"


@mq.task(retries=3, retry_delay=0.5, retry_backoff=2.0)
def flaky(failures: int = 2) -> str:
    """Fails its first ``failures`` attempts, then succeeds (with retries=3 it gets 4 tries)."""
    attempt = current_job.attempts
    if attempt <= failures:
        raise ConnectionError(f"the service is not answering (attempt {attempt})")
    return f"succeeded on attempt {attempt}"


@mq.task(retries=2, retry_delay=0.5)
def doomed() -> None:
    """Always fails: after its 2 retries the job ends failed, with its traceback."""
    raise ValueError("this task always fails")


@mq.handler
def on_message(message: Any) -> dict[str, Any]:
    """Receives messages without a topic: ``POST /memqueue/produce {"message": ...}``."""
    logger.info("message received: %r", message)
    return {"received": message}


@mq.handler("greetings")
def on_greeting(message: Any) -> str:
    """Receives messages of the topic "greetings"."""
    return f"hello, {message}!"
