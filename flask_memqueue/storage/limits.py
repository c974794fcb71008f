"""Rate and concurrency limits at claim time: what every store shares of them.

A job carries its limits in its options (:mod:`flask_memqueue.joblimits`):
``concurrency`` and the ``concurrency_key`` it counts against, ``rate_limit``
starts per ``rate_period`` seconds and its ``rate_key``. A store that declares
``capabilities.limits`` checks them when it claims: a job over a limit is
passed over (it stays ``queued``, no consumer thread holds it) and the claim
takes the next job, so jobs of other tasks are never blocked behind it.

- Concurrency: the jobs of one key that run (``running`` in the store) are
  counted; a slot is freed by whatever takes a job out of ``running`` (its
  outcome, a retry, an abort, the take-over of a dead process's job).
- Rate: a counter per key and **fixed window** (a multiple of the period since
  the epoch), raised by each claim; a window's count never passes the limit,
  so any sliding period sees at most twice the limit (a burst of one limit at
  a window's edge).

:class:`MemoryLimiter` is the memory store's bookkeeping (per app, one
process); the shared stores do it in their claim transaction or script.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..job import Job
    from ..options import JobOptions


def is_limited(options: JobOptions) -> bool:
    """Whether a job with ``options`` is checked against a limit when claimed."""
    return options.concurrency is not None or options.rate_limit is not None


def window_of(now: float, period: float) -> float:
    """The start of the fixed window that ``now`` falls in."""
    return math.floor(now / period) * period


@dataclass
class LimitUse:
    """One limit as ``GET /memqueue/limits`` shows it."""

    #: ``"concurrency"`` or ``"rate"``.
    kind: str
    #: The key jobs count against (``"<task>"`` or ``"<task>:<value>"``).
    key: str
    #: The limit: jobs at once, or starts per window.
    limit: int
    #: Running now (concurrency), or started in the current window (rate).
    in_use: int = 0
    #: Jobs that wait on it now (queued, passed over by claims).
    waiting: int = 0
    #: The window's length in seconds (rate limits only).
    period: float | None = None
    #: When the current window opened (Unix time; rate limits only).
    window: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "key": self.key, "task": self.key.split(":", 1)[0],
                               "limit": self.limit, "in_use": self.in_use, "waiting": self.waiting}
        if self.kind == "rate":
            out.update(period=self.period, window=self.window)
        return out


Entry = tuple[float, int, "Job"]


@dataclass
class MemoryLimiter:
    """The memory store's limits, under its lock.

    A limited job never sits in a lane's ready deques: it waits in the lane's
    ``scheduled`` heap (due at its enqueue time, so it keeps its place) and is
    checked by :meth:`admit` when it becomes due. Admitted, it counts as in use
    until it leaves ``running``; refused for concurrency it waits in its lane's
    ``held`` entries (no consumer looks at it) until :meth:`release` frees a slot
    of its key; refused for the rate it goes back to the heap, due when the
    next window opens (the consumer's nap ends then).
    """

    #: Jobs admitted (due or running) per concurrency key; a key at 0 is dropped.
    in_use: dict[str, int] = field(default_factory=dict)
    #: Per rate key: (window start, starts in it, limit, period).
    windows: dict[str, tuple[float, int, int, float]] = field(default_factory=dict)
    #: Concurrency limit last seen per key (for what /memqueue/limits shows).
    limits: dict[str, int] = field(default_factory=dict)
    #: Whether the store ever held a limited job.
    seen: bool = False

    def admit(self, entry: Entry, scheduled: list[Entry], held: dict[str, deque[Entry]], now: float) -> bool:
        """``entry``'s job (due now) may run: count it and return True. Otherwise keep it
        waiting (in ``held``, its lane's, or in ``scheduled`` until the next window) and return False."""
        job = entry[2]
        o = job.options
        ck = o.concurrency_key
        if o.concurrency is not None and ck is not None:
            self.limits[ck] = o.concurrency
            if self.in_use.get(ck, 0) >= o.concurrency:
                held.setdefault(ck, deque()).append(entry)
                return False
        if o.rate_limit is not None and o.rate_key is not None:
            period = o.rate_period or 1.0
            start = window_of(now, period)
            win = self.windows.get(o.rate_key)
            count = 0
            if win is not None and win[0] >= start:  # never back to an older window (a clock stepped back)
                start, count = win[0], win[1]
            if count >= o.rate_limit:
                heapq.heappush(scheduled, (start + period, entry[1], job))
                return False
            self.windows[o.rate_key] = (start, count + 1, o.rate_limit, period)
        if o.concurrency is not None and ck is not None:
            self.in_use[ck] = self.in_use.get(ck, 0) + 1
        return True

    def release(self, job: Job, helds: Iterable[dict[str, deque[Entry]]]) -> Entry | None:
        """``job`` (admitted) left running or waiting: free its slot, and take out and return
        the entry of the first job held for that key (in any lane of ``helds``), if any:
        it goes back to its lane's heap, due as it was."""
        ck = job.options.concurrency_key
        if job.options.concurrency is None or ck is None:
            return None
        n = self.in_use.get(ck, 0) - 1
        if n > 0:
            self.in_use[ck] = n
        else:
            self.in_use.pop(ck, None)
        best: deque[Entry] | None = None
        best_of: dict[str, deque[Entry]] | None = None
        for held in helds:
            d = held.get(ck)
            if d and (best is None or d[0][:2] < best[0][:2]):
                best, best_of = d, held
        if best is None or best_of is None:
            return None
        entry = best.popleft()
        if not best:
            del best_of[ck]
        return entry

    def uses(self, now: float, waiting: Iterable[Job]) -> list[LimitUse]:
        """Every limit with jobs running, waiting (``waiting``: the store's waiting jobs) or
        started in the current window."""
        return limit_uses(now, self.in_use, self.limits, self.windows, waiting_of(j.options for j in waiting))


def drop_held(job: Job, held: dict[str, deque[Entry]]) -> bool:
    """Remove ``job`` from the jobs ``held`` for a slot (a cancel); True if it was there."""
    ck = job.options.concurrency_key
    d = held.get(ck) if ck is not None else None
    if d:
        for i, entry in enumerate(d):
            if entry[2] is job:
                del d[i]
                if not d:
                    del held[ck]  # type: ignore[arg-type]
                return True
    return False


#: What :func:`limit_uses` is told of waiting jobs: (concurrency key, concurrency, rate key,
#: rate limit, rate period, how many jobs).
Waiting = tuple["str | None", "int | None", "str | None", "int | None", "float | None", int]


def waiting_of(options: Iterable[JobOptions]) -> list[Waiting]:
    """The :data:`Waiting` rows of these jobs' options, one per job."""
    return [(o.concurrency_key, o.concurrency, o.rate_key, o.rate_limit, o.rate_period, 1) for o in options]


def limit_uses(now: float, running: dict[str, int], limits: dict[str, int],
               windows: dict[str, tuple[float, int, int, float]], waiting: Iterable[Waiting]) -> list[LimitUse]:
    """The limits to show: ``running`` jobs per concurrency key (``limits``: each one's limit),
    ``windows`` per rate key (start, count, limit, period), and the waiting jobs."""
    conc: dict[str, LimitUse] = {}
    rate: dict[str, LimitUse] = {}
    for key, n in running.items():
        conc[key] = LimitUse("concurrency", key, limits.get(key, 0), n)
    for key, (start, count, limit, period) in windows.items():
        current = window_of(now, period)
        if start == current:
            rate[key] = LimitUse("rate", key, limit, count, 0, period, current)
    for ck, c, rk, r, per, n in waiting:
        if c is not None and ck is not None:
            use = conc.get(ck)
            if use is None:
                use = conc[ck] = LimitUse("concurrency", ck, c)
            use.limit = c
            use.waiting += n
        if r is not None and rk is not None:
            found = rate.get(rk)
            if found is None:
                p = per or 1.0
                found = rate[rk] = LimitUse("rate", rk, r, 0, 0, p, window_of(now, p))
            found.waiting += n
    return [conc[k] for k in sorted(conc)] + [rate[k] for k in sorted(rate)]


#: In a stored options object (JSON, keys sorted): a job with a limit has one of these.
LIMITED_MARKS = ('"concurrency":', '"rate_limit":')


def limited_text(options: str | None) -> bool:
    """Whether a job's stored options (JSON text) carry a limit."""
    return options is not None and (LIMITED_MARKS[0] in options or LIMITED_MARKS[1] in options)


__all__ = ["LIMITED_MARKS", "LimitUse", "MemoryLimiter", "drop_held", "is_limited", "limit_uses", "limited_text",
           "waiting_of", "window_of"]
