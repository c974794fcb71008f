"""A :class:`~flask_memqueue.jobfilter.JobFilter` as a SQL ``WHERE`` clause, for the SQL backends.

Written once for SQLite and PostgreSQL: they differ in the placeholder, the names
of two columns and the operator that ignores case (``LIKE`` ignores ASCII case in
SQLite; PostgreSQL needs ``ILIKE``). The text ``q`` is looked for in the JSON text
of the arguments as the codec stores it (:meth:`JobFilter.needle
<flask_memqueue.jobfilter.JobFilter.needle>`), and in the error as it is.
"""

from __future__ import annotations

from typing import Any

from ..jobfilter import JobFilter


def like_pattern(text: str) -> str:
    """``%text%`` with ``\\``, ``%`` and ``_`` escaped (the clause says ``ESCAPE '\\'``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where_of(flt: JobFilter, *, mark: str, lane: str = "lane", like: str = "LIKE") -> tuple[str, list[Any]]:
    """``(" AND ...", params)`` for ``flt`` (an empty clause for an empty filter).

    :param mark: the driver's placeholder (``?`` or ``%s``).
    :param lane: the column of the named queue.
    :param like: the case-ignoring match operator.
    """
    parts: list[str] = []
    params: list[Any] = []
    if flt.task is not None:
        parts.append(f"task = {mark}")
        params.append(flt.task)
    if flt.statuses is not None:
        parts.append(f"status IN ({', '.join([mark] * len(flt.statuses))})")
        params += list(flt.statuses)
    if flt.queue is not None:
        parts.append(f"{lane} = {mark}")
        params.append(flt.queue)
    if flt.since is not None:
        parts.append(f"enqueued_at >= {mark}")
        params.append(flt.since)
    if flt.until is not None:
        parts.append(f"enqueued_at <= {mark}")
        params.append(flt.until)
    if flt.q is not None:
        needle = like_pattern(flt.needle() or "")
        plain = like_pattern(flt.q)
        parts.append(f"(args {like} {mark} ESCAPE '\\' OR kwargs {like} {mark} ESCAPE '\\'"
                     f" OR error {like} {mark} ESCAPE '\\')")
        params += [needle, needle, plain]
    return "".join(f" AND {p}" for p in parts), params


__all__ = ["like_pattern", "where_of"]
