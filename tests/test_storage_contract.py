"""The storage contract (flask_memqueue/storage/base.py), run against every backend.

The tests are the public suite :mod:`flask_memqueue.testing.storage` (the one a
third-party backend runs in its own CI); this file is the one place with the
rows: each backend's name and the app config that selects it, given a fresh
temporary directory. A new backend adds itself with one row here (and, if other
processes share its stores, it is not in :data:`LOCAL_BACKENDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flask_memqueue.testing import SharedStorageContract, StorageContract, StoreConfig

#: Every storage backend the contract runs against.
STORAGE_BACKENDS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "memory": lambda directory: {"MEMQUEUE_STORAGE": "memory://"},
    "sqlite": lambda directory: {"MEMQUEUE_STORAGE": f"sqlite:///{directory / 'journal.db'}"},
    "journal-alias": lambda directory: {"MEMQUEUE_JOURNAL": str(directory / "journal.db")},
    "dict": lambda directory: {"MEMQUEUE_STORAGE": _dict_store(directory)},
    "redis": lambda directory: {"MEMQUEUE_STORAGE": _redis_store(directory)},
}

#: The backends whose jobs live in one process (capabilities.shared is False): the
#: shared-store part of the contract (SharedStorageContract) does not run on them.
LOCAL_BACKENDS = {"memory"}
SHARED_BACKENDS = [name for name in STORAGE_BACKENDS if name not in LOCAL_BACKENDS]


def _dict_store(directory: Path) -> str:
    """The test-only durable backend (tests/dictstore.py), registered on first use."""
    from dictstore import SCHEME, open_dict

    from flask_memqueue.storage import register_backend

    register_backend(SCHEME, open_dict)
    return f"{SCHEME}:///{directory}"


_REDIS_TESTS: set[Path] = set()


def _redis_store(directory: Path) -> str:
    """The session's redis-server (tests/redis_server.py), flushed at a test's first store:
    stores of one test share it, as processes do; no test sees an earlier one's jobs (app
    names repeat from test to test)."""
    from redis_server import shared_server

    server = shared_server()  # skips (or, under CI, fails) without redis-server
    if directory.parent not in _REDIS_TESTS:
        _REDIS_TESTS.add(directory.parent)
        server.flush()
    return server.url()


class TestEveryStore(StorageContract):
    @pytest.fixture(params=list(STORAGE_BACKENDS))
    def store_config(self, request: pytest.FixtureRequest) -> StoreConfig:
        return STORAGE_BACKENDS[request.param]


class TestSharedStores(SharedStorageContract):
    @pytest.fixture(params=SHARED_BACKENDS)
    def store_config(self, request: pytest.FixtureRequest) -> StoreConfig:
        return STORAGE_BACKENDS[request.param]


@pytest.mark.parametrize("name", sorted(LOCAL_BACKENDS))
def test_the_local_backends_are_listed_truthfully(name: str, make_app: Callable[..., Any], tmp_path: Path) -> None:
    """A backend left out of the shared part of the contract must not declare ``shared``
    (the shared ones prove they declare it: SharedStorageContract's first test)."""
    app = make_app(**STORAGE_BACKENDS[name](tmp_path))
    assert app.extensions["memqueue"].storage.capabilities.shared is False


def test_a_third_party_backend_runs_the_public_suite_in_its_own_project(tmp_path: Path) -> None:
    """The documented way (docs/storage.rst, "Testing your backend"), in a project of its own:
    a test module that subclasses the two contract classes for a backend registered outside
    flask-memqueue, run by a pytest of its own (none of this project's conftest or config)."""
    import subprocess
    import sys
    import textwrap

    project = tmp_path / "thirdparty"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (project / "test_mystore.py").write_text(textwrap.dedent(f"""
        import sys

        import pytest

        sys.path.insert(0, {str(Path(__file__).parent)!r})  # the backend (tests/dictstore.py)
        from dictstore import open_dict

        from flask_memqueue.storage import register_backend
        from flask_memqueue.testing import SharedStorageContract, StorageContract

        register_backend("mystore", open_dict)


        class TestMyStore(StorageContract, SharedStorageContract):
            @pytest.fixture
            def store_config(self):
                return lambda directory: {{"MEMQUEUE_STORAGE": f"mystore:///{{directory}}"}}
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_mystore.py"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    contract = len([n for n in dir(StorageContract) if n.startswith("test_")])
    shared = len([n for n in dir(SharedStorageContract) if n.startswith("test_")])
    assert f"{contract + shared} passed" in done.stdout, done.stdout[-2000:]
