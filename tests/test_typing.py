"""``mypy --strict`` on tests/typing/check_types.py, so the README's test command covers typing.

CI runs mypy on it too (``[tool.mypy] files``); this test makes a plain
``pytest`` run fail when a decorator loses a signature.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes  # mypy, in a subprocess

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "typing" / "check_types.py"


def test_decorated_tasks_keep_their_types() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
         str(CHECK)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
