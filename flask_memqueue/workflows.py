"""Workflows: chains, groups, chords and ``depends_on=``, built on call objects (``task.s()``).

A workflow is a batch of jobs and the links between them (a
:class:`~flask_memqueue.storage.Link`: this child waits on that parent). The
app's queue hands the batch to its store in one atomic step
(:meth:`Storage.put_workflow <flask_memqueue.storage.Storage.put_workflow>`);
from then on the store alone decides: a child is ``deferred`` until each of
its parents succeeded, and is released (or cancelled, when a parent failed for
good or was cancelled) in the same atomic step that records the outcome of its
last parent. Nothing here runs in the consumer, and nothing polls.

- :class:`Chain` (``mq.chain(a.s(1), b.s(), c.s())``): each link waits on the
  previous one and gets its result as its first positional argument (unless
  it is ``task.si(...)``).
- :class:`GroupCall` (``mq.group(a.s(1), a.s(2))``): members run in parallel;
  ``.delay()`` returns a :class:`Group` handle.
- :class:`Chord` (``mq.chord(group, callback.s())``): the callback waits on every
  member and gets the list of their results, in member order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from .exceptions import JobFailed
from .job import Job, Step, group_status, wait_timeout
from .task import Call

R = TypeVar("R")

#: What ``Group.status`` says once every member finished; while any waits or runs it
#: says ``"queued"`` (none has started yet) or ``"running"`` (at least one has).
GROUP_FINAL = ("succeeded", "failed", "cancelled")


class Submitter(NamedTuple):
    """What a workflow needs of the extension: its queue's ``enqueue_workflow`` and group lookup."""

    enqueue: Callable[[list[Step]], tuple[list[Job], list[str]]]
    get_group: Callable[[str], Group | None]


def _call(step: Any, where: str) -> Call[Any]:
    if not isinstance(step, Call):
        raise TypeError(
            f"{where} takes call objects, like resize.s('a.png') or report.si(), not {step!r}"
            " (a task's .s(...) makes one)"
        )
    return step


def _step(call: Call[Any], after: tuple[int, ...] = (), bind: str | None = None,
          positions: tuple[int, ...] = (), group: int | None = None) -> Step:
    return Step(call.task, call.args, dict(call.kwargs) or None, call.job_options, after, positions, bind, group)


class Chain(Generic[R]):
    """``mq.chain(a.s(1), b.s(), c.s(x=2))``: a, then b with a's result first, then c with b's.

    ``.delay()`` queues the whole chain in one step of the store and returns the
    last link's :class:`~flask_memqueue.Job`: its ``wait()`` waits for the whole
    chain and returns the last result. A link made with ``task.si(...)`` ignores
    the previous result. A link that fails for good cancels the links after it,
    each with the error ``dependency <id> (<task>) failed: <error>``.
    """

    __slots__ = ("calls", "_submitter")

    def __init__(self, submitter: Submitter, calls: Sequence[Call[Any]]) -> None:
        if not calls:
            raise ValueError("mq.chain() needs at least one call, like mq.chain(fetch.s(url), parse.s())")
        self.calls: tuple[Call[Any], ...] = tuple(_call(c, "mq.chain()") for c in calls)
        self._submitter = submitter

    def steps(self) -> list[Step]:
        first = self.calls[0]
        first.task.check_call(first.args, first.kwargs)  # the first link gets no result: its call is whole
        out = [_step(first)]
        for i, call in enumerate(self.calls[1:], start=1):
            if call.immutable:
                out.append(_step(call, (i - 1,), None, (-1,)))
            else:
                out.append(_step(call, (i - 1,), "first", (0,)))
        return out

    def delay(self) -> Job[R]:
        """Queue the chain; returns the last link's Job.

        :raises QueueFull: the chain's jobs do not all fit (none was queued).
        :raises TypeError: a link's task could not take its arguments (with the previous result first).
        """
        jobs, _ = self._submitter.enqueue(self.steps())
        return jobs[-1]

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.calls))})"


class GroupCall:
    """``mq.group(a.s(1), a.s(2), ...)``: members that run in parallel. ``.delay()`` returns a :class:`Group`."""

    __slots__ = ("calls", "_submitter")

    def __init__(self, submitter: Submitter, calls: Sequence[Call[Any]]) -> None:
        if not calls:
            raise ValueError("mq.group() needs at least one call, like mq.group(resize.s('a.png'), resize.s('b.png'))")
        self.calls: tuple[Call[Any], ...] = tuple(_call(c, "mq.group()") for c in calls)
        self._submitter = submitter

    def steps(self) -> list[Step]:
        for call in self.calls:
            call.task.check_call(call.args, call.kwargs)
        return [_step(call, group=0) for call in self.calls]

    def delay(self) -> Group:
        """Queue every member in one step of the store; returns the :class:`Group` handle.

        :raises QueueFull: the members do not all fit (none was queued).
        """
        jobs, groups = self._submitter.enqueue(self.steps())
        return Group(groups[0], jobs, self._submitter.get_group)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.calls))})"


class Chord(Generic[R]):
    """``mq.chord(mq.group(...), callback.s())``: the callback runs once every member
    succeeded, with the list of their results (in member order) as its first argument.

    ``.delay()`` returns the callback's :class:`~flask_memqueue.Job`. A member that
    fails for good cancels the callback (``dependency <id> (<task>) failed: <error>``);
    the other members still run. The results the callback needs are kept (beside
    the members' records) until it has been released, whatever
    ``MEMQUEUE_MAX_FINISHED`` and ``MEMQUEUE_RESULT_TTL`` say.
    """

    __slots__ = ("group", "callback", "_submitter")

    def __init__(self, submitter: Submitter, group: GroupCall, callback: Call[R]) -> None:
        if not isinstance(group, GroupCall):
            raise TypeError(f"mq.chord() takes a group first, like mq.chord(mq.group(...), total.s()), not {group!r}")
        self.group = group
        self.callback = _call(callback, "mq.chord()")
        self._submitter = submitter

    def steps(self) -> list[Step]:
        members = self.group.steps()
        n = len(members)
        callback = self.callback
        if callback.immutable:
            last = _step(callback, tuple(range(n)), None, (-1,) * n)
        else:
            last = _step(callback, tuple(range(n)), "list", tuple(range(n)))
        return [*members, last]

    def delay(self) -> Job[R]:
        """Queue the members and the callback in one step of the store; returns the callback's Job."""
        jobs, _ = self._submitter.enqueue(self.steps())
        return jobs[-1]

    def __repr__(self) -> str:
        return f"chord({self.group!r}, {self.callback!r})"


class Group:
    """A queued group (``mq.group(...).delay()``, ``mq.get_group(id)``): its members, in order.

    :attr:`status` and :meth:`results` read the members' current state from the
    store, so a handle read back in another process (``mq.get_group(id)``) sees
    what the first one sees.
    """

    __slots__ = ("id", "_jobs", "_lookup")

    def __init__(self, group_id: str, jobs: list[Job], lookup: Callable[[str], Group | None]) -> None:
        #: The group's id (``mq.get_group(id)`` finds it in any process of the app).
        self.id = group_id
        self._jobs = list(jobs)
        self._lookup = lookup

    @property
    def jobs(self) -> list[Job]:
        """The members' Jobs, in member order, as the store holds them now."""
        again = self._lookup(self.id)
        if again is not None and len(again._jobs) == len(self._jobs):
            self._jobs = again._jobs
        return list(self._jobs)

    @property
    def status(self) -> str:
        """``"succeeded"`` (every member did), ``"failed"`` (one failed for good) or
        ``"cancelled"`` (none failed, one was cancelled) once every member finished;
        while any waits or runs, ``"running"`` if one has started (or finished), else ``"queued"``."""
        return group_status(self.jobs)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Wait for every member; their results in member order.

        :raises JobFailed: for the first member (in member order) that failed or was
            cancelled, with that job attached (``exc.job``).
        :raises TimeoutError: not all finished within ``timeout`` seconds (as for
            :meth:`Job.wait`: ``float("inf")`` waits without end, NaN is a ValueError).
        """
        limit = wait_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        out = []
        for job in self._jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out.append(job.wait(left))
            except TimeoutError:
                raise TimeoutError(f"group {self.id}: not every member finished within {timeout} s") from None
        return out

    def cancel(self) -> int:
        """Cancel every member that still waits (and what waits on them); returns how many were cancelled."""
        return sum(1 for job in self.jobs if not job.finished and job.cancel())

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        return f"<Group {self.id} of {len(self._jobs)} jobs>"


__all__ = ["GROUP_FINAL", "Chain", "Chord", "Group", "GroupCall", "JobFailed", "Step", "Submitter", "group_status"]
