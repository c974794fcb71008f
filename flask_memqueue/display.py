"""How a job's values are shown: JSON-safe data, cut reprs, ISO times.

The dashboard, ``/jobs`` and the error messages show arguments and results
of any type; nothing here may raise, whatever a value's own methods do.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import reprlib
from typing import Any

#: How much of an argument or result ``to_dict`` shows at most, in characters.
REPR_LIMIT = 2000


def finite(number: float | None) -> float | None:
    """``number``, or None for NaN and infinities (JSON has no such numbers)."""
    if number is None or math.isfinite(number):
        return number
    return None


def isotime(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 string in UTC, or None.

    None also for a time no ``datetime`` can hold (``enqueue_in(1e20, ...)``):
    a job's page must show, not fail on, an ETA a caller got wrong.
    """
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


#: How deep arrays and objects may nest in what :func:`json_safe` passes on
#: as JSON (and what the routes accept). Deeper data is shown as text: every
#: JSON encoder and decoder in the chain (Python's, Flask's, a browser's)
#: recurses, and one job must never make them fail.
MAX_JSON_DEPTH = 100


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if lists, tuples and dicts in ``value`` nest more than ``limit`` levels deep.

    Iterative, so it works on data too deep for anything recursive, and it
    stops at the first container below ``limit``.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def safe_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises.

    A user's ``__repr__`` may raise, and a deeply nested value makes
    ``repr`` itself raise ``RecursionError``: then a shallower
    :mod:`reprlib` view, and as a last resort the type's name.
    """
    try:
        shown = repr(value)
    except Exception:
        try:
            shown = _SHALLOW.repr(value)
        except Exception:
            shown = f"<{type(value).__name__} object: its repr() failed>"
    if len(shown) > limit:
        shown = shown[:limit] + f"… ({len(shown) - limit} more characters)"
    return shown


_SHALLOW = reprlib.Repr()
_SHALLOW.maxlevel = 10
_SHALLOW.maxstring = _SHALLOW.maxother = REPR_LIMIT // 4


def json_safe(value: Any, limit: int = REPR_LIMIT) -> Any:
    """``value`` as plain JSON data if it is JSON (and short enough), else a cut repr.

    The dashboard and ``/jobs`` show arguments of any type; this keeps them
    from failing on a ``datetime``, a 10 MB string, a list nested 5,000
    deep, a ``__repr__`` that raises or a NaN (which ``JSON.parse`` refuses).
    It never raises. What it returns is what ``json.loads`` made of the
    text, so encoding it again cannot fail whatever the value's own
    methods do; keys are dumped as Flask's ``jsonify`` dumps them (sorted),
    so a dict mixing ``int`` and ``str`` keys is shown as text too.
    """
    try:
        text: str | None = json.dumps(value, allow_nan=False, sort_keys=True)
    except Exception:  # TypeError, ValueError (NaN, a cycle), RecursionError, a raising method
        text = None
    if text is not None and len(text) <= limit:
        deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH
        try:
            data = json.loads(text)
            if not (deep and nested_deeper_than(data, MAX_JSON_DEPTH)):
                return data
        except RecursionError:
            pass
    shown = text if text is not None else safe_repr(value, limit)
    if len(shown) > limit:
        shown = shown[:limit] + f"… ({len(shown) - limit} more characters)"
    return shown

