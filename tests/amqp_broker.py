"""A real RabbitMQ broker for the tests: Debian's ``rabbitmq-server`` on 127.0.0.1, free ports.

The broker runs from a temporary directory (its data, logs, config and
Erlang cookie), as a node with a unique name, with its own ``epmd`` on a
free port (so it never meets another engineer's broker or a system one),
and with no plugins. It takes seconds to boot, so the ``rabbitmq`` fixture
starts it once per session; tests keep apart by using unique queue names.
It is stopped by its process group (SIGTERM: RabbitMQ shuts down cleanly;
SIGKILL after a deadline), and its ``epmd`` by pid.

Without the binary the tests that need it are skipped, saying how to
install it, except under CI (``CI`` set), where that is a failure.
``benchmarks/amqp_bench.py`` starts its broker with :func:`start_broker` too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: The broker's user; the password is random per run (so a test can look for it in logs).
USER = "memq"
#: Seconds the broker may take to accept an AMQP connection after starting.
BOOT_DEADLINE = 90.0
#: Seconds a stopping broker may take before it is killed.
STOP_DEADLINE = 30.0

_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server",)  # Debian's real script; /usr/sbin's su's to rabbitmq


def find_server() -> str | None:
    """The ``rabbitmq-server`` script to run as the current user, if installed."""
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("rabbitmq-server")
    if found and os.path.realpath(found) != "/usr/sbin/rabbitmq-server":
        return found
    return None


def find_epmd() -> str | None:
    found = shutil.which("epmd")
    if found:
        return found
    for base in Path("/usr/lib/erlang").glob("erts-*/bin/epmd"):
        return str(base)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """A running (or stopped) broker; :meth:`stop` and :meth:`start` keep its data (durable queues)."""

    directory: Path
    port: int
    dist_port: int
    epmd_port: int
    password: str
    nodename: str
    server: str
    epmd: subprocess.Popen[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``amqp://memq:<password>@127.0.0.1:<port>/%2F``."""
        return f"amqp://{USER}:{self.password}@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            **os.environ,
            "HOME": str(d),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),  # rabbitmq.conf
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        }

    def output(self) -> str:
        try:
            return (self.directory / "server.out").read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def start(self, deadline: float = BOOT_DEADLINE) -> None:
        """Start epmd (once) and the server; return when it accepts AMQP connections."""
        import pika

        env = self.env()
        if self.epmd is None or self.epmd.poll() is not None:
            epmd = find_epmd()
            if epmd is None:
                raise RuntimeError("epmd is not installed (Debian's erlang-base has it)")
            self.epmd = subprocess.Popen(
                [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            _wait(lambda: _connects(self.epmd_port), 10.0, "epmd to listen")
        self._log = (self.directory / "server.out").open("ab")
        self.proc = subprocess.Popen(
            [self.server], env=env, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        params = pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.output()}")
            if not _connects(self.port):
                return False
            try:
                pika.BlockingConnection(params).close()
            except Exception:
                return False
            return True

        try:
            _wait(ready, deadline, lambda: f"rabbitmq-server to accept connections:\n{self.output()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (its whole process group): SIGTERM, then SIGKILL after a deadline."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop_group(proc, STOP_DEADLINE)
            _wait(lambda: not _connects(self.port), 10.0, "the AMQP port to close")
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop the server and its epmd (by pid); the directory is left to its owner."""
        self.stop()
        epmd, self.epmd = self.epmd, None
        if epmd is not None:
            _stop_group(epmd, 5.0)

    def connection(self) -> Any:
        """A plain pika connection (what "another service" would use)."""
        import pika

        return pika.BlockingConnection(pika.URLParameters(self.url))


def _stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
    # what the script started (beam.smp, erl_child_setup) lives in the same group
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(condition: Any, timeout: float, what: Any) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(0.1)


def start_broker(directory: Path | None = None) -> Broker:
    """A new broker in ``directory`` (a new temporary one by default), started."""
    server = find_server()
    if server is None:
        raise FileNotFoundError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    d = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="memq-rabbit-"))
    d.mkdir(parents=True, exist_ok=True)
    password = "pw-" + secrets.token_hex(8)
    (d / "rabbitmq.conf").write_text(
        f"default_user = {USER}\ndefault_pass = {password}\nloopback_users = none\n"
        "log.file.level = info\nlog.console = false\n"
    )
    (d / "enabled_plugins").write_text("[].\n")
    (d / "rabbitmq-env.conf").write_text("")
    broker = Broker(
        directory=d, port=free_port(), dist_port=free_port(), epmd_port=free_port(), password=password,
        nodename=f"memq-{secrets.token_hex(4)}@localhost", server=server,
    )
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


def broker_fixture() -> Iterator[Broker]:
    """The body of the session-scoped ``rabbitmq`` fixture (see conftest.py)."""
    import pytest

    if find_server() is None:
        reason = (
            "rabbitmq-server is not installed (scripts/test.sh installs Debian's as root:"
            " apt-get install rabbitmq-server)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the RabbitMQ tests: {reason}")
        pytest.skip(reason)
    try:
        import pika  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("pika is not installed in CI (the test extra installs it)")
        pytest.skip("pika is not installed: pip install -e '.[test]'")
    directory = Path(tempfile.mkdtemp(prefix="memq-rabbit-"))
    broker = start_broker(directory)
    try:
        yield broker
    finally:
        broker.close()
        shutil.rmtree(directory, ignore_errors=True)
