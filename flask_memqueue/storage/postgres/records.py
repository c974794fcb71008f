"""Records as the table holds them, and the parameters of the statements that write them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..records import Record
from .statements import STATE_NAMES, Statements

#: A running job's progress as this process last knows it: ``(progress, message)``.
Progress = tuple[float | None, str | None]


@dataclass(slots=True)
class PostgresRecord(Record):
    """A record as the table holds it: also the progress a running job reported."""

    progress: float | None = None
    message: str | None = None


#: Where ``options`` sits in a row of ``statements.COLUMNS`` (after ``tick``).
_OPTIONS_AT = 18


def from_row(row: Sequence[Any]) -> PostgresRecord:
    """The record of a row of ``statements.COLUMNS``: ``options`` is keyword-only in
    :class:`Record` (so that subclasses build positionally), and is passed by name."""
    return PostgresRecord(*row[:_OPTIONS_AT], *row[_OPTIONS_AT + 1:], options=row[_OPTIONS_AT])


def insert_row(namespace: str, r: Record) -> tuple[Any, ...]:
    """The values of an insert, in ``statements.INSERT_COLUMNS`` order."""
    return (namespace, r.id, r.task, r.args, r.kwargs, r.status, r.enqueued_at, r.eta, r.queue,
            r.priority, r.unique_key, r.tick, r.options)


def state_values(r: Record, running: Progress | None) -> tuple[Any, ...]:
    """The state a write gives a job, in ``statements.STATE_NAMES`` order. ``running``: the
    progress of the job if it runs here (the object's, newer than any record)."""
    if running is not None:
        progress, message = running
    elif isinstance(r, PostgresRecord):
        progress, message = r.progress, r.message
    else:
        progress = message = None
    return (r.status, r.attempts, r.eta, r.started_at, r.finished_at, r.result, r.error, r.traceback,
            r.owner, progress, message)


def save_params(r: Record, running: Progress | None, *, namespace: str, owner: str,
                done_channel: str) -> dict[str, Any]:
    """The named parameters of ``statements.save`` (and of the outcome part of ``settle_claim``)."""
    params: dict[str, Any] = {f"s_{c}": v for c, v in zip(STATE_NAMES, state_values(r, running), strict=True)}
    params.update(s_id=r.id, ns=namespace, me=owner, s_task=r.task, s_args=r.args, s_kwargs=r.kwargs,
                  s_enqueued_at=r.enqueued_at, s_lane=r.queue, s_priority=r.priority, s_unique_key=r.unique_key,
                  s_tick=r.tick, s_options=r.options, dchannel=done_channel)
    return params


def load_in(conn: Any, sql: Statements, namespace: str, job_id: str) -> PostgresRecord | None:
    """The record of ``job_id``, read on ``conn``."""
    row = conn.execute(sql.load, (job_id, namespace)).fetchone()
    return None if row is None else from_row(row)


__all__ = ["PostgresRecord", "Progress", "from_row", "insert_row", "load_in", "save_params", "state_values"]
