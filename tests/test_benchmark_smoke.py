"""benchmarks/run.py runs end to end with tiny sizes (numbers are not judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def test_benchmark_script_runs_and_prints_every_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--contenders", "raw_flask,flask_memqueue", "--workloads", "A,B,C,D"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("### A.", "### B.", "### C.", "### D."):
        assert title in out, out
    # every table has a row for both contenders, and ratios against raw_flask
    assert out.count("| `flask_memqueue` |") == 4, out
    assert out.count("| `raw_flask` |") == 4, out
    assert "1.00×" in out
