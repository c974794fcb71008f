"""The one process harness: an app of ``tests/apps/`` run as real processes, and what they logged.

A process test gets an :class:`Env` (from the ``make_env`` fixture, usually
through a two-line ``env`` fixture in its module that names the app and its
settings). The Env

- copies ``tests/apps/<app>.py`` (and any extra folders, e.g. example_app)
  into ``<tmp>/src``, where every process runs (so a test may touch the
  copy to make the reloader reload, and never changes the repository);
- makes ``<tmp>/data``, the app's data folder (``MEMQUEUE_TEST_DIR``): its
  log, its gate files, its instance folder, a journal (:attr:`Env.journal`);
- builds the environment every process gets (:attr:`Env.env`: the data
  folder, ``tests/`` on ``PYTHONPATH`` for :mod:`support.base_app`, and the
  app's own settings);
- starts processes (:meth:`Env.popen`, :meth:`Env.python`, :meth:`Env.main`,
  :meth:`Env.worker`, :meth:`Env.flask_run`, :meth:`Env.gunicorn`), each
  with its output in ``data/<name>.out`` (:meth:`Env.output`), and kills
  whatever is left of them when the test ends; :meth:`Env.run` runs a short
  command to its end with stdout and stderr apart;
- reads the log back: :meth:`Env.events` (split lines), :meth:`Env.lines`
  (typed by the app's line format), :meth:`Env.has`.

:class:`Hold` keeps one sync worker of a server busy (``GET /_test/hold/<gate>``
of :mod:`support.base_app`), so that every new connection goes to another one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from support import markers
from support.base_app import DIR_VARIABLE
from support.net import Response, http
from support.processes import Server, bin_path, environment, flask_run, gunicorn, kill_group, spawn
from support.waiting import wait_until

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
APPS = TESTS / "apps"

#: Seconds a process may take to start, or to stop when asked.
DEADLINE = 30.0

#: ``--exclude-patterns`` for ``flask run --debug``: the reloader watches every .py file
#: under ``sys.path``, this checkout included (the package is installed editable); only
#: the copied app, which a test edits on purpose, may make it reload.
RELOADER_EXCLUDE = f"{ROOT}{os.sep}*"


class Env:
    """An app of ``tests/apps/`` in a temporary directory, its log, and the processes a test started.

    ``app`` names ``tests/apps/<app>.py``; ``target`` is what ``flask --app``
    and gunicorn load (default: ``app``). ``fields`` converts the fields
    after the kind of a log line (``run <n> <pid>``: ``(int, int)``).
    ``copy`` names folders of the repository to copy next to the app.
    ``worker_env`` is added for :meth:`worker` only; ``env`` for every process.
    """

    def __init__(
        self,
        tmp_path: Path,
        app: str,
        *,
        target: str | None = None,
        fields: tuple[Callable[[str], Any], ...] = (int, int),
        log: str = "runs.log",
        copy: Iterable[str] = (),
        worker_env: Mapping[str, str] | None = None,
        **env: str,
    ) -> None:
        self.app = app
        self.target = target or app
        self.src = tmp_path / "src"
        self.src.mkdir()
        shutil.copy(APPS / f"{app}.py", self.src)
        for folder in copy:
            shutil.copytree(ROOT / folder, self.src / folder, ignore=shutil.ignore_patterns("__pycache__"))
        #: The data folder: the log, gate files, the instance folder.
        self.dir = tmp_path / "data"
        self.dir.mkdir()
        #: Where an app that keeps a SQLite journal keeps it (if it is told to).
        self.journal = self.dir / "journal.db"
        self.log = self.dir / log
        self.fields = fields
        self.worker_env = dict(worker_env or {})
        pythonpath = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        #: What every process gets on top of this process's environment.
        self.env: dict[str, str] = {DIR_VARIABLE: str(self.dir), "PYTHONPATH": os.pathsep.join(pythonpath), **env}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers: list[Server] = []

    # -- the data folder ----------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A file in the data folder."""
        return self.dir / name

    def open_gate(self, gate: str) -> None:
        """Let every job or request waiting for ``gate`` go on."""
        self.path(gate).touch()

    def events(self, kind: str | None = None) -> list[list[str]]:
        """The log's lines, split (only those of ``kind``, if given)."""
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        lines = (line.split() for line in text.splitlines())
        return [f for f in lines if f and (kind is None or f[0] == kind)]

    def lines(self, kind: str) -> list[tuple[Any, ...]]:
        """The fields of every ``<kind> ...`` line of the log, converted by :attr:`fields`."""
        n = len(self.fields)
        return [tuple(convert(value) for convert, value in zip(self.fields, f[1:], strict=False))
                for f in self.events(kind) if len(f) > n]

    def has(self, line: str) -> bool:
        """True if the log has exactly this line."""
        return self.log.exists() and line in self.log.read_text().splitlines()

    # -- processes ----------------------------------------------------------------------
    def popen(self, argv: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``src/``; its output goes to ``data/<name>.out``."""
        proc = spawn(argv, log_path=self.path(f"{name}.out"), cwd=self.src, env={**self.env, **env})
        self.procs.append(proc)
        return proc

    def output(self, name: str) -> str:
        """What process ``name`` wrote so far."""
        try:
            return self.path(f"{name}.out").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def python(self, name: str, code: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """``python -c <code> [args]``."""
        return self.popen([sys.executable, "-c", code, *args], name, **env)

    def main(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """``python -c "import <app>; <app>.main()" [args]``."""
        return self.python(name, f"import {self.app}; {self.app}.main()", *args, **env)

    def worker(self, name: str, *args: str, prefix: tuple[str, ...] = (), wait: bool = True,
               **env: str) -> subprocess.Popen[bytes]:
        """``[prefix] flask --app <target> memqueue worker [args]``; with ``wait``, once it says it runs."""
        argv = [*prefix, str(bin_path("flask")), "--app", self.target, "memqueue", "worker", *args]
        proc = self.popen(argv, name, **{**self.worker_env, **env})
        if wait:
            wait_until(lambda: f"memqueue worker {proc.pid}: running" in self.output(name) or proc.poll() is not None,
                       DEADLINE, lambda: f"{name} to start: {self.output(name)}")
            assert proc.poll() is None, self.output(name)
        return proc

    def run(self, argv: list[str], timeout: float = DEADLINE, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a short command in ``src/`` to its end, stdout and stderr captured apart
        (for the tests of a command's exact output)."""
        markers.require(markers.PROCESSES, f"runs {Path(argv[0]).name}")
        return subprocess.run(argv, cwd=self.src, env=environment({**self.env, **env}), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self, proc: subprocess.Popen[bytes], name: str, signum: signal.Signals = signal.SIGTERM) -> None:
        """Send ``signum`` (SIGTERM) and check the process exits with 0."""
        proc.send_signal(signum)
        assert proc.wait(DEADLINE) == 0, self.output(name)

    def flask_run(self, name: str = "server", *, app: str | None = None, env: Mapping[str, str] | None = None,
                  **kwargs: Any) -> Server:
        """:func:`support.processes.flask_run` of ``app`` (default ``target``) from ``src/``,
        output in ``data/<name>.out``."""
        server = flask_run(app or self.target, cwd=self.src, log_path=self.path(f"{name}.out"),
                           env={**self.env, **(env or {})}, **kwargs)
        self.servers.append(server)
        return server

    def gunicorn(self, name: str = "gunicorn", *, app: str | None = None, env: Mapping[str, str] | None = None,
                 **kwargs: Any) -> Server:
        """:func:`support.processes.gunicorn` of ``app`` (``module:variable``; default ``target``)
        from ``src/``, output in ``data/<name>.out``."""
        server = gunicorn(app or self.target, cwd=self.src, log_path=self.path(f"{name}.out"),
                          env={**self.env, **(env or {})}, **kwargs)
        self.servers.append(server)
        return server

    def cleanup(self) -> None:
        """Kill what is left of every process and server the test started (their whole groups)."""
        for server in self.servers:
            server.stop()
        for proc in self.procs:
            kill_group(proc)


#: The statuses a job ends in.
FINISHED = ("succeeded", "failed", "cancelled")


def finished_job(server: Server, job_id: str, headers: Mapping[str, str] | None = None,
                 timeout: float = DEADLINE) -> dict[str, Any]:
    """``GET /memqueue/jobs/<id>`` until the job has finished, and return it.

    A job's last log line is written before the job returns, so its outcome
    is recorded a moment after a test saw that line: a test that checks the
    outcome waits for it here instead of racing the consumer.
    """

    def finished() -> dict[str, Any] | None:
        r = http("GET", f"{server.url}/memqueue/jobs/{job_id}", headers=headers)
        assert r.status == 200, r.text
        job: dict[str, Any] = r.json()
        return job if job["status"] in FINISHED else None

    return wait_until(finished, timeout, lambda: f"job {job_id} to finish: {server.describe()}")


def edit_source(path: Path) -> None:
    """Change a file as an editor would: new content, and an mtime that surely moved on
    (so the reloader sees it even on a file system with a coarse clock)."""
    before = path.stat().st_mtime
    with path.open("a") as f:
        f.write("\n# edited by the test\n")
    later = max(path.stat().st_mtime, before + 1)
    os.utime(path, (later, later))


class Hold:
    """A request that keeps one sync worker of ``server`` busy until its gate opens.

    A sync worker serves one request at a time, so while one holds, every
    new connection goes to another worker: that makes which worker serves a
    request certain, where otherwise it is the kernel's choice.
    """

    def __init__(self, server: Server, env: Env, gate: str, timeout: float = DEADLINE) -> None:
        self.env = env
        self.gate = gate
        self.timeout = timeout
        self.response: Response | OSError | None = None
        self.thread = threading.Thread(target=self._run, args=(f"{server.url}/_test/hold/{gate}",), daemon=True)
        self.thread.start()
        held = wait_until(lambda: [int(f[2]) for f in env.events("held") if f[1:2] == [gate]], timeout,
                          lambda: f"a worker to take the hold {gate}: {server.describe()}")
        #: The pid of the worker held.
        self.pid = held[0]

    def _run(self, url: str) -> None:
        try:
            self.response = http("GET", url, timeout=self.timeout + 5)
        except OSError as exc:  # reported by release(), not lost in this thread
            self.response = exc

    def open(self) -> None:
        """Open the gate and wait for the request to end (a test's cleanup: nothing checked)."""
        self.env.open_gate(self.gate)
        self.thread.join(self.timeout)

    def release(self) -> None:
        """Open the gate and check that the held request came back with 200."""
        self.open()
        assert not self.thread.is_alive(), "the held request did not come back"
        assert isinstance(self.response, Response) and self.response.status == 200, self.response
