"""The storage contract (flask_memqueue/storage/base.py), run against every backend.

The tests are the public suite :mod:`flask_memqueue.testing.storage` (the one a
third-party backend runs in its own CI); the rows (each backend's name and the
app config that selects it, given a fresh directory) are
``support.backends.STORAGE_BACKENDS``, the one place a new backend adds itself
(and, if other processes share its stores, it is not in ``LOCAL_BACKENDS``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.backends import LOCAL_BACKENDS, STORAGE_BACKENDS, backend_params

from flask_memqueue.testing import SharedStorageContract, StorageContract, StoreConfig

SHARED_BACKENDS = [name for name in STORAGE_BACKENDS if name not in LOCAL_BACKENDS]


class TestEveryStore(StorageContract):
    @pytest.fixture(params=backend_params(STORAGE_BACKENDS))
    def store_config(self, request: pytest.FixtureRequest) -> StoreConfig:
        return STORAGE_BACKENDS[request.param]


class TestSharedStores(SharedStorageContract):
    @pytest.fixture(params=backend_params(SHARED_BACKENDS))
    def store_config(self, request: pytest.FixtureRequest) -> StoreConfig:
        return STORAGE_BACKENDS[request.param]


@pytest.mark.parametrize("name", sorted(LOCAL_BACKENDS))
def test_the_local_backends_are_listed_truthfully(name: str, make_app: Callable[..., Any], tmp_path: Path) -> None:
    """A backend left out of the shared part of the contract must not declare ``shared``
    (the shared ones prove they declare it: SharedStorageContract's first test)."""
    app = make_app(**STORAGE_BACKENDS[name](tmp_path))
    assert app.extensions["memqueue"].storage.capabilities.shared is False


@pytest.mark.processes
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
    # the dict store declares workflows and abort flags, not capabilities.limits: the limit
    # cases skip (all but the one every store runs), and the shared one
    from flask_memqueue.testing.storage import _RateAndConcurrencyLimits

    skipped = len([n for n in dir(_RateAndConcurrencyLimits) if n.startswith("test_")]) - 1 + 1
    assert f"{contract + shared - skipped} passed, {skipped} skipped" in done.stdout, done.stdout[-2000:]
