"""A body run in a forked child, its answer read back: what ``gunicorn --preload`` does to an app.

The child does its part in a ``try``, writes what it saw as JSON to a pipe and
leaves with ``os._exit`` (never through pytest). The parent reads the pipe
and reaps the child with a deadline, killing it if it hangs.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from support.waiting import TIMEOUT


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child; return what it returned (or fail with its traceback)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock:
        # that is exactly the situation (gunicorn --preload) under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            try:
                result = body()
            except BaseException as exc:
                result = {"child_error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                code = 1
            data = json.dumps(result, default=repr).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + TIMEOUT
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("the forked child did not answer in time")
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
        status = reap(pid, deadline)
    answer: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    assert "child_error" not in answer, answer.get("traceback")
    assert os.waitstatus_to_exitcode(status) == 0
    return answer


def reap(pid: int, deadline: float) -> int:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.005)
