"""The suite's own harness (tests/support/) keeps its promises.

The markers are checked (a test that starts a process or a server without
its marker fails, saying which to add) and applied through the fixtures; a
missing server skips, or fails under CI; the session's servers start once
and a failed start is not tried again; ``wait_until`` says what never
happened; and no test imports helpers from ``conftest`` or from another test. The cases about
pytest's behaviour run in a pytest of their own (a subprocess), on a project
that loads the suite's plugin.
"""

from __future__ import annotations

import ast
import os
import textwrap
from pathlib import Path

import pytest
from support.waiting import wait_until

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
#: The suite's markers, registered as pyproject.toml registers them.
INI = """[pytest]
filterwarnings = error
addopts = --strict-markers
markers =
    processes: starts real processes
    servers: needs a real server
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project that loads the suite's plugin, as tests/conftest.py does."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makeini(INI)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.delenv("CI", raising=False)
    return pytester


def test_wait_until_returns_the_value_and_names_what_never_happened() -> None:
    values = iter([None, 0, "", "found"])
    assert wait_until(lambda: next(values)) == "found"
    with pytest.raises(TimeoutError, match="waiting for the answer to come"):
        wait_until(lambda: None, 0.05, "the answer to come")
    with pytest.raises(TimeoutError, match="a message built late"):
        wait_until(lambda: False, 0.05, lambda: "a message built late")


def test_no_test_imports_helpers_from_conftest_another_test_or_a_top_level_module() -> None:
    """Helpers are imported from the support package; ``conftest`` only loads the plugin."""
    gone = {"conftest", "servers", "redis_server", "amqp_broker", "contention", "recording_app"}
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(TESTS)}: {name}" for name in names
                      if name and (name.split(".")[0] in gone or name.startswith("test_"))]
    assert found == []


@pytest.mark.processes
def test_markers_are_checked_shared_servers_start_once_and_a_missing_server_skips(inner: pytest.Pytester) -> None:
    """One pytest run (each costs a second): a process or a server without its marker fails
    naming the marker; a shared server starts once, again after it died, never again after
    a failed start; a missing server skips saying what to install (CI unset)."""
    inner.makepyfile(
        """
        import sys

        import pytest
        from support.processes import spawn
        from support.servers import shared, unavailable

        STARTS = []


        class Fake:
            def __init__(self):
                STARTS.append(self)
                self.up = True

            def alive(self):
                return self.up

            def close(self):
                self.up = False


        def broken():
            STARTS.append("broken")
            raise OSError("no such port")


        def test_unmarked_process(tmp_path):
            spawn([sys.executable, "-c", "pass"], log_path=tmp_path / "out").wait(10)


        @pytest.mark.processes
        def test_marked_process(tmp_path):
            assert spawn([sys.executable, "-c", "pass"], log_path=tmp_path / "out").wait(10) == 0


        def test_unmarked_server():
            shared("unmarked", Fake)


        @pytest.mark.servers
        def test_started_once_and_again_after_it_died():
            first = shared("fake", Fake)
            assert shared("fake", Fake) is first and len(STARTS) == 1
            first.up = False
            assert shared("fake", Fake) is not first and len(STARTS) == 2


        @pytest.mark.servers
        def test_a_failed_start_is_not_tried_again():
            with pytest.raises(OSError):
                shared("broken", broken)
            with pytest.raises(RuntimeError, match="failed to start earlier"):
                shared("broken", broken)
            assert STARTS.count("broken") == 1


        def test_needs_a_missing_server():
            unavailable("frobd is not installed (apt-get install frobd)")
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=3, failed=2, skipped=1)
    result.stdout.fnmatch_lines([
        "*test_unmarked_process starts python* but is not marked 'processes': add @pytest.mark.processes*",
        "*test_unmarked_server uses the session's unmarked but is not marked 'servers'*",
        "SKIPPED*frobd is not installed (apt-get install frobd)*",
    ], consecutive=False)


@pytest.mark.processes
def test_a_missing_server_fails_under_ci(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(
        """
        from support.servers import unavailable

        def test_needs_a_missing_server():
            unavailable("frobd is not installed (apt-get install frobd)")
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CI is set but frobd is not installed (apt-get install frobd)*"])


@pytest.mark.processes
def test_a_test_using_a_server_or_process_fixture_is_marked_by_it(inner: pytest.Pytester) -> None:
    """The markers come with ``redis_server`` (here through another fixture) and ``make_env``,
    before ``-m`` selects (collected only: no server starts)."""
    inner.makeconftest((TESTS / "conftest.py").read_text() + textwrap.dedent(
        """

        def pytest_collection_finish(session):
            for item in session.items:
                print("MARKS", item.name, sorted(m.name for m in item.iter_markers()))
        """
    ))
    inner.makepyfile(
        """
        import pytest

        @pytest.fixture
        def store_url(redis_server):
            return redis_server.url()

        def test_on_redis(store_url):
            pass

        def test_with_processes(make_env):
            pass

        def test_plain():
            pass
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines([
        "MARKS test_on_redis ['servers']",
        "MARKS test_with_processes ['processes']",
        "MARKS test_plain []",
    ])


@pytest.mark.processes
def test_the_shared_servers_stores_are_kept_apart_per_test_whatever_folder_it_passes(inner: pytest.Pytester) -> None:
    """support/backends.py keys a test's PostgreSQL schema (and redis-server flush) by the running
    test, not by the folder's parent: two tests that both pass ``tmp_path`` itself (whose parent is
    the session's base folder) get two keys; one test's two folders share one (as processes do)."""
    inner.makepyfile(
        """
        from support.backends import _test_key

        def test_one(tmp_path):
            assert _test_key(tmp_path) == _test_key(tmp_path / "store-2")
            print("KEY", _test_key(tmp_path))

        def test_two(tmp_path):
            print("KEY", _test_key(tmp_path))
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=2)
    keys = [line.split("KEY ", 1)[1] for line in result.stdout.lines if "KEY " in line]
    assert len(keys) == 2 and len(set(keys)) == 2 and all("::test_" in key for key in keys), keys
