"""The child processes of one app's isolated jobs: a pool of warm children, and one job's run in one.

**Why subprocess and JSON lines, not multiprocessing.** A child is a fresh
interpreter, ``python -m flask_memqueue.runtime.child`` (as the "spawn"
context makes, never a fork of a process that runs threads and holds
locks), talking over two pipes of its own. ``multiprocessing`` would pickle
its own messages (the project sends nothing pickled across a process
boundary) and would add its resource tracker and feeder threads; here the
protocol is a handful of JSON lines (:mod:`flask_memqueue.runtime.child`),
the arguments and the result cross as JSON, and the parent end of a pipe
closing is how a child learns that its parent died, whatever killed it.

**The pool** (:class:`Children`): a consumer thread that runs an isolated
job borrows a warm child (or starts one: the app's import, once) and gives
it back when the job is done, so with N threads on an isolated task's queue
N children run at once, and at most as many children live as threads ever
ran isolated jobs at the same time. A child is replaced after
``MEMQUEUE_MAX_JOBS_PER_CHILD`` jobs (what a job leaks dies with it), after a
job that ran out of memory, and whenever it was killed (time limit, abort)
or died. Shutdown stops the idle children (their request pipe closes; those
that do not end within a second are killed); a child still running a job
then ends with its process (its pipe closes).

**One job** (:meth:`Children.run`, in the consumer thread, inside the job's
app context): the request goes to the child, the thread waits for answers
with ``poll``: progress is recorded on the job here
(``job.set_progress``, so the store and the dashboard see it as for a thread
job), an abort asked (``job.abort_requested``) is passed on and, past
``MEMQUEUE_GRACE_PERIOD``, ends in a kill; the time limit is a hard kill
(SIGTERM to the child's process group, SIGKILL after the grace period). A
child that dies fails the job with :class:`~flask_memqueue.ChildProcessDied`
naming the signal.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import ChildProcessDied, IsolatedJobError, IsolationError, JobAborted, TimeLimitExceeded
from ..hooks import Hook
from ..isolation import run_isolated, runs_isolated
from ..options import show_bytes
from .appref import AppRef
from .limits import limit_of, seconds

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

    from ..config import Config
    from ..job import Job

logger = logging.getLogger("flask_memqueue")

#: Seconds a new child may take to import and build the app before it is given up.
START_TIMEOUT = 60.0
#: How often a waiting thread looks at its job's abort request, in seconds.
ABORT_CHECK = 0.05
#: Seconds a stopped idle child has to exit before it is killed.
STOP_TIMEOUT = 1.0


class ChildProcess:
    """One child process and its two pipes (the parent's ends)."""

    def __init__(self, ref: AppRef, config: Config) -> None:
        import subprocess  # here: a process without isolated tasks never loads it

        req_r, req_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        ans_r, ans_w = os.pipe()
        env = dict(os.environ)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # address space, which memory_limit counts: fewer malloc arenas
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flask_memqueue.runtime.child", str(req_r), str(ctl_r), str(ans_w)],
                pass_fds=(req_r, ctl_r, ans_w), start_new_session=True, env=env, cwd=os.getcwd(),
            )
        except BaseException:
            for fd in (req_w, ctl_w, ans_r):
                os.close(fd)
            raise
        finally:
            for fd in (req_r, ctl_r, ans_w):
                os.close(fd)
        self.pid = self.proc.pid
        self._out = os.fdopen(req_w, "wb")
        self._ctl = os.fdopen(ctl_w, "wb")
        self._in = ans_r
        self._poll = select.poll()
        self._poll.register(ans_r, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._buffer = b""
        self._closed = False
        #: Jobs this child has run.
        self.jobs = 0
        #: False once it must not run another job (killed, died, out of memory, or used up).
        self.reusable = True
        self._ref = ref

    def start(self) -> None:
        """Say hello, wait for the child's ready answer; raise :class:`IsolationError` with its reason if it
        failed (the child is gone then)."""
        ended = False
        try:
            self.send({"op": "hello", "ref": self._ref.to_json(), "sys_path": list(sys.path)})
            answer = self.receive(time.monotonic() + START_TIMEOUT)
        except (OSError, EOFError):  # it ended before it answered
            answer, ended = None, True
        if answer is None or answer.get("op") != "ready":
            why = f"it {self.exit_reason()}" if ended else f"no answer within {START_TIMEOUT:g} s"
            self.kill()
            if answer is None:
                raise IsolationError(f"the child process {self.pid} of isolated jobs did not start: {why}")
            raise IsolationError(str(answer.get("message")))

    def send(self, message: dict[str, Any], *, control: bool = False) -> None:
        """One JSON line to the child: a request, or (``control``) an abort for its watcher."""
        out = self._ctl if control else self._out
        out.write(json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n")
        out.flush()

    def receive(self, deadline: float | None) -> dict[str, Any] | None:
        """The next answer, or None at the deadline; raises :class:`EOFError` when the child's end closed."""
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poll.poll(None if wait is None else int(wait * 1000) + 1):
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            chunk = os.read(self._in, 65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def exit_reason(self) -> str:
        """How the child ended, once it has: ``killed by signal SIGSEGV (Segmentation fault)``."""
        import subprocess

        try:
            code = self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by signal {name} ({signal.strsignal(-code)})"
        return f"exited with code {code}"

    def terminate(self, grace: float) -> None:
        """SIGTERM to the child's process group, SIGKILL after ``grace`` seconds if it still runs."""
        import subprocess

        self.reusable = False
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.reusable = False
        self._signal(signal.SIGKILL)
        self.proc.wait()
        self.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """Close the request pipe (the child exits); kill it if it does not within :data:`STOP_TIMEOUT`."""
        import subprocess

        self.reusable = False
        self.close()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for close in (self._out.close, self._ctl.close, lambda: os.close(self._in)):
            try:
                close()
            except OSError:
                pass

    def alive(self) -> bool:
        return self.proc.poll() is None


class Children:
    """The warm children of one app in this process (a room of :class:`~flask_memqueue.state.AppQueue`)."""

    def __init__(self, app: Flask, config: Config) -> None:
        self.app = app
        self.config = config
        #: How a child rebuilds the app: set by ``init_app`` (:func:`~flask_memqueue.runtime.appref.find_app_ref`).
        self.app_ref: AppRef | None = None
        self._lock = threading.Lock()
        self._idle: list[ChildProcess] = []
        self._busy: set[ChildProcess] = set()
        self._closed = False
        self._pid = os.getpid()
        #: Children started so far, and jobs run in them (``/stats``).
        self.started = 0
        self.jobs = 0

    def after_fork(self) -> None:
        """In a forked process: close the inherited ends of the parent's children's pipes (so that
        they see their parent's end close when it dies), never touching the children themselves."""
        for child in (*self._idle, *self._busy):
            child.close()
        self._idle, self._busy = [], set()

    def pids(self) -> list[int]:
        """The pids of the children alive now (tests, ``/stats``)."""
        with self._lock:
            return [c.pid for c in (*self._idle, *self._busy)]

    def acquire(self) -> ChildProcess:
        with self._lock:
            if self._pid != os.getpid():  # a forked process owns none of its parent's children
                self._idle, self._busy, self._pid = [], set(), os.getpid()
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    self._busy.add(child)
                    return child
        ref = self.app_ref
        if ref is None:
            raise IsolationError(f"an isolated job's child process cannot find the app {self.app.name!r}: init_app was"
                                 " called from no importable module or factory; set MEMQUEUE_ISOLATION_APP ="
                                 " 'package.module:create_app' (or 'package.module:app')")
        child = ChildProcess(ref, self.config)
        with self._lock:
            self.started += 1
            self._busy.add(child)
        try:
            child.start()
        except BaseException:
            with self._lock:
                self._busy.discard(child)
            raise
        return child

    def release(self, child: ChildProcess) -> None:
        with self._lock:
            self._busy.discard(child)
            keep = child.reusable and not self._closed and child.jobs < self.config.max_jobs_per_child
            if keep:
                self._idle.append(child)
        if not keep:
            if child.alive():
                child.stop()
            else:
                child.close()

    def stop(self) -> None:
        """Shutdown: stop every idle child; a busy one ends with its job (or with this process)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    # -- one job ------------------------------------------------------------------------------
    def run(self, job: Job[Any]) -> Any:
        """Run ``job`` in a child (see the module's text): its result, or its error raised here."""
        request = _request(job)
        child = self.acquire()
        try:
            child.jobs += 1
            self.jobs += 1
            child.send(request)
            value, error = _Wait(self, child, job).answer()
        except BaseException:  # interrupted here (a time limit, an abort, a stop): its job must not run on
            if child.alive():
                child.kill()
            raise
        finally:
            self.release(child)
        if error is not None:
            raise error
        return value


def _request(job: Job[Any]) -> dict[str, Any]:
    memory = job.options.memory_limit or getattr(job.task, "memory_limit", None)
    request = {"op": "run", "id": job.id, "task": job.name, "args": list(job.args), "kwargs": job.kwargs or {},
               "attempt": job.attempts, "memory_limit": memory}
    try:
        json.dumps(request, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise IsolationError(f"the arguments of an isolated job cross to its child process as JSON, and {exc}"
                             " (pass ids, strings and numbers)") from None
    return request


class _Wait:
    """The consumer thread's wait for one job's answer: progress, abort, time limit, death."""

    def __init__(self, children: Children, child: ChildProcess, job: Job[Any]) -> None:
        self.child = child
        self.job = job
        self.grace = children.config.grace_period
        self.limit = limit_of(job, children.config)
        started = time.monotonic()
        self.deadline = None if self.limit is None else started + self.limit
        self.abort_sent = False
        self.force_at: float | None = None

    def answer(self) -> tuple[Any, BaseException | None]:
        """``(result, None)``, or ``(None, the job's error)`` with the child alive and well; raises
        when the child was killed (time limit, abort) or died."""
        while True:
            now = time.monotonic()
            self._check_abort(now)
            wake = min(t for t in (self.deadline, self.force_at, now + ABORT_CHECK) if t is not None)
            try:
                message = self.child.receive(wake)
            except EOFError:
                raise self._died() from None
            if message is None:
                self._past(time.monotonic())
                continue
            op = message.get("op")
            if op == "progress":
                self.job.set_progress(message["value"], message.get("message"))
            elif op == "result":
                return message.get("value"), None
            elif op == "error":
                return None, self._error(message)

    def _check_abort(self, now: float) -> None:
        if self.abort_sent or not self.job.abort_requested:
            return
        self.abort_sent = True
        self.force_at = now + self.grace
        try:
            self.child.send({"op": "abort", "id": self.job.id, "reason": self.job._outcome().abort}, control=True)
        except OSError:
            pass  # it died: the read says how

    def _past(self, now: float) -> None:
        job = self.job
        if self.deadline is not None and now >= self.deadline:
            logger.warning("isolated job %s (%s) exceeded its time limit of %s s; killing its child process %d",
                           job.id, job.name, seconds(self.limit or 0), self.child.pid)
            self.child.terminate(self.grace)
            raise TimeLimitExceeded(f"time limit of {seconds(self.limit or 0)} s exceeded (its child process"
                                    f" {self.child.pid} was killed)")
        if self.force_at is not None and now >= self.force_at:
            logger.warning("isolated job %s (%s) still ran %s s after its abort; killing its child process %d",
                           job.id, job.name, seconds(self.grace), self.child.pid)
            self.child.terminate(self.grace)
            raise JobAborted(f"aborted: {job._outcome().abort} (its child process {self.child.pid} was killed)")

    def _died(self) -> BaseException:
        child, job = self.child, self.job
        child.reusable = False
        reason = child.exit_reason()
        child.close()
        if job.abort_requested:
            return JobAborted(f"aborted: {job._outcome().abort} (its child process {child.pid} {reason})")
        memory = job.options.memory_limit or getattr(job.task, "memory_limit", None)
        hint = f"; it may have run out of memory (its memory_limit is {show_bytes(memory)})" if memory else ""
        logger.error("the child process %d of isolated job %s (%s) died: %s", child.pid, job.id, job.name, reason)
        return ChildProcessDied(f"the child process {child.pid} running job {job.id} ({job.name}) {reason}{hint}")

    def _error(self, message: dict[str, Any]) -> BaseException:
        job = self.job
        if message.get("memory"):
            self.child.reusable = False  # what ran out may have left it in a bad state
        name = str(message.get("name") or "Exception")
        text = str(message.get("message") or "")
        if message.get("memory"):
            memory = job.options.memory_limit or getattr(job.task, "memory_limit", None)
            if memory:
                text = f"{text} (memory_limit of {show_bytes(memory)} reached)".strip()
        attrs = {"__module__": "flask_memqueue.exceptions", "__qualname__": name,
                 "child_type": str(message.get("type") or name), "child_traceback": str(message.get("traceback") or "")}
        kind: type[IsolatedJobError] = type(name, (IsolatedJobError,), attrs)
        exc = kind(text)
        # a note (what add_note() sets; typed for Python 3.10 too): the job's traceback shows the child's
        exc.__dict__["__notes__"] = ["in the isolated job's child process:\n" + exc.child_traceback.rstrip()]
        return exc


class Isolation(Hook):
    """Refuses, at enqueue, the arguments of an isolated job that JSON cannot carry; runs a call that
    asked ``.options(isolated=True)`` of a task that is not isolated in a child."""

    def on_enqueue(self, app: Flask, job: Job[Any]) -> None:
        if runs_isolated(job):
            try:
                json.dumps([job.args, job.kwargs], allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"task {job.name!r} runs isolated: its arguments cross to the child process as"
                                f" JSON, and {exc} (pass ids, strings, numbers, lists and dicts)") from None

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        if job.options.isolated and not getattr(job.task, "isolated", False):
            return run_isolated(job)
        return call()


__all__ = ["ChildProcess", "Children", "Isolation"]
