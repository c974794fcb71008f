"""Records as the Redis scripts hold them: one text per job, its *state* and its *body*.

The layout is documented in ``lua/prelude.lua``: the state is the job's
insertion number alone (a plain queued job) or a JSON object of text fields
(``s`` status, ``n`` attempts, ``eta``...); the body, written once by the
enqueuer and read only here, is ``"\\n<enqueued_at>\\n<task>\\n<args JSON>"``
and, for a job with keyword arguments, ``"\\n<kwargs JSON>"``; a job with options
that have no field of their own (a trace context: ``Record.options``) ends in
``"\\n<kwargs JSON or nothing>\\n<options JSON>"``. An enqueue sends
the body ready-made, so the script that inserts a job encodes nothing but the
task's name; a claim decodes the state only.

The body is kept small because a queued job costs what jemalloc's block for
its text costs (128 bytes up to 124 of text, 160 above): ``enqueued_at`` is
a :func:`stamp` (8 characters, exact, where ``repr`` takes 18), and the
scripts store the task's name as a short code (``#1``, ``#2``...), a table
in Redis beside the texts. Python never sees a code: the script that reads a
text puts the name back in the same atomic call (``expanded`` in
``lua/prelude.lua``), so no process holds a code that a ``FLUSHALL`` could
make stale. For that, a name that starts with ``#`` (or ``"``, or holds a
newline) is sent as a JSON string: a line that starts with ``#`` is a code.
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


#: The stamp's digits: printable ASCII but ``.`` (93 characters; a float's text without
#: ``.`` is at most 7 characters long, so a text of 8 without one is always a stamp).
_DIGITS = "".join(chr(c) for c in range(33, 127) if c != 46)
_VALUE = {c: i for i, c in enumerate(_DIGITS.encode())}
_LOW, _HIGH, _ULP = 2.0**30, 2.0**31, 2.0**22  # [2^30, 2^31): every float there is 2^30 + m / 2^22


def stamp(t: float) -> str:
    """A time as the body holds it: exact, in 8 characters for every time from 2004 to 2038.

    A float in [2^30, 2^31) is 2^30 plus a 52-bit multiple of 2^-22 (the exponent is fixed):
    that multiple in base 93 takes 8 digits, where ``repr`` takes 17 to 18. Any other time is
    written as ``repr``. ``unstamp(stamp(t)) == t`` for every float; ``enqueued_at`` in
    ``lua/prelude.lua`` reads it the same way."""
    if _LOW <= t < _HIGH:
        m = int((t - _LOW) * _ULP)  # exact: t - 2^30 keeps t's exponent range, * 2^22 shifts it
        out = []
        for _ in range(8):
            m, d = divmod(m, 93)
            out.append(_DIGITS[d])
        return "".join(reversed(out))
    return repr(t)


def unstamp(text: str) -> float:
    """The time a :func:`stamp` (or a float's ``repr``, as an older release wrote it) holds."""
    if len(text) == 8 and "." not in text:
        m = 0
        for c in text.encode():
            m = m * 93 + _VALUE[c]
        return _LOW + m / _ULP
    return float(text)


def body_of(r: Record) -> str:
    """The body of a new job's text (from its first newline on). A task name with a newline,
    or that starts with ``"`` or ``#`` (the scripts' task codes), is written as a JSON string."""
    task = r.task
    if task[:1] in ('"', "#") or "\n" in task:
        task = _dumps(task)
    at = stamp(r.enqueued_at)
    if r.options is not None:  # JSON has no raw newline: the parts stay apart
        return f"\n{at}\n{task}\n{r.args}\n{r.kwargs or ''}\n{r.options}"
    if r.kwargs is None:
        return f"\n{at}\n{task}\n{r.args}"
    return f"\n{at}\n{task}\n{r.args}\n{r.kwargs}"


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
        status=get("s", "queued"), attempts=int(get("n", 0)), enqueued_at=unstamp(parts[1]),
        eta=_float(get("eta")), started_at=_float(get("sa")), finished_at=_float(get("fa")), result=get("r"),
        error=get("er"), traceback=get("tb"), owner=get("o"), progress=_float(get("pg")), message=get("pm"),
        queue=get("q", "default"), priority=int(get("p", 0)), unique_key=get("uk"), tick=_float(get("tk")),
        prefetched="pf" in h, waited_on="dp" in h,
        # a workflow's script keeps them in the state (op); an insert writes them in the body
        options=get("op") or (parts[5] or None if len(parts) > 5 else None),
    )


__all__ = ["RedisRecord", "body_of", "from_reply", "new_args", "parse", "stamp", "state_of", "tag", "unstamp"]
