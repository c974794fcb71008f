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
def test_a_process_or_a_server_without_its_marker_fails_and_says_which_to_add(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import sys

        import pytest
        from support.processes import spawn
        from support.servers import shared


        class Fake:
            def alive(self):
                return True

            def close(self):
                pass


        def test_unmarked_process(tmp_path):
            spawn([sys.executable, "-c", "pass"], log_path=tmp_path / "out").wait(10)


        @pytest.mark.processes
        def test_marked_process(tmp_path):
            assert spawn([sys.executable, "-c", "pass"], log_path=tmp_path / "out").wait(10) == 0


        def test_unmarked_server():
            shared("fake-server", Fake)


        @pytest.mark.servers
        def test_marked_server():
            assert isinstance(shared("fake-server", Fake), Fake)
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*test_unmarked_process starts python* but is not marked 'processes': add @pytest.mark.processes*",
        "*test_unmarked_server uses the session's fake-server but is not marked 'servers'*",
    ])


@pytest.mark.processes
def test_a_shared_server_starts_once_again_if_it_died_and_never_after_a_failed_start(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(
        """
        import pytest
        from support.servers import shared

        pytestmark = pytest.mark.servers
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


        def test_started_once_and_again_after_it_died():
            first = shared("fake", Fake)
            assert shared("fake", Fake) is first and len(STARTS) == 1
            first.up = False
            assert shared("fake", Fake) is not first and len(STARTS) == 2


        def test_a_failed_start_is_not_tried_again():
            with pytest.raises(OSError):
                shared("broken", broken)
            with pytest.raises(RuntimeError, match="failed to start earlier"):
                shared("broken", broken)
            assert STARTS.count("broken") == 1
        """
    )
    inner.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


@pytest.mark.processes
@pytest.mark.parametrize("ci", [False, True], ids=["locally", "under-CI"])
def test_a_missing_server_skips_locally_and_fails_under_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    if ci:
        monkeypatch.setenv("CI", "true")
    inner.makepyfile(
        """
        from support.servers import unavailable

        def test_needs_a_server():
            unavailable("frobd is not installed (apt-get install frobd)")
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    if ci:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*CI is set but frobd is not installed (apt-get install frobd)*"])
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*frobd is not installed (apt-get install frobd)*"])


@pytest.mark.processes
def test_a_test_using_a_server_or_process_fixture_is_marked_by_it(inner: pytest.Pytester) -> None:
    """``-m "not servers"`` leaves out a test that uses ``redis_server`` through another fixture."""
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
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-m", "not servers")
    result.stdout.fnmatch_lines(["*test_with_processes", "*test_plain", "2/3 tests collected (1 deselected)*"])
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-m", "not processes")
    result.stdout.fnmatch_lines(["*test_on_redis", "*test_plain", "2/3 tests collected (1 deselected)*"])
