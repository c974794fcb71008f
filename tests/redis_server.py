"""A real ``redis-server`` for the tests (Debian's package; never an imitation of it).

:class:`RedisServer` starts one on 127.0.0.1 with a free port (redis cannot
bind port 0 and say which it got, so a port is picked through a socket and
the start is retried on a collision), in its own temporary directory, and
stops it by its pid. Without persistence by default (``--save ""
--appendonly no``); ``aof="always"`` or ``"everysec"`` for the tests that
restart it and count what survived.

:func:`shared_server` is the one server of a test session (started on first
use, stopped at the end by a session fixture in conftest.py): the storage
contract and the other Redis tests use it, each flushing it or using its own
key prefix. Without the binary, a test that needs it is skipped saying why,
except under CI (``CI`` set), where it fails: CI installs redis-server
(scripts/test.sh), so a missing one is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
#: Seconds a start or a stop may take.
DEADLINE = 20.0


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def require_binary() -> str:
    """The redis-server binary; else skip the test, or fail it under CI."""
    found = redis_binary()
    if found is None:
        reason = ("redis-server is not installed (Debian: apt-get install redis-server; scripts/test.sh"
                  " installs it when run as root)")
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process. ``aof``: None (no persistence), "everysec" or "always"."""

    def __init__(self, directory: Path, *, aof: str | None = None, password: str | None = None,
                 bind: str = HOST, extra: tuple[str, ...] = ()) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.password = password
        self.bind = bind
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def url(self, host: str | None = None, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{host or HOST}:{self.port}/{db}"

    def start(self, port: int | None = None) -> RedisServer:
        """Start it (on ``port``, or a free one: tried up to five times on a collision)."""
        binary = require_binary()
        for _ in range(5):
            self.port = port or _free_port()
            argv = [binary, "--port", str(self.port), "--bind", self.bind, "--dir", str(self.dir),
                    "--save", "", "--logfile", str(self.log), "--daemonize", "no", "--protected-mode", "no"]
            if self.aof:
                argv += ["--appendonly", "yes", "--appendfsync", self.aof]
            else:
                argv += ["--appendonly", "no"]
            if self.password:
                argv += ["--requirepass", self.password]
            argv += list(self.extra)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_ready():
                return self
            in_use = "Address already in use" in self._log_text()
            self._kill()
            if not in_use or port is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}: {self._log_text()[-2000:]}")
        raise RuntimeError("redis-server: no free port after 5 tries")

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            if "Ready to accept connections" in self._log_text():
                try:
                    self.client().ping()
                    return True
                except Exception:
                    pass
            time.sleep(0.01)
        return False

    def client(self, **kwargs: Any) -> Any:
        import redis

        addresses = self.bind.split()
        host = HOST if HOST in addresses or "0.0.0.0" in addresses else addresses[0]
        return redis.Redis(host=host, port=self.port,
                           password=self.password, decode_responses=True, socket_timeout=5, **kwargs)

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()

    def stop(self) -> None:
        """SIGTERM (Redis writes its AOF and exits), then SIGKILL after the deadline."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self._kill()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SHARED: RedisServer | None = None


def shared_server() -> RedisServer:
    """The session's server (no persistence), started on first use."""
    global _SHARED
    if _SHARED is None or _SHARED.proc is None or _SHARED.proc.poll() is not None:
        require_binary()
        _SHARED = RedisServer(Path(tempfile.mkdtemp(prefix="memqueue-redis-"))).start()
    return _SHARED


def stop_shared_server() -> None:
    global _SHARED
    if _SHARED is not None:
        _SHARED.stop()
        shutil.rmtree(_SHARED.dir, ignore_errors=True)
        _SHARED = None
