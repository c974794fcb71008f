"""Start real servers as subprocesses for tests, and stop them reliably.

Every server binds ``127.0.0.1`` on port 0 and the real port is read back
from its own output, so tests never race for a "free" port. Output (stdout
and stderr together) goes to a file, never a pipe, so a chatty server can
not block on a full pipe, and the file is there to read when a test fails.
Each server runs in its own session (process group), and :meth:`Server.stop`
ends the whole group: the Werkzeug reloader's watcher and its serving
child, or gunicorn's master and its workers.

Typical use::

    from servers import flask_run, gunicorn, http

    def test_something(tmp_path):
        with flask_run("example_app", cwd=app_dir, log_path=tmp_path / "server.log") as server:
            r = http("POST", server.url + "/memqueue/produce", json={"message": "hi"})
            assert r.status == 202
        # leaving the block stopped the whole process group

:func:`start_server` takes any command line and a readiness regex with a
``port`` group; :func:`flask_run` and :func:`gunicorn` are shortcuts for the
two servers the suite starts. A :class:`Server` has ``url``, ``port``,
``pid`` (the process started: the reloader's watcher, gunicorn's master),
``output()``, ``wait_for_output(regex)``, ``processes()`` (the live pids of
its group) and ``stop()``. :func:`wait_until` polls a condition with a
deadline, :func:`http` is a small urllib client that never raises on HTTP
error statuses and never follows redirects, and, on Linux,
:func:`parent_pid` and :func:`threads_of` look at any process through
``/proc``.

Everything here is bounded in time: starting fails with the server's output
in the message after ``timeout`` seconds, and stopping sends SIGTERM to the
group, waits up to ``timeout`` seconds, then SIGKILL.
"""

from __future__ import annotations

import json as jsonlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: Loopback only: nothing a test starts listens beyond this machine.
HOST = "127.0.0.1"

#: ``flask run`` / ``app.run()`` (Werkzeug): " * Running on http://127.0.0.1:NNNNN".
FLASK_READY = r"Running on http://127\.0\.0\.1:(?P<port>\d+)"
#: gunicorn: "[INFO] Listening at: http://127.0.0.1:NNNNN (pid)".
GUNICORN_READY = r"Listening at: http://127\.0\.0\.1:(?P<port>\d+)"

#: Environment variables a server must not inherit from whatever runs the tests:
#: with them set, a ``flask run --debug`` would believe it is already the reloader's child.
_SCRUB = ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD")


def bin_path(name: str) -> Path:
    """An executable installed next to the running interpreter (``flask``, ``gunicorn``).

    Tests use this, not ``PATH``, so they run the tools of the environment
    that runs pytest.
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name!r} is not installed next to {sys.executable}; install the test extras")
    return path


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    message: str | Callable[[], str] = "condition",
    interval: float = 0.02,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Raises :class:`TimeoutError` naming ``message`` (a string, or a callable
    that builds one, e.g. with the server's output) after ``timeout`` seconds.
    The condition is always tried at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)


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

    Redirects are not followed (a 303 comes back with its ``Location``).
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


@dataclass
class Server:
    """A server running as a subprocess in its own process group.

    Made by :func:`start_server`; also a context manager that stops it.
    """

    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    #: The port read from the server's output (0 until :meth:`start_server` found it).
    port: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The pid of the process that was started: the reloader's watcher, gunicorn's master."""
        return self.proc.pid

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    def output(self) -> str:
        """Everything the server wrote so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """The command, its state and its output: for failure messages."""
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return f"server {' '.join(self.argv)!r} ({state}), output in {self.log_path}:\n{self.output()}"

    def wait_for_output(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """Wait until the output, from character ``start`` on, matches the regex ``pattern``.

        Fails at once, with the output, if the server exits first. Pass
        ``start=len(server.output())`` taken earlier to wait for a *new* line.
        """

        def seen() -> re.Match[str] | None:
            match = re.compile(pattern).search(self.output(), start)
            if match is None and self.proc.poll() is not None:
                match = re.compile(pattern).search(self.output(), start)  # it may have written it and exited
                if match is None:
                    raise RuntimeError(f"{pattern!r} never appeared: {self.describe()}")
            return match

        return wait_until(seen, timeout, lambda: f"{pattern!r} in the output of {self.describe()}")

    def processes(self) -> list[int]:
        """The live (non-zombie) processes of the server's group, e.g. watcher and child."""
        return _group_members(self.pid)

    def alive(self) -> bool:
        """True while any process of the group (not a zombie) is left."""
        return bool(_group_members(self.pid)) or self.proc.poll() is None

    def stop(self, timeout: float = 10.0, kill_timeout: float = 5.0) -> int | None:
        """End the whole process group: SIGTERM, up to ``timeout`` s, then SIGKILL.

        Safe to call twice. Returns the started process's exit code (negative
        for a signal), or None if even SIGKILL did not end it in ``kill_timeout``.
        """
        try:
            if self.alive():
                _signal_group(self.pid, signal.SIGTERM)
                if not self._wait_gone(timeout):
                    _signal_group(self.pid, signal.SIGKILL)
                    self._wait_gone(kill_timeout)
            return self.proc.poll()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        try:
            wait_until(lambda: not _group_members(self.pid), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``.

    On Linux this reads ``/proc``, so an exited member its new parent has
    not reaped yet does not count; elsewhere it asks ``killpg(pgid, 0)``.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (Linux, from ``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def threads_of(pid: int) -> list[str]:
    """The OS-level names of the threads of process ``pid`` (Linux, ``/proc/<pid>/task/*/comm``).

    Linux keeps at most 15 characters of a name, and Python before 3.14
    does not pass ``Thread.name`` to the OS at all (every thread shows the
    process's name), so the *number* of entries is what is reliable here.
    """
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended while we looked
            continue
    return names


def start_server(
    argv: Iterable[str | os.PathLike[str]],
    *,
    ready: str,
    log_path: Path,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    ready_path: str | None = None,
    timeout: float = 15.0,
) -> Server:
    """Start ``argv`` in a new process group and wait until it serves.

    ``ready`` is a regex with a named group ``port``, matched against the
    output; the server must print it once it listens (servers started on
    port 0 print the port they got). Then, if ``ready_path`` is given, GET
    it until an answer below 500 comes back, else until a TCP connect
    succeeds. ``env`` is added to a copy of this process's environment
    (``PYTHONUNBUFFERED=1`` is set so output arrives promptly). On failure
    or timeout the group is stopped and the error carries the output.
    """
    args = [os.fspath(a) for a in argv]
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(env or {})
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    server = Server(args, log_path, proc, _log=log)
    try:
        deadline = time.monotonic() + timeout
        server.port = int(server.wait_for_output(ready, timeout).group("port"))
        left = max(0.1, deadline - time.monotonic())
        if ready_path is not None:
            wait_until(lambda: _answers(server, ready_path), left, lambda: f"GET {ready_path}: {server.describe()}")
        else:
            wait_until(lambda: _connects(server), left, lambda: f"a TCP connect: {server.describe()}")
    except BaseException:
        server.stop()
        raise
    return server


def _connects(server: Server) -> bool:
    if server.proc.poll() is not None:
        raise RuntimeError(f"the server exited before it served: {server.describe()}")
    try:
        with socket.create_connection((HOST, server.port), timeout=1.0):
            return True
    except OSError:
        return False


def _answers(server: Server, path: str) -> bool:
    if server.proc.poll() is not None:
        raise RuntimeError(f"the server exited before it served: {server.describe()}")
    try:
        return http("GET", server.url + path, timeout=2.0).status < 500
    except (OSError, HTTPException):
        return False


def _gunicorn_has(setting: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(s.name == setting for s in KNOWN_SETTINGS)


def flask_run(
    app: str,
    *,
    log_path: Path,
    cwd: Path | str | None = None,
    debug: bool = True,
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    ready_path: str | None = None,
    timeout: float = 15.0,
) -> Server:
    """``flask --app <app> run [--debug] --host 127.0.0.1 --port 0 [args]``.

    With ``debug`` the reloader runs: :attr:`Server.pid` is its watcher,
    which prints the "Running on" line, and the serving child is its
    child. ``cwd`` is where ``app`` is imported from.
    """
    argv = [str(bin_path("flask")), "--app", app, "run", "--host", HOST, "--port", "0"]
    argv += ["--debug"] if debug else ["--no-debug"]
    argv += list(args)
    return start_server(argv, ready=FLASK_READY, log_path=log_path, cwd=cwd, env=env, ready_path=ready_path,
                        timeout=timeout)


def gunicorn(
    app: str,
    *,
    log_path: Path,
    cwd: Path | str | None = None,
    workers: int = 2,
    preload: bool = False,
    worker_class: str = "sync",
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    ready_path: str | None = None,
    timeout: float = 15.0,
) -> Server:
    """``gunicorn --bind 127.0.0.1:0 --workers N [--preload] <app>``; ``app`` is ``module:variable``.

    :attr:`Server.pid` is the master. Readiness means the master listens;
    pass ``ready_path`` to also wait for a worker to answer. Where gunicorn
    has it (>= 25.1), ``--no-control-socket`` is passed too.
    """
    argv = [str(bin_path("gunicorn")), "--bind", f"{HOST}:0", "--workers", str(workers),
            "--worker-class", worker_class]
    argv += ["--preload"] if preload else []
    if _gunicorn_has("control_socket_disable"):
        # gunicorn >= 25.1 opens a control socket at one shared default path
        # ($XDG_RUNTIME_DIR or ~/.gunicorn): concurrent servers would clobber it.
        argv.append("--no-control-socket")
    argv += [*args, app]
    return start_server(argv, ready=GUNICORN_READY, log_path=log_path, cwd=cwd, env=env, ready_path=ready_path,
                        timeout=timeout)
