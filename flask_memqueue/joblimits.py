"""Rate and concurrency limits of a task: what ``@mq.task(concurrency=..., rate_limit=...)`` means.

A limit is checked by the store when it claims a job (see :doc:`/limits`), so a
job over its limit never takes a consumer thread: it stays ``queued`` and the
claim passes over it to the next job. What the store needs is on the job's
options (stored fields of :class:`~flask_memqueue.options.JobOptions`): the
limit and the key the job counts against, computed here once, at enqueue, so
no other process computes anything (nor needs the task's code to).

- ``concurrency=N``: at most ``N`` jobs with the same key run at once. The key
  is the task's name, or ``"<task>:<value>"`` with ``concurrency_key=``: an
  argument's name (its value, as ``str()``) or a callable given the job's
  arguments.
- ``rate_limit="N/s"`` (``/m``, ``/h``): at most ``N`` jobs with the same key
  start per **fixed window** of one second (minute, hour) aligned on the
  Unix epoch, with ``rate_limit_key=`` as ``concurrency_key=``. A fixed window
  allows a burst: the last instant of one window and the first of the next
  may each see ``N`` starts, so a sliding window of the period sees at most
  ``2 N`` (the documented burst is ``N``), never more.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .exceptions import LimitError
from .hooks import Hook

if TYPE_CHECKING:
    from flask import Flask

    from .job import Job
    from .options import JobOptions

#: The periods a rate limit may name, in seconds.
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: A key's value (``str()`` of the argument or of what the callable returned) is cut to this length.
KEY_MAX = 200

KeySpec = Callable[..., Any] | str


def parse_rate(text: object, where: str) -> tuple[int, float]:
    """``"100/m"`` -> ``(100, 60.0)``; a :class:`LimitError` naming ``where`` otherwise."""
    if isinstance(text, str):
        count, slash, unit = text.strip().partition("/")
        unit = unit.strip().lower()
        if slash and count.strip().isdigit() and unit in PERIODS and int(count) > 0:
            return int(count), PERIODS[unit]
    raise LimitError(
        f"{where}: a rate limit is written 'N/s', 'N/m' or 'N/h' with N a whole number > 0"
        f" (at most N jobs start per second, minute or hour), not {text!r}"
    )


@dataclass(frozen=True)
class Limits:
    """A task's limits, checked when it was registered (one per limited task)."""

    task: str
    concurrency: int | None = None
    concurrency_key: KeySpec | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    rate_key: KeySpec | None = None

    @property
    def keyed(self) -> bool:
        """Whether a job's key depends on its arguments (computed at each enqueue)."""
        return self.concurrency_key is not None or self.rate_key is not None

    def base_options(self) -> dict[str, Any]:
        """The option fields every job of the task carries (its keys default to the task's name)."""
        out: dict[str, Any] = {}
        if self.concurrency is not None:
            out.update(concurrency=self.concurrency, concurrency_key=self.task)
        if self.rate_limit is not None:
            out.update(rate_limit=self.rate_limit, rate_period=self.rate_period, rate_key=self.task)
        return out

    def keyed_options(self, options: JobOptions, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                      func: Callable[..., Any]) -> JobOptions:
        """``options`` with the keys this call counts against (a call's own options kept)."""
        changes: dict[str, Any] = {}
        if self.concurrency_key is not None and options.concurrency is not None:
            changes["concurrency_key"] = self._key(self.concurrency_key, "concurrency_key", args, kwargs, func)
        if self.rate_key is not None and options.rate_limit is not None:
            changes["rate_key"] = self._key(self.rate_key, "rate_limit_key", args, kwargs, func)
        return options.replace(**changes) if changes else options

    def _key(self, spec: KeySpec, label: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
             func: Callable[..., Any]) -> str:
        if callable(spec):
            value = spec(*args, **(kwargs or {}))
        else:
            try:
                bound = inspect.signature(func).bind(*args, **(kwargs or {}))
            except TypeError as exc:
                raise TypeError(f"task {self.task!r}: {label}={spec!r}: {exc}") from None
            bound.apply_defaults()
            value = bound.arguments[spec]
        return f"{self.task}:{str(value)[:KEY_MAX]}"


def make_limits(task: str, func: Callable[..., Any], concurrency: object = None, concurrency_key: object = None,
                rate_limit: object = None, rate_limit_key: object = None) -> Limits | None:
    """The :class:`Limits` of a task as the decorator was given them, checked; None for none.

    :raises LimitError: a value that cannot work (the message names the task and the value).
    """
    if concurrency is None and rate_limit is None:
        for label, value in (("concurrency_key", concurrency_key), ("rate_limit_key", rate_limit_key)):
            if value is not None:
                limit = "concurrency" if label == "concurrency_key" else "rate_limit"
                raise LimitError(f"task {task!r}: {label}={value!r} needs {limit}= too (the limit it keys)")
        return None
    if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                    or concurrency < 1):
        raise LimitError(f"task {task!r}: concurrency must be a whole number >= 1 (jobs running at once),"
                         f" not {concurrency!r}")
    if concurrency is None and concurrency_key is not None:
        raise LimitError(f"task {task!r}: concurrency_key={concurrency_key!r} needs concurrency= too")
    if rate_limit is None and rate_limit_key is not None:
        raise LimitError(f"task {task!r}: rate_limit_key={rate_limit_key!r} needs rate_limit= too")
    count = period = None
    if rate_limit is not None:
        count, period = parse_rate(rate_limit, f"task {task!r}: rate_limit")
    return Limits(task, concurrency, _key_spec(task, func, "concurrency_key", concurrency_key), count, period,
                  _key_spec(task, func, "rate_limit_key", rate_limit_key))


def _key_spec(task: str, func: Callable[..., Any], label: str, spec: object) -> KeySpec | None:
    """A key given to the decorator: None, a callable, or the name of one of the function's arguments."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        try:
            names = inspect.signature(func).parameters
        except (TypeError, ValueError):  # a builtin without a signature: checked at enqueue
            return spec
        if spec in names:
            return spec
        raise LimitError(f"task {task!r}: {label}={spec!r} names no argument of the function"
                         f" (it takes {', '.join(names) or 'none'}); give an argument's name or a callable")
    raise LimitError(f"task {task!r}: {label} must be an argument's name or a callable of the task's"
                     f" arguments, not {spec!r}")


class LimitKeys(Hook):
    """Computes the key of each job of a task whose limit is per key (``concurrency_key=``,
    ``rate_limit_key=``) when it is enqueued, into the job's options. Installed once such
    a task is registered: tasks with a limit per task carry it in their own options."""

    def on_enqueue(self, app: Flask, job: Job[Any]) -> None:
        limits: Limits | None = getattr(job.task, "limits", None)
        if limits is not None and limits.keyed:
            job.options = limits.keyed_options(job.options, tuple(job.args), job.kwargs, job.task.func)


__all__ = ["PERIODS", "LimitKeys", "Limits", "make_limits", "parse_rate"]
