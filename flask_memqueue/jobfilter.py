"""One filter of jobs for every place that finds them: ``GET /memqueue/jobs``, the bulk
actions (``POST /memqueue/jobs/retry|cancel|delete``), the dashboard's search and
``flask memqueue retry|cancel|delete``.

A :class:`JobFilter` is plain values (a task name, a text, statuses, a queue, a time
range on the enqueue time), parsed once from query parameters, a JSON body or CLI
options by :func:`parse_filter`, which names the field and says what it takes. A
store is handed the filter whole (:meth:`Storage.find
<flask_memqueue.storage.base.Storage.find>`): a SQL store turns it into a ``WHERE``
clause, any other store applies :meth:`JobFilter.matches_values` to what it holds.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import MemQueueError
from .job import Job, JobStatus

#: The fields of a filter, as query parameters, JSON keys and CLI options (``--task``...).
FIELDS = ("task", "q", "status", "queue", "since", "until")
_STATUSES = tuple(s.value for s in JobStatus)
#: What a bulk action may do to the jobs a filter matches (see :meth:`Storage.act_on
#: <flask_memqueue.storage.base.Storage.act_on>`).
ACTIONS = ("retry", "cancel", "delete")


class FilterError(MemQueueError, ValueError):
    """A job filter field has a value that cannot work (HTTP 400); the message names it."""


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to list or act on; every field set must match (None: any).

    :param task: the task's registered name, exactly.
    :param q: text found (ASCII case ignored) in the job's arguments as JSON, or in its error.
    :param statuses: one of these statuses.
    :param queue: the named queue.
    :param since: enqueued at or after this Unix time.
    :param until: enqueued at or before this Unix time.
    """

    task: str | None = None
    q: str | None = None
    statuses: tuple[str, ...] | None = None
    queue: str | None = None
    since: float | None = None
    until: float | None = None

    @property
    def empty(self) -> bool:
        """True if it matches every job."""
        return self == _ANY

    def needle(self) -> str | None:
        """:attr:`q` as it appears inside a JSON text (quotes and non-ASCII escaped), lower case."""
        if self.q is None:
            return None
        return json.dumps(self.q)[1:-1].lower()

    def matches_values(self, task: str, status: str, queue: str, enqueued_at: float, args_json: str,
                       kwargs_json: str | None, error: str | None) -> bool:
        """True if a job with these values matches (the arguments as their JSON text)."""
        if self.task is not None and task != self.task:
            return False
        if self.statuses is not None and status not in self.statuses:
            return False
        if self.queue is not None and queue != self.queue:
            return False
        if self.since is not None and enqueued_at < self.since:
            return False
        if self.until is not None and enqueued_at > self.until:
            return False
        if self.q is not None:
            needle = self.needle() or ""
            plain = self.q.lower()
            if not (needle in args_json.lower() or (kwargs_json is not None and needle in kwargs_json.lower())
                    or (error is not None and plain in error.lower())):
                return False
        return True

    def matches(self, job: Job) -> bool:
        """True if the filter matches ``job`` (its arguments as their JSON text): what a store
        does with :meth:`matches_values`, for jobs a caller holds (a group's members)."""
        searched = self.q is not None
        return self.matches_values(
            job.name, job.status.value, job.queue, job.enqueued_at,
            args_json(list(job.args)) if searched else "",
            args_json(job.kwargs) if searched and job.kwargs else None,
            job.error if searched else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The filter as the JSON body of a bulk action takes it (set fields only)."""
        out: dict[str, Any] = {}
        for name in ("task", "q", "queue", "since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.statuses is not None:
            out["status"] = ",".join(self.statuses)
        return out


_ANY = JobFilter()


def args_json(value: Any) -> str:
    """The JSON text a store that keeps records would hold for ``value`` (the memory store
    holds objects: anything JSON cannot take is shown by its ``repr``)."""
    try:
        return json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def parse_time(value: Any, field: str) -> float | None:
    """A Unix time from a number, a numeric string or an ISO 8601 text (a naive one is UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FilterError(f"filter {field!r}: give an ISO 8601 time or a Unix time, not {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            except ValueError:
                raise FilterError(
                    f"filter {field!r}: {value!r} is neither an ISO 8601 time (2026-01-31T12:00:00+00:00)"
                    " nor a Unix time (1767182400)"
                ) from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.timezone.utc)
            return when.timestamp()
    else:
        raise FilterError(f"filter {field!r}: give an ISO 8601 time or a Unix time, not {type(value).__name__}")
    if number != number or number in (float("inf"), float("-inf")):
        raise FilterError(f"filter {field!r}: {value!r} is not a time")
    return number


def _text(value: Any, field: str, limit: int = 500) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FilterError(f"filter {field!r}: give a text, not {type(value).__name__}")
    if len(value) > limit:
        raise FilterError(f"filter {field!r}: at most {limit} characters")
    if "\x00" in value:
        raise FilterError(f"filter {field!r}: a NUL character cannot be searched for")
    return value


def _statuses(value: Any) -> tuple[str, ...] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise FilterError(f"filter 'status': give a status or a list of them ({', '.join(_STATUSES)})")
    bad = [v for v in items if v not in _STATUSES]
    if bad:
        raise FilterError(f"filter 'status': {bad[0]!r} is not a status; use one of {', '.join(_STATUSES)}")
    return tuple(dict.fromkeys(items)) or None


def parse_filter(values: Mapping[str, Any], *, strict: bool = True) -> JobFilter:
    """A filter from query parameters, a JSON object or CLI options (``None`` or ``""``: unset).

    :param strict: refuse a key that is not a filter field (a JSON body); query
        strings pass ``False`` (they also carry ``limit``, ``offset``...).
    :raises FilterError: a field has a bad value, or (strict) an unknown key is given.
    """
    if not isinstance(values, Mapping):
        raise FilterError(f"a filter is a JSON object with the keys {', '.join(FIELDS)}")
    if strict:
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise FilterError(f"filter: unknown key {unknown[0]!r}; a filter takes {', '.join(FIELDS)}")
    since = parse_time(values.get("since"), "since")
    until = parse_time(values.get("until"), "until")
    if since is not None and until is not None and since > until:
        raise FilterError("filter: 'since' is after 'until', so no job could match")
    return JobFilter(
        task=_text(values.get("task"), "task"),
        q=_text(values.get("q"), "q"),
        statuses=_statuses(values.get("status")),
        queue=_text(values.get("queue"), "queue"),
        since=since,
        until=until,
    )


__all__ = ["ACTIONS", "FIELDS", "FilterError", "JobFilter", "args_json", "parse_filter", "parse_time"]
