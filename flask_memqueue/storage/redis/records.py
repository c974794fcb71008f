"""Records as the Redis scripts hold them: one JSON string per job, values as tagged text.

The field names (``t`` task, ``a`` args, ``s`` status...) are documented with
the data layout in ``lua/prelude.lua``. State values travel to the scripts as
ARGV strings tagged by their first character: ``n`` is "no value" (the field
is deleted), ``v<text>`` a value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..records import Record


@dataclass(slots=True)
class RedisRecord(Record):
    """A record as Redis holds it: also the progress a running job reported."""

    progress: float | None = None
    message: str | None = None


def tag(value: Any) -> str:
    """A value as a script takes it: ``n`` for none, else ``v`` and its text."""
    if value is None:
        return "n"
    if isinstance(value, float):
        return "v" + repr(value)
    return "v" + str(value)


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


def from_reply(flat: list[Any]) -> RedisRecord:
    """A record from a script's ``{id, JSON text}``."""
    return parse(flat[0], flat[1])


def parse(jid: str, text: str | bytes) -> RedisRecord:
    h: dict[str, str] = json.loads(text)
    return RedisRecord(
        id=jid, task=h.get("t", ""), args=h.get("a", "[]"), kwargs=h.get("k"), status=h.get("s", "queued"),
        attempts=int(h.get("n", 0)), enqueued_at=float(h.get("e", 0.0)), eta=_float(h.get("eta")),
        started_at=_float(h.get("sa")), finished_at=_float(h.get("fa")), result=h.get("r"), error=h.get("er"),
        traceback=h.get("tb"), owner=h.get("o"), progress=_float(h.get("pg")), message=h.get("pm"),
        queue=h.get("q", "default"), priority=int(h.get("p", 0)), unique_key=h.get("uk"), tick=_float(h.get("tk")),
    )


def add_args(r: Record) -> list[Any]:
    """The 11 values of the scripts' ``add_one`` for a new record."""
    return [r.id, r.task, r.args, tag(r.kwargs), r.status, repr(r.enqueued_at), tag(r.eta), r.queue,
            r.priority, tag(r.unique_key), tag(None if r.tick is None else repr(r.tick))]


def state_args(r: Record, progress: tuple[float | None, str | None] | None) -> list[str]:
    """The 11 tagged state values of a record; ``progress``: a running job's own, newer than the record's."""
    if progress is None:
        progress = (r.progress, r.message) if isinstance(r, RedisRecord) else (None, None)
    return [tag(r.status), tag(r.attempts), tag(r.eta), tag(r.started_at), tag(r.finished_at),
            tag(r.result), tag(r.error), tag(r.traceback), tag(r.owner), tag(progress[0]), tag(progress[1])]


__all__ = ["RedisRecord", "add_args", "from_reply", "parse", "state_args", "tag"]
