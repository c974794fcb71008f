"""A real PostgreSQL server (and PgBouncer) for the tests: Debian's packages, never an imitation.

:class:`PostgresServer` runs ``initdb`` in a temporary directory and starts
``postgres`` on 127.0.0.1 with a free port and a private socket directory,
with password authentication (``scram-sha-256``) for TCP connections, and
stops it by its pid (SIGINT: a fast shutdown, which disconnects clients).
The server refuses to run as root, and CI runs as root: then the data
directory belongs to ``nobody`` and both programs run as that user
(``subprocess.Popen(user=...)``); as any other user they run as that user.
``durable=True`` keeps fsync on (the benchmark, the restart test).

:func:`shared_postgres` is the session's one server (:func:`support.servers.shared`).
Tests keep apart by the store's ``schema`` option (:func:`fresh_schema`):
stores of one test share a schema, as processes do, and no test sees another's jobs.

:class:`PgBouncer` runs Debian's ``pgbouncer`` in transaction pooling mode in
front of a server, the setup in which LISTEN and prepared statements do not work.

Without the binaries a test that needs them skips saying why, and fails under CI.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from support import markers
from support.servers import shared, unavailable

HOST = "127.0.0.1"
#: Seconds a start or a stop may take.
DEADLINE = 30.0
BIN = Path("/usr/lib/postgresql/15/bin")
USER = "memqueue"
PASSWORD = "s3cret-pg-pass"
DATABASE = "memqueue"


def _binary_dir() -> Path | None:
    if (BIN / "postgres").exists():
        return BIN
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for version in sorted(base.iterdir(), reverse=True):
            if (version / "bin" / "postgres").exists():
                return version / "bin"
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def require_binaries() -> Path:
    """The directory of initdb and postgres; else skip the test, or fail it under CI."""
    found = _binary_dir()
    if found is None:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/test.sh"
                      " installs it when run as root)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[test]')")
    assert found is not None
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """Popen keywords that drop root to ``nobody`` (postgres refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": "nogroup", "extra_groups": []}


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        import grp
        import pwd

        os.chown(path, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)


def _private_dir(directory: Path | None, prefix: str) -> Path:
    """``directory``, or (as root, whose pytest folders ``nobody`` may not enter, or when
    none is given) a new temporary one; ``nobody`` owns it when the servers run as that user."""
    if directory is None or os.geteuid() == 0:
        path = Path(tempfile.mkdtemp(prefix=prefix))
    else:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
    _own(path)
    return path


class PostgresServer:
    """One postgres process with its own data directory."""

    def __init__(self, directory: Path | None = None, *, durable: bool = False,
                 settings: dict[str, str] | None = None) -> None:
        self.dir = _private_dir(directory, "memqueue-pg-")
        self.settings = dict(settings or {})
        _own(self.dir)
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.sockets = self.dir / "sockets"
        self.durable = durable
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.dir / "postgres.log"

    def url(self, *, password: str | None = PASSWORD, scheme: str = "postgresql", port: int | None = None,
            **options: str) -> str:
        auth = f"{USER}:{password}@" if password is not None else f"{USER}@"
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"{scheme}://{auth}{HOST}:{port or self.port}/{DATABASE}" + (f"?{query}" if query else "")

    def _initdb(self, bindir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        _own(pwfile)
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions", "-N"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.dir, **_run_as(),
        )
        pwfile.unlink()

    def start(self, port: int | None = None) -> PostgresServer:
        """initdb (once), then start postgres on ``port`` or a free one (up to five tries)."""
        bindir = require_binaries()
        markers.require(markers.SERVERS, "starts a PostgreSQL server")
        self._initdb(bindir)
        self.sockets.mkdir(exist_ok=True)
        _own(self.sockets)
        for _ in range(5):
            self.port = port or self.port or _free_port()
            argv = [str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self.sockets}",
                    "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
            if not self.durable:  # a test server: nothing needs to survive a power cut
                argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            for name, value in self.settings.items():
                argv += ["-c", f"{name}={value}"]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True, cwd=self.dir, **_run_as())
            if self._wait_ready():
                self._create_database()
                return self
            in_use = "already in use" in self._log_text()
            self._kill()
            if not in_use or port is not None:
                raise RuntimeError(f"postgres did not start on port {self.port}: {self._log_text()[-3000:]}")
            self.port = 0
        raise RuntimeError("postgres: no free port after 5 tries")

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connect(self, dbname: str = DATABASE, **kwargs: Any) -> Any:
        import psycopg

        return psycopg.connect(host=HOST, port=self.port, user=USER, password=PASSWORD, dbname=dbname,
                               connect_timeout=5, **kwargs)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with self.connect("postgres", autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return True
            except Exception:
                time.sleep(0.05)
        return False

    def _create_database(self) -> None:
        with self.connect("postgres", autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def execute(self, sql: str, params: Any = None) -> list[Any]:
        """Run one statement on a fresh connection (autocommit); its rows, if any."""
        with self.connect(autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def stop(self, *, fast: bool = True) -> None:
        """SIGINT (fast shutdown: clients are disconnected), then SIGKILL after the deadline."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGINT if fast else signal.SIGTERM)
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self._kill()

    def restart(self) -> None:
        """Stop it and start it again on the same port and data (clients see their connections drop)."""
        self.stop()
        self.start(self.port)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop it for good and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode in front of ``server``."""

    def __init__(self, server: PostgresServer, directory: Path | None = None) -> None:
        self.server = server
        self.dir = _private_dir(directory, "memqueue-pgbouncer-")
        _own(self.dir)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, **options: str) -> str:
        return self.server.url(port=self.port, **options)

    def start(self) -> PgBouncer:
        markers.require(markers.SERVERS, "starts PgBouncer")
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.access(binary, os.X_OK):
            unavailable("pgbouncer is not installed (Debian: apt-get install pgbouncer; scripts/test.sh"
                          " installs it when run as root)")
        for _ in range(5):
            self.port = _free_port()
            users = self.dir / "users.txt"
            users.write_text(f'"{USER}" "{PASSWORD}"\n')
            ini = self.dir / "pgbouncer.ini"
            ini.write_text(
                "[databases]\n"
                f"{DATABASE} = host={HOST} port={self.server.port} dbname={DATABASE}\n"
                "[pgbouncer]\n"
                f"listen_addr = {HOST}\nlisten_port = {self.port}\nunix_socket_dir =\n"
                f"auth_type = scram-sha-256\nauth_file = {users}\n"
                "pool_mode = transaction\ndefault_pool_size = 10\nmax_client_conn = 200\n"
                f"logfile = {self.dir / 'pgbouncer.log'}\nadmin_users = {USER}\n"
            )
            for path in (users, ini):
                _own(path)
            self.proc = subprocess.Popen([binary, str(ini)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir,
                                         **_run_as())
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"pgbouncer did not start: {self._log_text()[-3000:]}")

    def _log_text(self) -> str:
        try:
            return (self.dir / "pgbouncer.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(host=HOST, port=self.port, user=USER, password=PASSWORD, dbname=DATABASE,
                                     connect_timeout=5, autocommit=True, prepare_threshold=None) as conn:
                    conn.execute("SELECT 1")
                return True
            except Exception:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(DEADLINE)
        shutil.rmtree(self.dir, ignore_errors=True)


_schemas = itertools.count(1)


def _start_shared() -> PostgresServer:
    require_binaries()
    return PostgresServer().start()


def shared_postgres() -> PostgresServer:
    """The session's PostgreSQL server (fsync off), started on first use."""
    return shared("postgresql", _start_shared)


def fresh_schema() -> str:
    """A schema name no test of this session used (the store creates it: test apps are in testing mode)."""
    return f"t{os.getpid()}_{next(_schemas)}"
