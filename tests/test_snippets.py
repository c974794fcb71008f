"""Every Python example in README.md and docs/ (reST and Markdown pages) runs, so none of them rots.

The convention (the pytest-markdown-docs style): each page is one test. Its
Python blocks (```python fences in Markdown, ``.. code-block:: python`` in
reST) run in order, in one fresh namespace, with a temporary directory as the
working directory, so a later block may use what an earlier block of the same
page defined. ``__name__`` is ``"docs_snippet"``, not ``"__main__"``: a block
that starts a server guards it with ``if __name__ == "__main__":`` and runs
like an import. Afterwards every queue the page bound is shut down.

A block that cannot run as Python on its own (none do today) is preceded by
a marker naming why: ``<!-- snippet: skip <reason> -->`` in Markdown,
``.. snippet: skip <reason>`` (a reST comment) in reST. A marker without a
reason fails the test.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.waiting import TIMEOUT

from flask_memqueue import MemQueue
from flask_memqueue.state import _QUEUES

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted([*(ROOT / "docs").glob("*.rst"), *(ROOT / "docs").glob("*.md")])]

_MARKER = re.compile(r"^\s*(?:<!--|\.\.)\s*snippet:\s*skip\b(?P<reason>.*?)(?:-->)?\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)```python\s*$")
_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. code-block::\s*python3?\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the block's first line of code
    source: str
    skip: str | None  # the reason, if a marker says to skip it


def _skip_reason(lines: list[str], index: int, path: Path) -> str | None:
    """The skip marker on the last non-blank line before ``lines[index]``, if any."""
    for previous in reversed(lines[:index]):
        if not previous.strip():
            continue
        match = _MARKER.match(previous)
        if match is None:
            return None
        reason = match["reason"].strip()
        if not reason:
            raise ValueError(f"{path}:{index}: a 'snippet: skip' marker must say why the block cannot run")
        return reason
    return None


def markdown_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{i + 1}: a ```python block is never closed")
        source = textwrap.dedent("\n".join(lines[start:end]))
        blocks.append(Block(path, start + 1, source, _skip_reason(lines, i, path)))
        i = end + 1
    return blocks


def rest_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].strip().startswith(":")):
            if lines[j].strip().startswith(":") and len(lines[j]) - len(lines[j].lstrip()) <= indent:
                break
            j += 1
        start = j
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            j += 1
        body = lines[start:j]
        if not "".join(body).strip():
            raise ValueError(f"{path}:{i + 1}: an empty code-block")
        blocks.append(Block(path, start + 1, textwrap.dedent("\n".join(body)), _skip_reason(lines, i, path)))
    return blocks


def page_blocks(path: Path) -> list[Block]:
    return markdown_blocks(path) if path.suffix == ".md" else rest_blocks(path)


def _shutdown_everything(namespace: dict[str, Any], before: set[int]) -> None:
    """Shut down every queue the page's blocks bound, so no consumer thread outlives the test
    (also those of an app a later block rebound the name of: ``app = Flask(...)`` twice)."""
    for queue in list(_QUEUES):
        if id(queue) not in before and not queue.closed:
            queue.shutdown(wait=True, timeout=TIMEOUT)
    for value in list(namespace.values()):
        if isinstance(value, MemQueue):
            value.shutdown(wait=True, timeout=TIMEOUT)
        elif isinstance(value, Flask):
            queue = value.extensions.get("memqueue")
            if queue is not None and not queue.closed:
                queue.shutdown(wait=True, timeout=TIMEOUT)


def run_page(path: Path) -> int:
    """Run a page's Python blocks in order in one namespace; returns how many ran."""
    namespace: dict[str, Any] = {"__name__": "docs_snippet"}
    before = {id(queue) for queue in _QUEUES}
    ran = 0
    try:
        for block in page_blocks(path):
            if block.skip is not None:
                continue
            # Pad with newlines so a traceback points at the page's own line.
            code = compile("\n" * (block.line - 1) + block.source, str(path), "exec")
            try:
                exec(code, namespace)
            except BaseException as exc:
                line, tb = block.line, exc.__traceback__
                while tb is not None:  # the failing line of the page, not just the block's first
                    if tb.tb_frame.f_code.co_filename == str(path):
                        line = tb.tb_lineno
                    tb = tb.tb_next
                raise AssertionError(
                    f"the example at {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
                    f" does not run: {type(exc).__name__}: {exc}"
                ) from exc
            ran += 1
    finally:
        _shutdown_everything(namespace, before)
    return ran


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples_run(path: Path, in_tmp_dir: Path) -> None:
    run_page(path)


def test_the_pages_have_examples() -> None:
    """The collector finds blocks where there are some (a parser gone blind would pass everything)."""
    counts = {p.name: len(page_blocks(p)) for p in PAGES}
    assert counts["README.md"] >= 1
    for name in ("index.rst", "quickstart.md", "tasks.md", "storage.rst", "testing.rst", "metrics.rst", "journal.md"):
        assert counts[name] >= 1, f"docs/{name} has no Python example the tests found"
    for path in PAGES:  # no block is skipped silently: a marker always has a reason
        for block in page_blocks(path):
            assert block.skip is None or block.skip


def test_a_broken_example_fails(tmp_path: Path, in_tmp_dir: Path) -> None:
    page = tmp_path / "page.rst"
    page.write_text(
        "Title\n=====\n\n.. code-block:: python\n\n    x = 1\n\nText.\n\n"
        ".. code-block:: python\n   :caption: uses the block before\n\n    assert x == 1\n    y = undefined_name\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match=r"page.rst:14 does not run: NameError"):
        run_page(page)


def test_markdown_blocks_and_skip_markers(tmp_path: Path, in_tmp_dir: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```python\nvalue = 2\n```\n\n<!-- snippet: skip needs a terminal -->\n```python\ninput()\n```\n\n"
        "```sh\nexit 1\n```\n\n```python\nassert value == 2\n```\n",
        encoding="utf-8",
    )
    blocks = markdown_blocks(page)
    assert [b.skip for b in blocks] == [None, "needs a terminal", None]
    assert run_page(page) == 2
    page.write_text("<!-- snippet: skip -->\n```python\npass\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must say why"):
        markdown_blocks(page)


def test_queues_are_shut_down_after_a_page(tmp_path: Path, in_tmp_dir: Path) -> None:
    page = tmp_path / "page.rst"
    page.write_text(
        ".. code-block:: python\n\n"
        "    from flask import Flask\n"
        "    from flask_memqueue import MemQueue\n\n"
        "    mq = MemQueue()\n"
        "    app = Flask(__name__)\n"
        "    mq.init_app(app)\n"
        "    with app.app_context():\n"
        "        job = mq.enqueue(print, 'hello')\n",
        encoding="utf-8",
    )
    assert run_page(page) == 1
    # the autouse leak detector fails this test if the consumer thread still runs
