"""What calls a function takes, precompiled once per task for the check at every enqueue.

A job whose arguments do not fit its function would fail later, in the
worker, with a ``TypeError`` (and be retried for nothing), so every enqueue
checks the call first. ``inspect.Signature.bind`` costs several
microseconds; :class:`CallSpec` answers the common calls in a fraction of
that and leaves the rest to ``bind``.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


class CallSpec:
    """What calls a function takes, precompiled from its signature (for
    :meth:`Task.check_call <flask_memqueue.Task.check_call>`).

    :meth:`fits` may refuse a call the function would take (then
    ``Signature.bind`` decides, so nothing valid is ever refused), never the
    reverse. The signature is the function's own (``follow_wrapped=False``):
    a decorator that changes what its wrapper takes is judged by the wrapper.
    """

    __slots__ = ("min_args", "max_args", "positional", "positions", "posonly", "kwonly", "required_kwonly", "varkw",
                 "_required", "good_shapes")

    #: How many keyword layouts that fit are remembered (then forgotten all at once).
    SHAPES = 64

    def __init__(
        self,
        positional: tuple[str, ...],
        required: int,
        posonly: int,
        varargs: bool,
        kwonly: frozenset[str],
        required_kwonly: frozenset[str],
        varkw: bool,
    ) -> None:
        #: Positional counts a call without keywords may have (an empty range when
        #: a keyword-only argument is required: every call takes the slow test).
        self.max_args = sys.maxsize if varargs else len(positional)
        self.min_args = required if not required_kwonly else self.max_args + 1
        #: Index of each positional parameter; the first ``posonly`` take no keyword.
        self.positional = positional
        self.positions = {name: i for i, name in enumerate(positional)}
        self.posonly = posonly
        self.kwonly = kwonly
        self.required_kwonly = required_kwonly
        self.varkw = varkw
        self._required = required  # positional parameters without a default: the first ones
        #: ``(number of positional arguments, *keyword names)`` of calls that fit.
        self.good_shapes: set[tuple[Any, ...]] = set()

    @classmethod
    def of(cls, func: Callable[..., Any]) -> CallSpec:
        """The spec of ``func``: from its code object for a plain function (about 1 µs),
        else from :func:`inspect.signature`; one that takes anything if neither says."""
        if type(func) is types.FunctionType and "__signature__" not in func.__dict__:
            code = func.__code__
            n, nkw = code.co_argcount, code.co_kwonlyargcount
            names = code.co_varnames
            kwdefaults = func.__kwdefaults__ or {}
            kwonly = names[n:n + nkw]
            return cls(names[:n], n - len(func.__defaults__ or ()), code.co_posonlyargcount,
                       bool(code.co_flags & inspect.CO_VARARGS), frozenset(kwonly),
                       frozenset(k for k in kwonly if k not in kwdefaults),
                       bool(code.co_flags & inspect.CO_VARKEYWORDS))
        try:
            params = list(inspect.signature(func, follow_wrapped=False).parameters.values())
        except (TypeError, ValueError):  # no signature to read: take anything
            return cls((), 0, 0, True, frozenset(), frozenset(), True)
        P_ = inspect.Parameter
        positional = [p for p in params if p.kind in (P_.POSITIONAL_ONLY, P_.POSITIONAL_OR_KEYWORD)]
        kwonly_params = [p for p in params if p.kind is P_.KEYWORD_ONLY]
        return cls(
            tuple(p.name for p in positional),
            sum(1 for p in positional if p.default is P_.empty),
            sum(1 for p in positional if p.kind is P_.POSITIONAL_ONLY),
            any(p.kind is P_.VAR_POSITIONAL for p in params),
            frozenset(p.name for p in kwonly_params),
            frozenset(p.name for p in kwonly_params if p.default is P_.empty),
            any(p.kind is P_.VAR_KEYWORD for p in params),
        )

    def takes(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> bool:
        """True if ``func(*args, **kwargs)`` binds; False may also mean "ask bind" (:func:`explain_refusal`).

        A call's keywords come in few layouts: those that fit are remembered.
        """
        if not kwargs:
            return self.min_args <= len(args) <= self.max_args
        shape = (len(args), *kwargs)
        good = self.good_shapes
        if shape in good:
            return True
        if not self.fits(args, kwargs):
            return False
        if len(good) >= self.SHAPES:
            good.clear()
        good.add(shape)
        return True

    def fits(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """True if ``func(*args, **kwargs)`` binds (False may also mean "ask bind")."""
        n = len(args)
        if n > self.max_args:
            return False
        positions = self.positions
        for key in kwargs:
            i = positions.get(key)
            if i is None or i < self.posonly:  # not a positional name, or one that takes no keyword
                if key not in self.kwonly and not self.varkw:
                    return False
            elif i < n:  # also given positionally
                return False
        if n < self._required:
            by_name = self.positional[max(n, self.posonly):self._required]
            if n < self.posonly or any(name not in kwargs for name in by_name):
                return False
        return all(name in kwargs for name in self.required_kwonly)


def explain_refusal(
    func: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None
) -> None:
    """Raise the TypeError of a call :meth:`CallSpec.takes` refused, in Python's own words
    (``Signature.bind``); return if ``bind`` takes it after all, or if the function has no
    signature to read (some builtins: then anything goes).

    :raises TypeError: naming the task and what is wrong; nothing is queued.
    """
    try:
        signature = inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **(kwargs or {}))
    except TypeError as exc:
        bare = signature.replace(  # the parameters as a call spells them, without annotations
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        raise TypeError(
            f"task {name!r} cannot be called with these arguments: {exc}. It takes"
            f" {getattr(func, '__name__', None) or name}{bare}; nothing was queued"
        ) from None
