"""The documentation site builds with warnings as errors, and its references are complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flask_memqueue.config import PREFIX, SETTINGS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.mark.processes
@pytest.mark.slow
def test_the_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    try:
        import sphinx  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("sphinx is not installed in CI (the test extra installs it)")
        pytest.skip("sphinx is not installed: pip install -e '.[test]'")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "index.html").exists()
    assert (tmp_path / "html" / "storage.html").exists()


def test_the_configuration_page_lists_every_key() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [PREFIX + name for name in SETTINGS if f"`{PREFIX}{name}`" not in text]
    assert missing == [], f"docs/configuration.md does not describe {missing}"


def test_the_http_page_lists_every_route() -> None:
    from flask import Flask

    from flask_memqueue import MemQueue

    app = Flask("routes")
    app.config["TESTING"] = True
    MemQueue(app)
    text = (DOCS / "http.md").read_text(encoding="utf-8")
    try:
        rules = {
            re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"<\1>", r.rule).replace("<job_id>", "<id>").removeprefix("/memqueue")
            or "/"
            for r in app.url_map.iter_rules() if r.endpoint.startswith("memqueue.")
        }
        missing = sorted(rule for rule in rules if not re.search(r"[ `]" + re.escape(rule) + r"[`?,]", text))
        assert missing == [], f"docs/http.md does not describe {missing}"
    finally:
        app.extensions["memqueue"].shutdown()


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    pages = {p.stem for p in DOCS.iterdir() if p.suffix in (".rst", ".md")} - {"index"}
    assert sorted(p for p in pages if f"   {p}\n" not in index) == []
