"""The scheduler: one guarded thread per app per process that queues periodic tasks' jobs.

Every process that runs an app's consumers (a gunicorn worker, the debug
reloader's serving child, ``flask memqueue worker``) also runs its schedule,
so there is no beat process to deploy, and exactly one job per tick is queued
however many processes do:

- **With a store that processes share** (the SQLite journal, Redis) every
  scheduler tries to claim each tick; the store claims it for one of them in
  the write that queues its job (:meth:`Storage.claim_tick
  <flask_memqueue.storage.Storage.claim_tick>`), and keeps the task's last
  claimed tick, so a tick is claimed once and never again, by any process.
- **With the memory store** processes share nothing, so one process of the
  app on the host holds the schedule: the one holding an exclusive
  ``flock`` on a file in the app's instance folder. The kernel releases it
  when that process dies (even by SIGKILL); the others try again at every
  tick, and one of them takes over within one tick. The holder writes each
  task's last tick to a small state file next to the lock *before* it queues
  the tick's job, so a successor never queues that tick again (a holder
  killed between the two loses that one tick: at most once, never twice).
  ``flock`` is shared across ``fork`` by the open file description, so a
  forked child closes its copy without unlocking (that would unlock the
  parent) and starts as a non-holder.

The thread sleeps until the next tick on an :class:`threading.Event` (stopping
is immediate) and is guarded like the consumers: its ident is recorded by
the queue, and a loop whose ident is not the recorded one exits.

**Catch-up.** A tick that comes while the scheduler thread runs is run; a
thread that wakes late queues each tick it overslept, up to
:data:`MAX_LATE_TICKS` (beyond that, a suspended machine: the latest only). A tick that
passed before the thread started is *missed*: with ``catch_up=True`` (the
default) the latest missed tick runs once if no process claimed it (its
last claimed tick is older), never a burst; with ``catch_up=False`` it is
skipped. A task the store has never seen is enrolled at its first start
without a run (nothing was missed yet).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .job import isotime
from .storage.base import TickInfo

if TYPE_CHECKING:
    from flask import Flask

    from .config import Config
    from .registry import Registry, Task
    from .storage.base import Storage

logger = logging.getLogger("flask_memqueue")

#: Seconds the scheduler sleeps at most (a task registered after it started is seen within it).
MAX_SLEEP = 60.0
#: After a step failed (the store is down), wait this long, doubling up to :data:`MAX_SLEEP`.
BACKOFF_FIRST = 0.1
#: A scheduler that wakes late (a busy machine) queues each tick it overslept, up to
#: this many; more than this (a suspended machine) is one run, for the latest tick.
MAX_LATE_TICKS = 10


class SchedulerHost(Protocol):
    """What the scheduler needs of its place (:class:`~flask_memqueue.runtime.scheduling.SchedulerPlace`)."""

    app: Flask
    config: Config
    registry: Registry
    lock: threading.Lock

    @property
    def storage(self) -> Storage: ...

    def enqueue_tick(self, task: Task[..., Any], tick: float) -> bool: ...

    def scheduler_exited(self, scheduler: Scheduler, ident: int, crashed: bool) -> None: ...


# -- the host lock (memory mode) ---------------------------------------------------------
_LOCKS: weakref.WeakSet[HostLock] = weakref.WeakSet()


class HostLock:
    """An exclusive ``flock`` on ``<instance folder>/memqueue-<app>.periodic.lock``: whoever holds
    it holds the app's schedule on this host. The state file beside it keeps each task's last tick.

    The lock is the kernel's: it goes with the process (SIGKILL included), and
    a holder that hangs keeps it (as a hung beat process would). Where
    ``fcntl`` is missing (Windows) every process believes it holds the lock,
    and says so in the log once.
    """

    def __init__(self, directory: str, app_name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", app_name) or "app"
        self.directory = directory
        #: The lock file.
        self.path = os.path.join(directory, f"memqueue-{safe}.periodic.lock")
        #: The last ticks, written by the holder (JSON: task name -> Unix time).
        self.state_path = os.path.join(directory, f"memqueue-{safe}.periodic.json")
        self._fd: int | None = None
        self._pid = os.getpid()
        #: Why the lock could not be tried (an unwritable instance folder), if it could not.
        self.error: str | None = None
        _LOCKS.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None and self._pid == os.getpid()

    def acquire(self) -> bool:
        """Take the lock if nobody holds it (never blocks); True if this process holds it."""
        if self.held:
            return True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            if self.error is None:
                self.error = "no fcntl here: every process of the app runs its own schedule"
                logger.warning("periodic tasks: %s", self.error)
            return True
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if self.error is None:
                logger.error("periodic tasks: cannot open the schedule's lock file %s: %s", self.path, exc)
            self.error = f"cannot open {self.path}: {exc}"
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another process
            os.close(fd)
            return False
        self.error = None
        self._fd, self._pid = fd, os.getpid()
        try:  # who holds it, for /periodic in the other processes
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self._pid}\n".encode(), 0)
        except OSError:
            pass
        return True

    def release(self) -> None:
        """Give the schedule up (shutdown): another process takes it at its next tick."""
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            try:
                os.ftruncate(fd, 0)  # no holder's pid left behind
            except OSError:
                pass
            os.close(fd)  # closing the last descriptor of the open file description unlocks it

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptor, never unlock it (it is the parent's lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def holder_pid(self) -> int | None:
        """The pid written by the process that holds the lock, if it is alive (any process may ask).

        A holder that ended cleanly erased it; one that was killed left it, and
        is seen dead (a reused pid would show a wrong holder until the next one writes).
        """
        if self.held:
            return os.getpid()
        try:
            with open(self.path, encoding="ascii") as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid  # not probed with flock: a probe could make a process taking over miss its tick

    def read_state(self) -> dict[str, float]:
        """The last ticks the holders wrote; empty if there is no (readable) state file."""
        try:
            with open(self.state_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        ticks = data.get("ticks") if isinstance(data, dict) else None
        if not isinstance(ticks, dict):
            return {}
        return {str(k): float(v) for k, v in ticks.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def write_state(self, ticks: dict[str, float]) -> None:
        """Replace the state file (a rename, so a reader never sees half of it)."""
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"ticks": ticks, "pid": os.getpid()}, f)
        os.replace(tmp, self.state_path)


def _forget_locks_in_child() -> None:
    for lock in list(_LOCKS):
        lock.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


# -- the scheduler ---------------------------------------------------------------------------
class Claim(NamedTuple):
    """What this process's scheduler last did for a task."""

    tick: float
    ran: bool
    at: float


class Scheduler:
    """One app's schedule in one process: a guarded thread that queues each tick's job."""

    def __init__(self, host: SchedulerHost) -> None:
        self.host = host
        #: The ident of the one thread legitimately running the loop, or None.
        self.ident: int | None = None
        #: That thread, once started.
        self.thread: threading.Thread | None = None
        #: True from a successful start until the loop exits.
        self.alive = False
        #: Threads started (1 + restarts).
        self.starts = 0
        #: Unix time the running thread started: ticks before it were missed.
        self.started_at: float | None = None
        #: Unix time of the next wake-up, while the thread sleeps.
        self.next_wake: float | None = None
        #: Why the last step failed (the store), while it fails.
        self.error: str | None = None
        #: This process's last claim per task.
        self.claims: dict[str, Claim] = {}
        shared = host.storage.capabilities.shared
        #: The host lock, with a store that processes do not share; None with a shared store.
        self.host_lock: HostLock | None = None if shared else HostLock(host.app.instance_path, host.app.name)
        self._known: dict[str, float] = {}  # last tick handled per task (claimed or seen claimed)
        self._stop = threading.Event()
        self._failures = 0

    # -- control ------------------------------------------------------------------------
    def reset(self) -> None:
        """Before a (re)start."""
        self._stop.clear()
        self._known.clear()

    def stop(self) -> None:
        """End the loop now (it sleeps on an Event); the thread gives the host lock up as it ends."""
        self._stop.set()

    def release(self) -> None:
        """Give the host lock up now (shutdown; the thread also does as it ends)."""
        if self.host_lock is not None:
            self.host_lock.release()

    def join(self, timeout: float | None) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def holds_schedule(self) -> bool | None:
        """In memory mode, whether this process holds the schedule; None with a shared store."""
        return None if self.host_lock is None else self.host_lock.held

    # -- the driver ---------------------------------------------------------------------
    def run(self) -> None:
        """The thread's body: a step, then sleep until the next tick; guarded by the thread ident."""
        host = self.host
        with host.lock:  # the starter records our ident under this lock
            me = threading.get_ident()
            if me != self.ident:
                return
        crashed = False
        try:
            self.started_at = time.time()
            while not self._stop.is_set() and self.ident == me:
                try:
                    wait = self.step(time.time())
                    if self._failures:
                        logger.warning("the periodic schedule of %r works again", host.app.name)
                    self._failures = 0
                    self.error = None
                except Exception as exc:
                    self._failures += 1
                    self.error = f"{type(exc).__name__}: {exc}"
                    if self._failures == 1:
                        logger.error("the periodic schedule of %r failed: %s; trying again", host.app.name, exc,
                                     exc_info=exc)
                    wait = min(MAX_SLEEP, BACKOFF_FIRST * 2.0 ** min(self._failures - 1, 20))
                self.next_wake = time.time() + wait
                self._stop.wait(wait)
        except BaseException:
            crashed = True
            logger.critical("the scheduler thread of %r stopped; the next request or enqueue starts a new one",
                            host.app.name, exc_info=True)
        finally:
            self.next_wake = None
            if self.host_lock is not None:
                self.host_lock.release()
            host.scheduler_exited(self, me, crashed)

    # -- one step ---------------------------------------------------------------------------
    def default_zone(self) -> _dt.tzinfo:
        from .schedule import resolve_timezone  # apps without periodic tasks never import it

        return resolve_timezone(self.host.config.timezone, "MEMQUEUE_TIMEZONE")

    def step(self, now: float) -> float:
        """Claim what is due at ``now``; return the seconds to sleep until the next tick.

        Public so that tests can drive a schedule without the thread.
        """
        host = self.host
        tasks = list(host.registry.periodic.values())
        default = self.default_zone()
        if tasks and self._may_schedule():
            last = host.storage.last_ticks()
            for task in tasks:
                self._tick(task, now, default, last.get(task.name))
        wake = MAX_SLEEP
        after = time.time()
        for task in tasks:
            assert task.periodic is not None
            nxt = task.periodic.schedule.next_after(after, task.periodic.zone(default))
            if nxt is not None:
                wake = min(wake, nxt - after)
        return max(0.0, wake)

    def _may_schedule(self) -> bool:
        """Shared store: always (the store arbitrates). Memory: while this process holds the host lock."""
        lock = self.host_lock
        if lock is None:
            return True
        if lock.held:
            return True
        if not lock.acquire():
            return False
        logger.info("process %d holds the periodic schedule of %r (%s)", os.getpid(), self.host.app.name, lock.path)
        for name, tick in lock.read_state().items():  # what the previous holders claimed
            self.host.storage.claim_tick(name, tick, None)
        return True

    def _tick(self, task: Task[..., Any], now: float, default: _dt.tzinfo, last: TickInfo | None) -> None:
        spec = task.periodic
        assert spec is not None
        zone = spec.zone(default)
        due = spec.schedule.latest(now, zone)
        if due is None:
            return
        known = self._known.get(task.name)
        if known is not None and due <= known:
            return
        if last is not None and last.tick >= due:
            self._known[task.name] = due  # claimed (by this or another process)
            return
        started = self.started_at if self.started_at is not None else now
        if known is not None:
            # This thread handled the task's previous tick, so every tick since came
            # while it ran: a late wake (a busy machine) queues each one it overslept.
            start = known if last is None else max(known, last.tick)
            for tick in self._overslept(spec.schedule, start, due, zone):
                self._claim(task, tick, run=True, started=started)
        elif last is None:
            self._claim(task, due, run=False, started=started)  # never scheduled before: enrol it, nothing missed
        elif due >= started:
            self._claim(task, due, run=True, started=started)  # the tick came while this scheduler ran
        elif spec.catch_up:
            self._claim(task, due, run=True, started=started)  # missed while no scheduler ran here: once
        # else: a missed tick, and no catch-up wanted
        # Handled only now: a claim that raised (the store is down) is tried again at the next step.
        self._known[task.name] = due

    @staticmethod
    def _overslept(schedule: Any, start: float, due: float, zone: _dt.tzinfo) -> list[float]:
        """The ticks after ``start`` up to ``due``; only ``due`` if more than :data:`MAX_LATE_TICKS`
        (a suspended machine: one run, never a burst)."""
        ticks: list[float] = []
        tick: float | None = start
        while len(ticks) <= MAX_LATE_TICKS:
            tick = schedule.next_after(tick, zone)
            if tick is None or tick > due:
                break
            ticks.append(tick)
        return ticks if len(ticks) <= MAX_LATE_TICKS else [due]

    def _claim(self, task: Task[..., Any], tick: float, *, run: bool, started: float) -> None:
        """Claim ``tick`` with a job (``run``) or without one (enrolment), the state file first."""
        self._persist(task.name, tick)
        if run:
            claimed = self.host.enqueue_tick(task, tick)
        else:
            claimed = self.host.storage.claim_tick(task.name, tick, None)
        if claimed:
            self.claims[task.name] = Claim(tick, run, time.time())
            if run and tick < started:
                logger.info("periodic task %s: one catch-up run for the missed tick %s", task.name, isotime(tick))

    def _persist(self, name: str, tick: float) -> None:
        """Memory mode: write the tick to the state file before its job is queued (at most once)."""
        lock = self.host_lock
        if lock is None or not lock.held:
            return
        state = lock.read_state()
        state[name] = max(tick, state.get(name, tick))
        lock.write_state(state)

    # -- introspection ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Each periodic task: its schedule, zone, next run, last run (and its job); who holds the schedule."""
        host = self.host
        default = self.default_zone()
        lock = self.host_lock
        last = host.storage.last_ticks()
        if lock is not None and not lock.held:  # another process holds it: its state file says more
            for name, tick in lock.read_state().items():
                if name not in last or last[name].tick < tick:
                    last[name] = TickInfo(tick, None, tick)
        now = time.time()
        tasks = []
        for name, task in sorted(host.registry.periodic.items()):
            spec = task.periodic
            assert spec is not None
            zone = spec.zone(default)
            claimed = last.get(name)
            job_status = None
            if claimed is not None and claimed.job_id is not None:
                job = host.storage.get(claimed.job_id)
                job_status = None if job is None else job.status.value
            nxt = spec.schedule.next_after(now, zone)
            tasks.append({
                "name": name,
                "schedule": spec.schedule.describe(),
                "kind": spec.schedule.kind,
                "timezone": (spec.timezone or host.config.timezone) if spec.schedule.uses_timezone else None,
                "catch_up": spec.catch_up,
                "queue": task.queue,
                "priority": task.priority,
                "next_run": isotime(nxt),
                "last_run": None if claimed is None else {
                    "tick": isotime(claimed.tick),
                    "job_id": claimed.job_id,
                    "status": job_status if claimed.job_id is not None else None,
                    "claimed_at": isotime(claimed.claimed_at),
                },
            })
        thread = self.thread
        return {
            "enabled": bool(host.config.periodic and not host.config.eager),
            "timezone": host.config.timezone,
            "mode": "host lock" if lock is not None else "shared store",
            "scheduler": {
                "alive": self.alive,
                "name": thread.name if thread is not None and self.alive else None,
                "ident": self.ident if self.alive else None,
                "pid": os.getpid(),
                "starts": self.starts,
                "next_wake": isotime(self.next_wake),
                "error": self.error or (lock.error if lock is not None else None),
                "holds_schedule": self.holds_schedule,
                "holder_pid": None if lock is None else lock.holder_pid(),
                "lock_file": None if lock is None else lock.path,
            },
            "tasks": tasks,
        }

