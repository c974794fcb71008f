"""docs/testing.rst is one test module: its examples, run by pytest as a user's suite would.

The docs' snippet runner only executes the blocks (defining the tests);
here pytest runs the tests they define, with the plugin from its entry
point, so a guide whose tests fail, or whose fixtures changed, fails CI.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.processes

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "testing.rst"


def python_blocks(text: str) -> list[str]:
    """The bodies of the page's ``.. code-block:: python`` directives, dedented."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)\.\. code-block:: python\s*$", line)
        if match is None:
            continue
        indent = len(match[1])
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].strip().startswith(":")):
            j += 1
        start = j
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            j += 1
        blocks.append(textwrap.dedent("\n".join(lines[start:j])))
    return blocks


def test_the_testing_guide_passes_as_a_test_module(pytester: pytest.Pytester) -> None:
    blocks = python_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 7, "the guide's examples were not found"
    pytester.makepyfile(test_guide="\n\n".join(blocks))
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    tests = sum(block.count("\ndef test_") + block.startswith("def test_") for block in blocks)
    assert tests >= 5
    result.assert_outcomes(passed=tests)
