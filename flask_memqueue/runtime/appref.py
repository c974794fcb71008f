"""Where a child process finds the app again: found at ``init_app``, followed in the child.

An isolated job runs in a child process started with ``python -m
flask_memqueue.runtime.child``: a fresh interpreter (not a fork of a process
that runs threads), which must build the same app. What it needs is an
:class:`AppRef`, decided in the parent:

1. ``MEMQUEUE_ISOLATION_APP`` (``"package.module:create_app"`` or
   ``"package.module:app"``), when set: explicit, and always right.
2. Else the code that called ``init_app``, found on the stack at that moment
   (the first frame outside flask-memqueue, Flask and the servers): a module's
   top level (``app = Flask(__name__); mq.init_app(app)``: the child imports
   that module and takes the app from it), or a module-level factory that
   takes no required argument: the function that called ``init_app`` itself,
   or one named ``create_app`` or ``make_app`` further out (Flask's own
   names for a factory; a ``main()`` that runs a whole program is not one).
   The child imports the module and calls it. A factory with required
   arguments is passed over for its own caller (``app = create_app("prod")``
   in ``wsgi.py``). A
   script run as ``python app.py`` is loaded by path under the name
   ``__mp_main__`` (as multiprocessing's spawn does), so its
   ``if __name__ == "__main__":`` block does not run again.
3. Else ``FLASK_APP`` from the environment, loaded as ``flask run`` would.

This is the same for ``flask run`` (with the reloader too: the serving
process imports the app as the first did), gunicorn (with ``--preload`` the
master imports it, then forks; the ref is inherited) and ``flask memqueue
worker``: each imports the app by its import path, and so does the child. The
child also gets the parent's ``sys.path`` and working directory.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import asdict, dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..exceptions import IsolationError

if TYPE_CHECKING:
    from flask import Flask

#: Frames of these packages are never where the app is made: the walk goes past them, or stops.
_PASS = ("flask_memqueue", "importlib", "runpy")
_STOP = ("flask", "werkzeug", "click", "gunicorn", "_pytest", "pytest", "pluggy")
_HOW = ("set MEMQUEUE_ISOLATION_APP = 'package.module:create_app' (or 'package.module:app') to the factory or app"
        " an isolated job's child process can import")


#: True in the child process of isolated jobs (set before it builds the app): ``MEMQUEUE_AUTOSTART``
#: starts no consumer there; the child runs the jobs it is sent, never a store's.
IN_CHILD = False


def in_isolated_child() -> bool:
    """True in the child process of isolated jobs."""
    return IN_CHILD


@dataclass(frozen=True)
class AppRef:
    """How a child process rebuilds the app (see the module's text); crosses as JSON."""

    #: The module to import (or, with :attr:`path`, the name to run the file under).
    module: str | None = None
    #: The attribute: an app, or a factory called with no arguments; None: the module's app.
    attr: str | None = None
    #: A script run as ``__main__``: its file, run under ``__mp_main__``.
    path: str | None = None
    #: ``FLASK_APP``, loaded as ``flask run`` does.
    flask_app: str | None = None
    #: The app's name, to pick it among several in a module.
    name: str = ""
    #: How it was found, for messages.
    how: str = ""

    def describe(self) -> str:
        if self.path:
            return f"the script {self.path} ({self.how})"
        if self.flask_app:
            return f"FLASK_APP={self.flask_app!r} ({self.how})"
        return f"{self.module}{':' + self.attr if self.attr else ''} ({self.how})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _package(name: str) -> str:
    return name.split(".", 1)[0]


def find_app_ref(app: Flask, explicit: str | None) -> AppRef | None:
    """The :class:`AppRef` of ``app``, from the config or the stack of ``init_app`` (see the module's text)."""
    if explicit:
        module, _, attr = explicit.partition(":")
        return AppRef(module=module, attr=attr or None, name=app.name, how="MEMQUEUE_ISOLATION_APP")
    frame: FrameType | None = sys._getframe(1)
    nearest = True
    try:
        while frame is not None:
            ref = _ref_of(frame, app, nearest)
            if ref is not None:
                return ref if ref.how else None
            name = frame.f_globals.get("__name__")
            nearest = nearest and isinstance(name, str) and _package(name) in _PASS
            frame = frame.f_back
    finally:
        del frame
    return _from_env(app)


def _from_env(app: Flask) -> AppRef | None:
    flask_app = os.environ.get("FLASK_APP")
    return AppRef(flask_app=flask_app, name=app.name, how="FLASK_APP") if flask_app else None


#: A function further out than init_app's caller is taken for the factory only under these names.
FACTORY_NAMES = ("create_app", "make_app")


def _ref_of(frame: FrameType, app: Flask, nearest: bool) -> AppRef | None:
    """The ref this frame gives; None to look at its caller; an empty ref to stop (found nothing)."""
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str) or _package(module) in _PASS:
        return None
    if _package(module) in _STOP:
        return _from_env(app) or AppRef()
    code = frame.f_code
    if code.co_name == "<module>":
        attr = next((k for k, v in frame.f_globals.items() if v is app and not k.startswith("_")), None)
        if module == "__main__":
            path = frame.f_globals.get("__file__")
            if not isinstance(path, str):
                return _from_env(app) or AppRef()
            return AppRef(module="__mp_main__", attr=attr, path=os.path.abspath(path), name=app.name,
                          how="the script that called init_app")
        return AppRef(module=module, attr=attr, name=app.name, how="the module that called init_app")
    func = frame.f_globals.get(code.co_name)
    factory = nearest or code.co_name in FACTORY_NAMES
    if factory and inspect.isfunction(func) and func.__code__ is code and _takes_no_arguments(func):
        if module == "__main__":
            path = frame.f_globals.get("__file__")
            if isinstance(path, str):
                return AppRef(module="__mp_main__", attr=code.co_name, path=os.path.abspath(path), name=app.name,
                              how="the factory that called init_app")
            return None
        return AppRef(module=module, attr=code.co_name, name=app.name, how="the factory that called init_app")
    return None


def _takes_no_arguments(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


# -- in the child -------------------------------------------------------------------------------
def load_app(ref: AppRef) -> Flask:
    """Build the app ``ref`` names (in the child).

    :raises IsolationError: it cannot be imported or is no Flask app; the message says how to fix it.
    """
    from flask import Flask

    try:
        if ref.flask_app:
            from flask.cli import ScriptInfo

            return ScriptInfo(app_import_path=ref.flask_app).load_app()
        if ref.path:
            import runpy  # rarely: a script path as the app's home

            namespace = runpy.run_path(ref.path, run_name="__mp_main__")
            sys.modules.setdefault("__mp_main__", _as_module("__mp_main__", namespace))
        else:
            assert ref.module is not None
            namespace = vars(importlib.import_module(ref.module))
    except IsolationError:
        raise
    except Exception as exc:
        raise IsolationError(f"the child process could not import {ref.describe()}: {exc!r}; {_HOW}") from exc
    found = _pick(namespace, ref, Flask)
    if found is None:
        raise IsolationError(f"the child process found no Flask app named {ref.name!r} in {ref.describe()}; {_HOW}")
    return found


def _pick(namespace: dict[str, Any], ref: AppRef, flask: type[Flask]) -> Flask | None:
    if ref.attr is not None:
        value = namespace.get(ref.attr)
        if callable(value) and not isinstance(value, flask):
            value = value()
        return value if isinstance(value, flask) else None
    apps = [v for v in namespace.values() if isinstance(v, flask)]
    named = [a for a in apps if a.name == ref.name] or apps
    if named:
        return named[0]
    for factory in ("create_app", "make_app"):
        value = namespace.get(factory)
        if callable(value):
            built = value()
            return built if isinstance(built, flask) else None
    return None


def _as_module(name: str, namespace: dict[str, Any]) -> Any:
    import types

    module = types.ModuleType(name)
    module.__dict__.update(namespace)
    return module


__all__ = ["AppRef", "find_app_ref", "load_app"]
