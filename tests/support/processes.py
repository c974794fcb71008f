"""Real processes for the tests: started in their own process group, stopped by pid.

Every process a test starts goes through :func:`spawn`: its own session
(process group), stdin closed, stdout and stderr together into a file (never
a pipe, so a chatty process can not block on a full pipe, and the file is
there to read when a test fails), and an environment without the variables
that would make a ``flask run --debug`` believe it is already the reloader's
child. :func:`stop_group` ends the whole group: the Werkzeug reloader's
watcher and its serving child, gunicorn's master and its workers,
rabbitmq-server's script and its Erlang VM. Both are bounded in time.

:func:`start_server` starts a server that binds ``127.0.0.1`` port 0 and
prints the port it got (so tests never race for a "free" port) and waits
until it serves; :func:`flask_run` and :func:`gunicorn` are the two the suite
starts. On Linux, :func:`parent_pid` and :func:`threads_of` look at any
process through ``/proc``.

Typical use (the app directory comes from :class:`support.harness.Env`)::

    with flask_run("journal_app", cwd=env.src, env=env.env, log_path=env.path("server.log")) as server:
        r = http("POST", server.url + "/memqueue/produce", json={"message": "hi"})
    # leaving the block stopped the whole process group
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from support import markers
from support.net import HOST, connects, http
from support.waiting import wait_until

#: ``flask run`` / ``app.run()`` (Werkzeug): " * Running on http://127.0.0.1:NNNNN".
FLASK_READY = r"Running on http://127\.0\.0\.1:(?P<port>\d+)"
#: gunicorn: "[INFO] Listening at: http://127.0.0.1:NNNNN (pid)".
GUNICORN_READY = r"Listening at: http://127\.0\.0\.1:(?P<port>\d+)"

#: Environment variables a process must not inherit from whatever runs the tests:
#: with them set, ``flask run --debug`` would believe it is already the reloader's child.
SCRUB = ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD", "FLASK_RUN_FROM_CLI")


def bin_path(name: str) -> Path:
    """An executable installed next to the running interpreter (``flask``, ``gunicorn``).

    Tests use this, not ``PATH``, so they run the tools of the environment
    that runs pytest.
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name!r} is not installed next to {sys.executable}; install the test extras")
    return path


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without :data:`SCRUB`, unbuffered, plus ``extra``."""
    environ = {k: v for k, v in os.environ.items() if k not in SCRUB}
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(extra or {})
    return environ


def spawn(
    argv: Iterable[str | os.PathLike[str]],
    *,
    log_path: Path,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    append: bool = False,
    marker: str = markers.PROCESSES,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group, output (stdout and stderr) to ``log_path``.

    ``env`` is added to :func:`environment`. ``log_path`` is emptied first
    unless ``append``. The running test must carry ``marker`` (``processes``;
    the server starters pass ``servers``).
    """
    args = [os.fspath(a) for a in argv]
    markers.require(marker, f"starts {Path(args[0]).name}")
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append else "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=cwd, env=environment(env), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def group_members(pgid: int) -> list[int]:
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    try:
        wait_until(lambda: not group_members(proc.pid), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return False
    return True


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0, kill_timeout: float = 5.0) -> int | None:
    """End the process group ``proc`` leads: SIGTERM, up to ``timeout`` s, then SIGKILL.

    A paused group (SIGSTOP) is continued first, or it could not exit. Safe
    to call twice. Returns ``proc``'s exit code (negative for a signal), or
    None if even SIGKILL did not end it within ``kill_timeout``.
    """
    if proc.poll() is None or group_members(proc.pid):
        _signal_group(proc.pid, signal.SIGCONT)
        _signal_group(proc.pid, signal.SIGTERM)
        if not _wait_gone(proc, timeout):
            _signal_group(proc.pid, signal.SIGKILL)
            _wait_gone(proc, kill_timeout)
    return proc.poll()


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL the group ``proc`` leads, at once (a test's cleanup), and reap ``proc``."""
    if proc.poll() is None or group_members(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout)


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


@dataclass
class Server:
    """A server running as a subprocess in its own process group.

    Made by :func:`start_server`; also a context manager that stops it.
    """

    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    #: The port read from the server's output (0 until :func:`start_server` found it).
    port: int = 0

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
        regex = re.compile(pattern)

        def seen() -> re.Match[str] | None:
            match = regex.search(self.output(), start)
            if match is None and self.proc.poll() is not None:
                match = regex.search(self.output(), start)  # it may have written it and exited
                if match is None:
                    raise RuntimeError(f"{pattern!r} never appeared: {self.describe()}")
            return match

        return wait_until(seen, timeout, lambda: f"{pattern!r} in the output of {self.describe()}")

    def processes(self) -> list[int]:
        """The live (non-zombie) processes of the server's group, e.g. watcher and child."""
        return group_members(self.pid)

    def alive(self) -> bool:
        """True while any process of the group (not a zombie) is left."""
        return bool(group_members(self.pid)) or self.proc.poll() is None

    def stop(self, timeout: float = 10.0, kill_timeout: float = 5.0) -> int | None:
        """:func:`stop_group`: the whole group, SIGTERM then SIGKILL. Safe to call twice."""
        return stop_group(self.proc, timeout, kill_timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    """Start ``argv`` (:func:`spawn`) and wait until it serves.

    ``ready`` is a regex with a named group ``port``, matched against the
    output; the server must print it once it listens (servers started on
    port 0 print the port they got). Then, if ``ready_path`` is given, GET
    it until an answer below 500 comes back, else until a TCP connect
    succeeds. On failure or timeout the group is stopped and the error
    carries the output.
    """
    args = [os.fspath(a) for a in argv]
    server = Server(args, Path(log_path), spawn(args, log_path=log_path, cwd=cwd, env=env))
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
    return connects(server.port)


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
