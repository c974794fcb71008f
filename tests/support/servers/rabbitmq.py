"""A real RabbitMQ broker for the tests: Debian's ``rabbitmq-server`` on 127.0.0.1, free ports.

The broker runs from a temporary directory (its data, logs, config and
Erlang cookie), as a node with a unique name, with its own ``epmd`` on a
free port (so it never meets another engineer's broker or a system one),
and with no plugins. It takes seconds to boot, so the ``rabbitmq`` fixture
shares one per session (:func:`shared_rabbitmq`); tests keep apart by using
unique queue names. It is stopped by its process group (SIGTERM: RabbitMQ
shuts down cleanly; SIGKILL after a deadline), and its ``epmd`` by pid.

Without the binary (or pika) the tests that need it skip saying how to
install it, and fail under CI. ``benchmarks/amqp_bench.py`` starts its
broker with :func:`start_broker` too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import markers
from support.net import HOST, connects, free_port
from support.processes import spawn, stop_group
from support.servers import find_binary, shared, unavailable
from support.waiting import wait_until

#: The broker's user; the password is random per run (so a test can look for it in logs).
USER = "memq"
#: Seconds the broker may take to accept an AMQP connection after starting.
BOOT_DEADLINE = 90.0
#: Seconds a stopping broker may take before it is killed.
STOP_DEADLINE = 30.0


def find_server() -> str | None:
    """The ``rabbitmq-server`` script to run as the current user, if installed.

    Debian's ``/usr/sbin/rabbitmq-server`` switches to the ``rabbitmq`` user:
    the script under ``/usr/lib/rabbitmq/bin`` is the real one.
    """
    real = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if os.access(real, os.X_OK):
        return real
    found = find_binary("rabbitmq-server")
    return found if found and os.path.realpath(found) != "/usr/sbin/rabbitmq-server" else None


def find_epmd() -> str | None:
    return find_binary("epmd", [str(p) for p in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))])


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
    #: :meth:`close` removes :attr:`directory` (a temporary one made for this broker).
    owns_directory: bool = False
    epmd: subprocess.Popen[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``amqp://memq:<password>@127.0.0.1:<port>/%2F``."""
        return f"amqp://{USER}:{self.password}@{HOST}:{self.port}/%2F"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            "HOME": str(d),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
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

        if self.epmd is None or self.epmd.poll() is not None:
            epmd = find_epmd()
            if epmd is None:
                raise RuntimeError("epmd is not installed (Debian's erlang-base has it)")
            self.epmd = spawn([epmd, "-port", str(self.epmd_port), "-address", HOST], env=self.env(),
                              log_path=self.directory / "epmd.out", marker=markers.SERVERS)
            wait_until(lambda: connects(self.epmd_port), 10.0, "epmd to listen")
        proc = self.proc = spawn([self.server], env=self.env(), cwd=self.directory,
                                 log_path=self.directory / "server.out", append=True, marker=markers.SERVERS)
        params = pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n{self.output()}")
            if not connects(self.port):
                return False
            try:
                pika.BlockingConnection(params).close()
            except Exception:
                return False
            return True

        try:
            wait_until(ready, deadline, lambda: f"rabbitmq-server to accept connections:\n{self.output()}",
                       interval=0.1)
        except BaseException:
            self.stop()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server (its whole process group): SIGTERM, then SIGKILL after a deadline."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, STOP_DEADLINE, STOP_DEADLINE)
            wait_until(lambda: not connects(self.port), 10.0, "the AMQP port to close", interval=0.1)

    def close(self) -> None:
        """Stop the server and its epmd (by pid); remove the directory if the broker owns it."""
        self.stop()
        epmd, self.epmd = self.epmd, None
        if epmd is not None:
            stop_group(epmd, 5.0)
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def connection(self) -> Any:
        """A plain pika connection (what "another service" would use)."""
        import pika

        return pika.BlockingConnection(pika.URLParameters(self.url))

    def delete_queues(self, *names: str) -> None:
        """Delete queues a test declared (a missing one is no error)."""
        connection = self.connection()
        try:
            for name in names:
                connection.channel().queue_delete(name)
        finally:
            connection.close()


def start_broker(directory: Path | None = None) -> Broker:
    """A new broker in ``directory`` (a new temporary one by default, removed by :meth:`Broker.close`), started."""
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
        nodename=f"memq-{secrets.token_hex(4)}@localhost", server=server, owns_directory=directory is None,
    )
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


def _start_shared() -> Broker:
    if find_server() is None:
        unavailable("rabbitmq-server is not installed (scripts/test.sh installs Debian's as root:"
                    " apt-get install rabbitmq-server)")
    try:
        import pika  # noqa: F401
    except ImportError:
        unavailable("pika is not installed: pip install -e '.[test]'")
    return start_broker()


def shared_rabbitmq() -> Broker:
    """The session's broker, started on first use (it takes seconds to boot)."""
    return shared("rabbitmq-server", _start_shared)
