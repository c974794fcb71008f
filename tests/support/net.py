"""Loopback networking for the tests: the one host, a free port, a small HTTP client.

Nothing a test starts listens beyond ``127.0.0.1``. :func:`http` is urllib
with two differences that matter in tests: an HTTP error status is returned,
not raised, and redirects are not followed (a 303 comes back with its
``Location``).
"""

from __future__ import annotations

import json as jsonlib
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Loopback only: nothing a test starts listens beyond this machine.
HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on right now.

    Only for servers that cannot bind port 0 and report the port they got
    (redis-server, RabbitMQ): another process may take it before the server
    binds it, so their starters retry on "address in use". A server that
    can print its port binds port 0 instead (:func:`support.processes.start_server`).
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def connects(port: int, host: str = HOST) -> bool:
    """True if a TCP connection to ``host:port`` is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Response:
    """What :func:`http` got back."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(
    method: str,
    url: str,
    *,
    json: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP request with urllib; HTTP error statuses are returned, not raised.

    Each call opens a new connection (urllib sends ``Connection: close``),
    which matters under gunicorn: every request is accepted anew by
    whichever worker is free.
    """
    hdrs = dict(headers or {})
    if json is not None:
        data = jsonlib.dumps(json).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, dict(err.headers.items()), err.read())
