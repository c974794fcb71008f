"""Owners: which process runs a claimed record, and whether it still lives.

A claimed record names its owner ``"<pid>:<start time>:<token>"``. A store on
one host tells a dead owner from a live one by its pid and its start time
(a pid may be reused; the pair is not); a store that spans hosts overrides
:meth:`DurableStorage._owner_alive <flask_memqueue.storage.durable.DurableStorage._owner_alive>`
(Redis: a lease). The take-over of a dead owner's jobs is
:meth:`DurableStorage.recover <flask_memqueue.storage.durable.DurableStorage.recover>`.
"""

from __future__ import annotations

import os


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (no /proc, gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot, or "" where /proc is missing."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


def process_alive(pid: int, start: str) -> bool:
    """True if process ``pid`` runs and is the one that started at ``start``.

    A zombie (killed, not yet reaped) is dead: it will never finish a job.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: it exists
        pass
    fields = _proc_stat(pid)
    if fields is None:
        # No /proc (macOS): trust the pid alone. On Linux: it died just now.
        return not os.path.exists("/proc/self/stat")
    if fields[0] in ("Z", "X"):
        return False
    return not start or fields[19] == start


def owner_of_this_process(token: str) -> str:
    """This process as the owner of the records it claims."""
    pid = os.getpid()
    return f"{pid}:{process_start_time(pid)}:{token}"


def parse_owner(owner: str) -> tuple[int, str] | None:
    """``(pid, start time)`` of an owner string, or None if it is not one."""
    pid, _, rest = owner.partition(":")
    start, _, _token = rest.partition(":")
    try:
        return int(pid), start
    except ValueError:
        return None


def owner_alive_here(owner: str) -> bool:
    """Whether the process ``owner`` names runs on this host (pid and start time)."""
    parsed = parse_owner(owner)
    return parsed is not None and process_alive(*parsed)


__all__ = ["owner_alive_here", "owner_of_this_process", "parse_owner", "process_alive", "process_start_time"]
