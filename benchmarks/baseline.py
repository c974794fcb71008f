"""A git ref of flask-memqueue as a benchmark contender, beside the working tree.

A performance claim names its baseline: the last release, measured in the
same run, on the same interpreter with the same Flask, never numbers copied
from another day. :func:`checkout` writes the package of a git ref into a
temporary directory (``git archive``: no worktree to clean up); a benchmark
child process for the baseline contender puts that directory first on
``sys.path`` (:func:`use`) before it imports ``flask_memqueue``, and one for
the working tree puts the checkout this file belongs to first. Every cell is
a fresh process, so the two never meet in one interpreter.

Only the package comes from the ref: Flask, Werkzeug and blinker are the
ones installed here, so the comparison is of flask-memqueue's code alone.
(A ref whose package needs a dependency that is not installed fails at its
first cell, saying which import failed.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
#: The checkout this benchmark belongs to: the working tree being judged.
WORKTREE = os.path.dirname(HERE)
#: The last release: what ``--baseline`` compares against unless told otherwise.
DEFAULT_REF = "e959e79"
#: Child processes read the baseline's directory from here.
ENV = "MEMQUEUE_BENCH_BASELINE"


def resolve(ref: str) -> tuple[str, str]:
    """``(full sha, label)`` of ``ref`` in the working tree's repository; the label is
    the ref as given if it is a tag or branch, else the short sha."""
    try:
        sha = subprocess.run(
            ["git", "-C", WORKTREE, "rev-parse", "--verify", f"{ref}^{{commit}}"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise SystemExit(f"--baseline {ref}: not a commit of {WORKTREE} ({detail.strip()})") from None
    label = ref if not sha.startswith(ref) else sha[:7]
    return sha, label


def checkout(ref: str) -> tuple[str, str]:
    """The package of ``ref`` in a new temporary directory: ``(directory, label)``.

    The caller removes the directory (:func:`remove`).
    """
    sha, label = resolve(ref)
    target = tempfile.mkdtemp(prefix=f"mqbench-{label}-")
    archive = subprocess.Popen(
        ["git", "-C", WORKTREE, "archive", "--format=tar", sha, "flask_memqueue"], stdout=subprocess.PIPE
    )
    try:
        subprocess.run(["tar", "-x", "-C", target], stdin=archive.stdout, check=True)
    finally:
        if archive.stdout is not None:
            archive.stdout.close()
        if archive.wait() != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise SystemExit(f"--baseline {ref}: git archive failed")
    return target, label


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def use(directory: str) -> None:
    """Import ``flask_memqueue`` from ``directory`` in this (child) process, and say so if
    another copy was imported already (the numbers would then be of the wrong code)."""
    loaded = sys.modules.get("flask_memqueue")
    if loaded is not None:
        where = os.path.dirname(os.path.dirname(os.path.abspath(loaded.__file__ or "")))
        if os.path.realpath(where) != os.path.realpath(directory):
            raise RuntimeError(f"flask_memqueue was imported from {where} before the benchmark chose {directory}")
        return
    sys.path.insert(0, directory)


def imported_from() -> str:
    """Where this process's ``flask_memqueue`` comes from (for the tables' notes)."""
    import flask_memqueue

    return os.path.dirname(os.path.dirname(os.path.abspath(flask_memqueue.__file__ or "")))
