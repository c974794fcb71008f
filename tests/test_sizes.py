"""The package's rooms stay small: no class over 400 lines, no function over 60.

Ruff's C901 (``max-complexity = 12`` in pyproject.toml) holds the complexity;
these two limits ruff has no rule for. Counted from the ``def``/``class`` line
(decorators excluded) to the last line of the body, docstring included.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flask_memqueue"
MAX_CLASS = 400
MAX_FUNCTION = 60


def _oversize(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {lines} lines > {limit}")
    return found


def test_no_class_over_400_lines_and_no_function_over_60() -> None:
    assert _oversize() == []


def test_the_size_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n", encoding="utf-8")
    found = _oversize(tmp_path)
    assert len(found) == 1 and "long: 61 lines > 60" in found[0]
