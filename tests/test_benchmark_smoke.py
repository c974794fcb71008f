"""benchmarks/run.py runs end to end with tiny sizes (numbers are not judged here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

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


@pytest.mark.parametrize("contender", ["flask_memqueue", "raw_flask"])
def test_hotpath_round_trips_run_each_job_once_they_enqueue(contender: str) -> None:
    """hotpath.py --latency's child (what valgrind counts): every round trip's job starts
    (it raises TimeoutError otherwise) and the process exits 0."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "hotpath.py"), "--child", "c", "--n", "5", "--contender", contender],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_hotpath_path_counts_the_bytecodes_of_cs_critical_path() -> None:
    """hotpath.py --path: a count, and the functions it ran in (the store's put among them)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "hotpath.py"), "--path"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"flask_memqueue: \d+ bytecodes from enqueue\(\) to the job.s first line", proc.stdout)
    assert found, proc.stdout
    assert "memory.py:put" in proc.stdout and "producer.py:enqueue" in proc.stdout, proc.stdout


def _git_checkout() -> bool:
    try:
        subprocess.run(["git", "-C", str(SCRIPT.parent), "rev-parse", "--verify", "HEAD"],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def test_benchmark_runs_a_git_ref_beside_the_working_tree() -> None:
    """--baseline REF: the ref's package, from a temporary directory, in the same run;
    every table gets a "× REF" column and a last table compares the two."""
    if not _git_checkout():
        pytest.skip("--baseline takes a git ref: this test needs git and a git checkout of the project")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--contenders", "raw_flask,flask_memqueue", "--workloads", "A,B",
         "--baseline", "HEAD"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("| `flask_memqueue@HEAD` |") == 2 and "| × HEAD |" in out, out
    assert "### The working tree against HEAD" in out, out
    # each cell says where its flask_memqueue came from: the baseline's own copy, not the working tree
    found = dict(re.findall(r"\] A (flask_memqueue(?:@HEAD)?): .*'from': '([^']+)'", proc.stderr))
    assert found["flask_memqueue"] == str(SCRIPT.parent.parent), proc.stderr
    assert found["flask_memqueue@HEAD"] != found["flask_memqueue"] and "mqbench-HEAD-" in found["flask_memqueue@HEAD"]
    assert not Path(found["flask_memqueue@HEAD"]).exists()  # removed after the run


AMQP_SCRIPT = SCRIPT.with_name("amqp_bench.py")


@pytest.mark.servers
@pytest.mark.slow
def test_amqp_benchmark_script_runs(rabbitmq: object) -> None:
    """benchmarks/amqp_bench.py starts its own broker and prints its tables (the rabbitmq
    fixture only decides skip or fail when rabbitmq-server is missing)."""
    proc = subprocess.run(
        [sys.executable, str(AMQP_SCRIPT), "--quick", "--contenders", "bare_pika,flask_memqueue", "--workloads", "P,E"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for title in ("### P.", "### E."):
        assert title in proc.stdout, proc.stdout
    assert proc.stdout.count("| `flask_memqueue` |") == 2, proc.stdout + proc.stderr
    assert "| — |" not in proc.stdout and "failed" not in proc.stderr, proc.stdout + proc.stderr  # every cell ran
    assert "1.00×" in proc.stdout
