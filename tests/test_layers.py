"""The import graph points down: import-linter's contracts in pyproject.toml.

Run here too (not only in .ci/run), so the README's test command catches a
new upward import, a cycle (type-only imports count) or a module above
``storage/`` that names a concrete store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes  # lint-imports, in a subprocess

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        if os.environ.get("CI"):
            pytest.fail("import-linter is not installed in CI (scripts/test.sh installs the dev extra)")
        pytest.skip("import-linter is not installed (it is in the dev extra: pip install -e '.[dev]')")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout
