"""SIGTERM under the development server: say what becomes of the jobs, then die as before.

Gunicorn, waitress and ``flask memqueue worker`` turn SIGTERM into a normal
exit, so the interpreter's exit hook (``state._shutdown_all``) drains or
cancels every queue and logs it. The development server (``flask run``, and
the reloader's serving child of ``flask run --debug`` or ``app.run(debug=True)``)
does not handle SIGTERM: the process was killed on the spot, and the jobs still
waiting vanished without a word (issue 9, defect 9).

So in such a process, and only if nobody else handles SIGTERM (its handler is
still ``SIG_DFL``), :func:`install` sets a handler that, before the process
dies as it did before (default disposition, SIGTERM raised again):

- without a journal: marks every waiting job cancelled and logs them;
- with a journal: logs that the waiting jobs stay in it for the next start;
- either way: logs the job that was running, which is interrupted.

**Why a helper thread and two pipes.** A Python signal handler runs in the
main thread between two bytecodes, perhaps while that thread holds a lock
(a store's lock, a logging handler's lock, the lock ``Thread.start`` takes):
taking any lock in the handler could deadlock it. So the handler only writes
a byte to a pipe (no lock) and waits for a reply on another with
``select`` (no lock, bounded by :data:`GRACE` seconds). A thread started at
install time does the work, taking the locks in the ordinary way. If the
main thread itself holds one of them (only when it handles requests itself,
``--without-threads``, or enqueues), the helper blocks, the handler gives up
after :data:`GRACE` seconds and writes one line saying so to stderr (with
``os.write``: no lock), and the process dies as before.

``app.run()`` without the reloader is not covered: the extension cannot tell,
at ``init_app``, that the development server will follow. The README says so.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("flask_memqueue")

#: Seconds the handler waits for the jobs to be cancelled and logged.
GRACE = 5.0

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

# Per process: the pipes, the helper thread, and the handler we replaced.
_pid: int | None = None
_wake: tuple[int, int] | None = None
_done: tuple[int, int] | None = None
_previous: _Handler = None


def serves_with_dev_server() -> bool:
    """True in a process that serves with Werkzeug's development server.

    That is the reloader's serving child (``WERKZEUG_RUN_MAIN``: ``flask run
    --debug``, ``app.run(debug=True)``), or the ``flask run`` command itself
    (its app is loaded inside the command, so the click context names it).
    Not ``flask shell`` and other commands, and not the reloader's watcher.
    """
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return True
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        return False
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "run":
        return False
    reload = ctx.params.get("reload")
    if reload is None:  # as flask run decides it
        from flask.helpers import get_debug_flag

        reload = get_debug_flag()
    return not reload  # with the reloader this is the watcher; its serving child has WERKZEUG_RUN_MAIN


def install(stop_queues: Callable[[str], None]) -> bool:
    """Install the SIGTERM handler, once per process; True if it is installed now.

    Only from the main thread (Python allows no other) and only while
    SIGTERM has its default disposition: an app or server that handles it
    keeps its handler. ``stop_queues("SIGTERM")`` runs in the helper thread.
    """
    global _pid, _wake, _done, _previous
    if _pid == os.getpid():
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return False
    wake, done = os.pipe(), os.pipe()
    helper = threading.Thread(target=_helper, args=(wake[0], done[1], stop_queues),
                              name="memqueue-sigterm", daemon=True)
    helper.start()
    _pid, _wake, _done, _previous = os.getpid(), wake, done, previous
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _helper(wake: int, done: int, stop_queues: Callable[[str], None]) -> None:
    """Sleep until the handler writes a byte; then do the work with ordinary locks."""
    try:
        if not os.read(wake, 1):
            return
        try:
            stop_queues("SIGTERM")
        except Exception:  # pragma: no cover - the process dies next anyway
            logger.exception("SIGTERM: stopping the queues failed")
        os.write(done, b"\0")
    except OSError:  # pragma: no cover - pipes closed
        pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The handler: hand the work over, wait for it (bounded), then die of SIGTERM as before."""
    try:
        if _wake is not None and _done is not None and _pid == os.getpid():
            os.write(_wake[1], b"\0")
            ready, _, _ = select.select([_done[0]], [], [], GRACE)
            if not ready:
                os.write(2, (
                    f"flask-memqueue: SIGTERM: the waiting jobs could not be cancelled and logged within {GRACE:g} s"
                    " (the main thread holds a lock they need); the process ends without it\n"
                ).encode())
    finally:
        previous = _previous if _previous is not None else signal.SIG_DFL
        signal.signal(signal.SIGTERM, previous)
        if previous is signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGTERM)  # die of SIGTERM, exactly as without us
        elif callable(previous):
            previous(signum, frame)


def _after_fork_in_child() -> None:
    """A forked child has no helper thread: give it back the handler it replaced."""
    global _pid, _wake, _done, _previous
    if _pid is None:
        return
    try:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    except ValueError:  # pragma: no cover - not the main thread after all
        pass
    _pid = _wake = _done = None
    _previous = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
