"""The suite's markers, and the check that keeps them honest.

The markers are registered in ``pyproject.toml`` (``[tool.pytest.ini_options]
markers``, with ``--strict-markers``), so a typo is an error:

- ``processes``: starts real processes (``flask run``, gunicorn, workers,
  scripts, pytest or a tool in a subprocess);
- ``servers``: needs a real redis-server, rabbitmq-server or PostgreSQL server;
- ``browser``: drives a real Chromium;
- ``slow``: takes more than about 5 s on a 2-core machine.

A test that uses one of the fixtures in :data:`FIXTURE_MARKERS` (directly,
or through another fixture) gets its marker at collection; the others are
marked in their modules (``pytestmark``) or on the test.

``pytest -m "not servers"`` and ``pytest -m "not (servers or processes or
browser or slow)"`` are the quick local loops. So that they stay quick, the
harness checks the markers where it can: a test that starts a process through
:mod:`support.harness` / :mod:`support.processes` without ``processes``, or
a server through :mod:`support.servers` without ``servers``, fails and says
which marker to add. The plugin (:mod:`support.fixtures`) tells this module
which test runs.

No pytest at import time: the benchmarks start servers through
:mod:`support.servers` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

PROCESSES = "processes"
SERVERS = "servers"
BROWSER = "browser"
SLOW = "slow"

#: Fixtures whose tests get a marker at collection (:mod:`support.fixtures` applies it).
FIXTURE_MARKERS = {
    "redis_server": SERVERS,
    "rabbitmq": SERVERS,
    "postgres": SERVERS,
    "postgres_url": SERVERS,
    "make_env": PROCESSES,
}

_current: pytest.Item | None = None


def set_current(item: pytest.Item | None) -> None:
    """Called by the plugin around each test (setup, call and teardown)."""
    global _current
    _current = item


def current_test() -> str | None:
    """The node id of the test running now (setup, call and teardown), or None outside a test."""
    item = _current
    return None if item is None else item.nodeid


def require(marker: str, what: str) -> None:
    """Fail the running test if it does ``what`` without carrying ``marker``.

    Outside a test (a benchmark, a session fixture's teardown) there is nothing to check.
    """
    item = _current
    if item is None or item.get_closest_marker(marker) is not None:
        return
    import pytest

    pytest.fail(
        f"{item.nodeid} {what} but is not marked {marker!r}: add @pytest.mark.{marker} to the test"
        f" (or pytestmark = pytest.mark.{marker} to its module), so that -m 'not {marker}' leaves it out",
        pytrace=False,
    )
