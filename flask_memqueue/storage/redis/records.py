"""Records as the Redis scripts hold them: one text per job, its *state* and its *body*.

The layout is documented in ``lua/prelude.lua``: the state is the job's
insertion number alone (a plain queued job) or a JSON object of text fields
(``s`` status, ``n`` attempts, ``eta``...); the body, written once by the
enqueuer and read only here, is ``"\\n<enqueued_at>\\n<task>\\n<args JSON>"``
and, for a job with keyword arguments, ``"\\n<kwargs JSON>"``; a job with options
that have no field of their own (a trace context: ``Record.options``) ends in
``"\\n<kwargs JSON or nothing>\\n<options JSON>"``. An enqueue sends
the body ready-made, so the script that inserts a job encodes nothing; a claim
decodes the state only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..records import Record

_dumps = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(slots=True)
class RedisRecord(Record):
    """A record as Redis holds it: also the progress a running job reported, and whether
    it was claimed ahead of its start (prefetched, or handed to an idle consumer)."""

    progress: float | None = None
    message: str | None = None
    #: Claimed ahead and not yet known to have started: given back, its attempt not
    #: counted, if its owner dies.
    prefetched: bool = False
    #: Jobs wait on it (a workflow's parent): its outcome releases or cancels them.
    waited_on: bool = False


def tag(value: Any) -> str:
    """A value as a script takes it: ``n`` for none, else ``v`` and its text."""
    if value is None:
        return "n"
    if isinstance(value, float):
        return "v" + repr(value)
    return "v" + str(value)


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


def body_of(r: Record) -> str:
    """The body of a new job's text (from its first newline on)."""
    task = r.task
    if "\n" in task or task[:1] == '"':
        task = _dumps(task)
    if r.options is not None:  # JSON has no raw newline: the parts stay apart
        return f"\n{r.enqueued_at!r}\n{task}\n{r.args}\n{r.kwargs or ''}\n{r.options}"
    if r.kwargs is None:
        return f"\n{r.enqueued_at!r}\n{task}\n{r.args}"
    return f"\n{r.enqueued_at!r}\n{task}\n{r.args}\n{r.kwargs}"


def state_of(r: Record, progress: tuple[float | None, str | None] | None = None, *, whole: bool = False) -> str:
    """The state fields of a record as the JSON object a script writes; ``progress``: a
    running job's own, newer than the record's. ``whole``: with the fields an insert
    needs besides (unique key, tick), for a job the store may not have."""
    if progress is None:
        progress = (r.progress, r.message) if isinstance(r, RedisRecord) else (None, None)
    h: dict[str, str] = {"s": r.status, "n": str(r.attempts)}
    fields: tuple[tuple[str, Any], ...] = (
        ("eta", r.eta), ("sa", r.started_at), ("fa", r.finished_at), ("r", r.result), ("er", r.error),
        ("tb", r.traceback), ("o", r.owner), ("pg", progress[0]), ("pm", progress[1]),
    )
    if whole:
        fields += (("uk", r.unique_key), ("tk", r.tick))
    for name, value in fields:  # numbers as repr (exact digits), text as it is; None: absent
        if value is not None:
            h[name] = value if isinstance(value, str) else repr(value)
    return _dumps(h)


def new_args(r: Record) -> list[Any]:
    """The 6 values of a new job for the scripts that insert: id, status, eta, queue, priority, body."""
    return [r.id, r.status, "" if r.eta is None else repr(r.eta), r.queue, r.priority, body_of(r)]


def from_reply(flat: list[Any]) -> RedisRecord:
    """A record from a script's ``{id, text}``."""
    return parse(flat[0], flat[1])


def parse(jid: str, text: str) -> RedisRecord:
    """A record from the text Redis holds for job ``jid``."""
    parts = text.split("\n")
    state = parts[0]
    h: dict[str, str] = json.loads(state) if state[:1] == "{" else {}
    task = parts[2]
    if task[:1] == '"':
        task = json.loads(task)
    get = h.get
    return RedisRecord(
        id=jid, task=task, args=parts[3], kwargs=(parts[4] or None) if len(parts) > 4 else None,
        status=get("s", "queued"), attempts=int(get("n", 0)), enqueued_at=float(parts[1]),
        eta=_float(get("eta")), started_at=_float(get("sa")), finished_at=_float(get("fa")), result=get("r"),
        error=get("er"), traceback=get("tb"), owner=get("o"), progress=_float(get("pg")), message=get("pm"),
        queue=get("q", "default"), priority=int(get("p", 0)), unique_key=get("uk"), tick=_float(get("tk")),
        prefetched="pf" in h, waited_on="dp" in h,
        # a workflow's script keeps them in the state (op); an insert writes them in the body
        options=get("op") or (parts[5] or None if len(parts) > 5 else None),
    )


__all__ = ["RedisRecord", "body_of", "from_reply", "new_args", "parse", "state_of", "tag"]
