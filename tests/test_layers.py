"""The import graph points down: import-linter's contracts in pyproject.toml.

Run here too (not only in .ci/run), so the README's test command catches a
new upward import, a cycle (type-only imports count) or a module outside
``storage/`` that names a concrete store. The coverage checks below need no
import-linter: a new module (or package) of flask_memqueue that the five
layers or the "names no concrete store" contract leave out fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_memqueue"


def _contracts() -> list[dict[str, Any]]:
    # tomllib is 3.11+; on 3.10 the lint-imports run below still checks the layers (exhaustive).
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs tomllib (Python 3.11+)")
    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["importlinter"]["contracts"])


def _children() -> set[str]:
    """Every module and package directly inside flask_memqueue (as lint-imports sees them)."""
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def _contract(name_starts: str) -> dict[str, Any]:
    found = [c for c in _contracts() if c["name"].startswith(name_starts)]
    assert len(found) == 1, f"pyproject.toml has no single import-linter contract named {name_starts!r}..."
    return found[0]


def test_the_layers_name_every_module_once() -> None:
    layers = _contract("Layers: api -> web -> runtime -> storage -> model")
    assert layers["exhaustive"] is True and layers["containers"] == ["flask_memqueue"]
    named = [m for layer in layers["layers"] for m in re.split(r"[|:]", layer)]
    named = [m.strip() for m in named]
    assert len(layers["layers"]) == 5
    assert sorted(named) == sorted(set(named)), "a module is named in two layers"
    assert set(named) == _children(), f"not in a layer: {_children() - set(named)}; gone: {set(named) - _children()}"


def test_every_module_outside_storage_is_forbidden_a_concrete_store() -> None:
    forbidden = _contract("Nothing outside storage names a concrete store")
    sources = {m.removeprefix("flask_memqueue.") for m in forbidden["source_modules"]}
    assert sources == _children() - {"storage"}, f"missing: {_children() - {'storage'} - sources}"
    for backend in ("memory", "sqlite", "redis", "postgres", "durable"):
        assert f"flask_memqueue.storage.{backend}" in forbidden["forbidden_modules"]


@pytest.mark.processes  # lint-imports, in a subprocess
def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        if os.environ.get("CI"):
            pytest.fail("import-linter is not installed in CI (scripts/test.sh installs the dev extra)")
        pytest.skip("import-linter is not installed (it is in the dev extra: pip install -e '.[dev]')")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


def test_a_plain_app_loads_neither_asyncio_nor_subprocess() -> None:
    """asyncio (about 2,200 objects that every full garbage collection walks, ~9 ms to
    import), subprocess and runpy load with the features that need them (an ``async def``
    task, an isolated one), not with the extension: an app of plain tasks on the memory
    store, enqueueing and running a job, never imports them."""
    script = (
        "import sys, flask\n"
        "from flask_memqueue import MemQueue\n"
        "app = flask.Flask('plain'); app.config['MEMQUEUE_URL_PREFIX'] = None\n"
        "mq = MemQueue(app)\n"
        "@mq.task\n"
        "def add(a, b): return a + b\n"
        "with app.app_context():\n"
        "    job = add.delay(1, 2)\n"
        "    assert job.wait(timeout=10) == 3\n"
        "mq.shutdown()\n"
        "print(sorted(m for m in ('asyncio', 'subprocess', 'runpy', 'concurrent.futures') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
