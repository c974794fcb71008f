"""The pip command that adds an optional extra (``redis``, ``cron``...) to this installation.

Nothing is published on PyPI as ``flask-memqueue`` yet, so installing the
name with an extra (the usual advice) fails in a fresh virtualenv. An error
that says which extra is missing must name a command that works, and the one
that works depends on where this copy came from. pip records that in the
installation's ``direct_url.json`` (`PEP 610`_): a folder (a clone, installed
with ``pip install /path`` or ``-e``), a git URL, or an archive. Without it
the package came from an index, where the plain name works. The docs' section
"Installing" (docs/quickstart.md) gives the same forms.

.. _PEP 610: https://peps.python.org/pep-0610/
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: The distribution's name, as pip and the package metadata spell it.
DIST_NAME = "Flask-MemQueue"
#: Where the docs explain the forms the hints take.
DOCS_SECTION = "the docs' Installing section, docs/quickstart.md"


def install_hint(extra: str) -> str:
    """``pip install ...`` for ``extra`` (e.g. ``'pip install -e "/src/flask-memqueue[redis]"'``),
    the same source this copy was installed from."""
    return _install_command(f"[{extra}]")


@functools.cache
def _install_command(extras: str) -> str:
    source = _source()
    if source is None:  # from an index: the name works there
        return f'pip install "{DIST_NAME}{extras}"'
    kind, where = source
    if kind == "editable":
        return f'pip install -e "{where}{extras}"'
    if kind == "path":
        return f'pip install "{where}{extras}"'
    return f'pip install "{DIST_NAME}{extras} @ {where}"'  # a git or archive URL


def _source() -> tuple[str, str] | None:
    """Where this copy came from: ("editable" | "path", a local path), ("url", a URL pip
    accepts after ``@``), or None for an index. A copy run from a checkout without being
    installed names that checkout; an unknown source, a placeholder path."""
    from importlib import metadata

    here = Path(__file__).resolve().parent.parent
    try:
        dist = metadata.distribution(DIST_NAME)
        recorded = _recorded_source(dist.read_text("direct_url.json"))
    except metadata.PackageNotFoundError:
        dist, recorded = None, None
    if recorded is not None and recorded[0] == "editable" and Path(recorded[1]).resolve() == here:
        return recorded
    if dist is not None and _installed_here(dist):
        if recorded is not None and recorded[0] == "path" and not Path(recorded[1]).exists():
            return "path", "/path/to/flask-memqueue"  # installed from a folder or file since moved
        return recorded
    if (here / "pyproject.toml").is_file():  # a checkout run in place, not (this copy) installed
        return "path", str(here)
    return "path", "/path/to/flask-memqueue"


def _recorded_source(text: str | None) -> tuple[str, str] | None:
    """The source ``direct_url.json`` records; None without one (an index)."""
    if not text:
        return None
    try:
        info = json.loads(text)
        url = str(info["url"])
    except (ValueError, KeyError, TypeError):
        return None
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        revision = vcs.get("requested_revision")
        return "url", f"{vcs['vcs']}+{url}" + (f"@{revision}" if revision else "")
    parts = urlsplit(url)
    if parts.scheme != "file":
        return "url", url
    path = unquote(parts.path)
    if sys.platform == "win32" and path.startswith("/") and path[2:3] == ":":
        path = path[1:]
    dir_info = info.get("dir_info")
    editable = isinstance(dir_info, dict) and dir_info.get("editable") is True
    return ("editable" if editable else "path"), path


def _installed_here(dist: object) -> bool:
    """True if the installed distribution's files are the ones this module was imported
    from (not another copy on sys.path, such as a checkout run in place)."""
    try:
        located = dist.locate_file("flask_memqueue/__init__.py")  # type: ignore[attr-defined]
        return Path(str(located)).resolve().parent == Path(__file__).resolve().parent
    except Exception:  # an unusual finder: trust the metadata
        return True
