"""The child process of isolated jobs: ``python -m flask_memqueue.runtime.child REQ_FD CTL_FD ANSWER_FD``.

Started by :class:`~flask_memqueue.runtime.children.Children` (never by hand).
It speaks JSON lines over three pipes whose descriptors it is given (not its
stdin and stdout: those stay the parent's, so a job's ``print`` reaches the
same log as in a thread): requests, read by the main thread itself (no hop
through another thread on a job's way in); control (aborts), read by a
watcher thread; answers.

- the parent sends ``{"op": "hello", "ref": ..., "sys_path": [...]}`` once;
  the child rebuilds the app (:mod:`flask_memqueue.runtime.appref`) and answers
  ``{"op": "ready", "pid": ...}`` or ``{"op": "error", ...}`` and exits;
- then, one job at a time, ``{"op": "run", "id", "task", "args", "kwargs",
  "attempt", "memory_limit"}``; the child answers ``{"op": "progress",
  "value", "message"}`` any number of times, then ``{"op": "result",
  "value"}`` or ``{"op": "error", "type", "message", "traceback"}``;
- ``{"op": "abort", "id", "reason"}`` on the control pipe while a job runs
  turns its ``current_job.abort_requested`` true (the parent kills the child
  after the grace period if the job runs on).

When the parent's end of the control pipe closes (the parent exited, or was
killed with SIGKILL: the kernel closes its descriptors), the watcher kills the
child's process group at once, whatever the job is doing: no orphan outlives
its parent. (The main thread, idle in its read of the requests, sees the
same end of file and exits too.)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
import threading
import traceback
from typing import Any

from ..consumer import _cv_consumer
from ..exceptions import IsolationError
from . import appref
from .appref import AppRef, load_app


class ChildJob:
    """``current_job`` inside an isolated job: what the child knows of it."""

    def __init__(self, request: dict[str, Any], send: Any) -> None:
        self.id: str = request["id"]
        self.name: str = request["task"]
        self.args = tuple(request["args"])
        self.kwargs: dict[str, Any] = request["kwargs"] or {}
        self.attempts: int = request["attempt"]
        self._send = send
        self._abort: str | None = None

    @property
    def abort_requested(self) -> bool:
        """True once an abort of the job was asked (the parent said so)."""
        return self._abort is not None

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1) to the parent, which records it on the job."""
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            raise TypeError(f"progress must be a number between 0 and 1, not {fraction!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"progress must be a number between 0 and 1 (a fraction of the work), not {fraction!r}")
        self._send({"op": "progress", "value": value, "message": None if message is None else str(message)})

    def __repr__(self) -> str:
        return f"<ChildJob {self.id} {self.name}>"


class _Place:
    """Stands where a consumer stands for ``current_job`` (it reads ``.current``)."""

    current: ChildJob | None = None


class Child:
    """The loop of the child: requests in, answers out."""

    def __init__(self, req_fd: int, ctl_fd: int, answer_fd: int) -> None:
        self.reader = os.fdopen(req_fd, "rb")
        self.control = os.fdopen(ctl_fd, "rb")
        self.writer = os.fdopen(answer_fd, "wb")
        self.lock = threading.Lock()
        self.place = _Place()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self.lock:
            self.writer.write(line)
            self.writer.flush()

    def watch(self) -> None:
        """The watcher thread: an abort to the running job; the end of the control pipe: die now."""
        for raw in self.control:
            message = json.loads(raw)
            job = self.place.current
            if message.get("op") == "abort" and job is not None and job.id == message.get("id"):
                job._abort = str(message.get("reason") or "aborted")
        _die()

    def main(self) -> None:
        hello = json.loads(self.reader.readline() or b"{}")
        try:
            sys.path[:] = hello.get("sys_path") or sys.path
            appref.IN_CHILD = True  # MEMQUEUE_AUTOSTART starts nothing while the app is built
            app = load_app(AppRef(**hello["ref"]))
            queue_state = app.extensions.get("memqueue")
            if queue_state is None:
                raise IsolationError(f"the app {app.name!r} rebuilt in the child has no MemQueue (init_app)")
            _no_consumers(queue_state)
        except BaseException as exc:
            self.send({"op": "error", "type": "IsolationError", "message": str(exc) or repr(exc),
                       "traceback": traceback.format_exc()})
            raise SystemExit(1) from None
        self.send({"op": "ready", "pid": os.getpid()})
        threading.Thread(target=self.watch, name="memqueue-child-watcher", daemon=True).start()
        _cv_consumer.set(self.place)  # type: ignore[arg-type]  # current_job reads .current
        while True:
            raw = self.reader.readline()
            if not raw:
                _die()
            request = json.loads(raw)
            if request.get("op") == "run":
                self.send(self.run(app, queue_state, request))

    def run(self, app: Any, state: Any, request: dict[str, Any]) -> dict[str, Any]:
        task = _task(state, request["task"])
        job = self.place.current = ChildJob(request, self.send)
        limited = _limit_memory(request.get("memory_limit"))
        try:
            with app.app_context():
                result = task.func(*job.args, **job.kwargs)
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
            return {"op": "result", "value": _json_result(result)}
        except BaseException as exc:  # the job's: reported, the child lives on (unless out of memory)
            kind = type(exc)
            return {"op": "error", "type": f"{kind.__module__}.{kind.__qualname__}", "name": kind.__name__,
                    "message": str(exc), "traceback": traceback.format_exc(), "memory": isinstance(exc, MemoryError),
                    "aborted": job.abort_requested}
        finally:
            self.place.current = None
            if limited is not None:
                _restore_memory(limited)


def _task(state: Any, name: str) -> Any:
    tasks = state.registry.tasks
    task = tasks.get(name)
    if task is None and name.startswith("__main__."):  # a script's task, its module run as __mp_main__
        task = tasks.get("__mp_main__." + name[len("__main__."):])
    if task is None:
        raise IsolationError(f"the app rebuilt in the child process has no task {name!r}: register it where the"
                             " app is built (import its module in the factory or the app's module)")
    return task


def _json_result(result: Any) -> Any:
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise IsolationError(f"the result of an isolated job crosses to the parent as JSON, and {exc}") from None
    return result


def _no_consumers(state: Any) -> None:
    """The child runs the jobs it is sent, never a consumer or a schedule of its own; with a store only
    it would see (memory), a job it enqueued would be lost: refused instead."""
    import dataclasses

    state.config = dataclasses.replace(state.config, consumer=False, periodic=False, autostart=False)
    if not state.storage.capabilities.shared:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise IsolationError(
                "an isolated job cannot enqueue jobs with a store only its process sees (memory://): the child"
                " process has its own; use a shared store (MEMQUEUE_STORAGE), or enqueue from a job that is not"
                " isolated"
            )

        state.enqueue = refuse


def _limit_memory(limit: int | None) -> tuple[int, int] | None:
    if not limit:
        return None
    import resource

    old = resource.getrlimit(resource.RLIMIT_AS)
    hard = old[1]
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    return old


def _restore_memory(old: tuple[int, int]) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, old)


def _die() -> None:
    """The parent is gone: end this process and whatever the job started (its process group)."""
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    finally:
        os._exit(1)


def main(argv: list[str]) -> None:
    Child(int(argv[1]), int(argv[2]), int(argv[3])).main()


if __name__ == "__main__":
    main(sys.argv)
