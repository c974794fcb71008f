"""Make thread races show up in a test run, not only on a loaded production box.

CPython switches threads every 5 ms by default, so a window of a few
bytecodes between two steps of an enqueue is almost never hit by a test on
an idle machine (issue 9's defect 7 showed on 0 of 32,000 jobs there, and
on 24,000 of them with this). :func:`switch_often` asks for a switch every
microsecond for the duration of a ``with`` block.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def switch_often(interval: float = 1e-6) -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
