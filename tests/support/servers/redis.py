"""A real ``redis-server`` (Debian's package) for the tests.

:class:`RedisServer` starts one on 127.0.0.1 with a free port (redis can not
bind port 0 and say which it got, so a port is picked through a socket and
the start is retried on a collision), in its own directory, and stops it by
its pid. Without persistence by default (``--save "" --appendonly no``);
``aof="always"`` or ``"everysec"`` for the tests that restart it and count
what survived; ``pause()``/``resume()`` (SIGSTOP/SIGCONT) for the tests of a
server that stops answering.

:func:`shared_redis` is the session's one server (:func:`support.servers.shared`):
the ``redis_server`` fixture, the storage contract and the other Redis tests
use it, each flushing it or using its own key prefix. Without the binary a
test that needs it skips saying why, and fails under CI.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from support import markers
from support.net import HOST, free_port
from support.processes import spawn, stop_group
from support.servers import find_binary, shared, unavailable
from support.waiting import wait_until

#: Seconds a start or a stop may take.
DEADLINE = 20.0


def require_binary() -> str:
    """The redis-server binary; else skip the test, or fail it under CI."""
    found = find_binary("redis-server", ["/usr/bin/redis-server"])
    if found is None:
        unavailable("redis-server is not installed (Debian: apt-get install redis-server;"
                    " scripts/test.sh installs it when run as root)")
    return found


class RedisServer:
    """One redis-server process. ``aof``: None (no persistence), "everysec" or "always"."""

    def __init__(self, directory: Path, *, aof: str | None = None, password: str | None = None,
                 bind: str = HOST, extra: tuple[str, ...] = (), owns_directory: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.password = password
        self.bind = bind
        self.extra = extra
        #: :meth:`close` removes the directory (a temporary one made for this server).
        self.owns_directory = owns_directory
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
            self.port = port or free_port()
            argv = [binary, "--port", str(self.port), "--bind", self.bind, "--dir", str(self.dir),
                    "--save", "", "--logfile", str(self.log), "--daemonize", "no", "--protected-mode", "no"]
            argv += ["--appendonly", "yes", "--appendfsync", self.aof] if self.aof else ["--appendonly", "no"]
            if self.password:
                argv += ["--requirepass", self.password]
            argv += list(self.extra)
            self.proc = spawn(argv, log_path=self.dir / "redis.out", append=True, marker=markers.SERVERS)
            if self._ready():
                return self
            in_use = "Address already in use" in self._log_text()
            stop_group(self.proc, DEADLINE)
            if not in_use or port is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}: {self._log_text()[-2000:]}")
        raise RuntimeError("redis-server: no free port after 5 tries")

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _ready(self) -> bool:
        """True once it answers PING; False if it exited (or never got ready) first."""
        proc = self.proc
        assert proc is not None

        def settled() -> str | None:
            if proc.poll() is not None:
                return "exited"
            if "Ready to accept connections" not in self._log_text():
                return None
            try:
                return "ready" if self.client().ping() else None
            except Exception:
                return None

        try:
            return wait_until(settled, DEADLINE) == "ready"
        except TimeoutError:
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

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (Redis writes its AOF and exits), then SIGKILL after the deadline; the data stays."""
        if self.proc is not None:
            stop_group(self.proc, DEADLINE)

    def close(self) -> None:
        """Stop it for good, and remove its directory if it owns it."""
        self.stop()
        if self.owns_directory:
            shutil.rmtree(self.dir, ignore_errors=True)

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


def stored_jobs(client: Any, prefix: str) -> list[Any]:
    """Every job a Redis store with key prefix ``prefix`` holds, as records
    (:class:`~flask_memqueue.storage.redis.records.RedisRecord`), read from the server
    with a client of the test's own: what a process test checks after the fact."""
    from flask_memqueue.storage.redis.records import parse

    return [parse(jid, text) for jid, text in client.hgetall(f"{prefix}:j").items()]


def _start_shared() -> RedisServer:
    require_binary()
    directory = Path(tempfile.mkdtemp(prefix="memqueue-redis-"))
    return RedisServer(directory, owns_directory=True).start()


def shared_redis() -> RedisServer:
    """The session's redis-server (no persistence), started on first use."""
    return shared("redis-server", _start_shared)
