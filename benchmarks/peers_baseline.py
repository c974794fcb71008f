#!/usr/bin/env python3
"""The shared peers harness (``bench/peers.py``), with a git ref of flask-memqueue beside the working tree.

    python benchmarks/peers_baseline.py --harness ../shared/bench/peers.py \\
        --contenders raw_flask,flask_memqueue --workloads A,B,C,D --reps 7

runs every flask-memqueue contender of the harness twice in the same run: as
``flask_memqueue`` (this checkout, whatever else is on ``sys.path``) and as
``flask_memqueue@e959e79`` (``--baseline REF``, default the last release),
rotated with the others, one fresh process per cell, and ends with a table of
the working tree against the baseline. Every other option is the harness's
own (``--reps``, ``--n``, ``--ref``, ``--json`` ...).

How: this script loads the harness as a module, registers the extra
contenders, and makes the harness start its per-cell children through this
script (so they know the extra contenders too). Without this wrapper, the
harness runs whichever flask_memqueue ``PYTHONPATH`` names, one per run:
``PYTHONPATH=<checkout> python bench/peers.py ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
from typing import Any

import baseline

LABEL_ENV = "MEMQUEUE_BENCH_BASELINE_LABEL"
HARNESS_ENV = "MEMQUEUE_BENCH_HARNESS"
#: The harness's contenders that run flask-memqueue.
OURS = ("flask_memqueue", "flask_memqueue_redis")


def load_harness(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("peers", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--harness {path}: not a Python file")
    peers = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = peers
    spec.loader.exec_module(peers)
    # The harness starts each cell as `python <its __file__> --child ...`: through us instead.
    peers.__file__ = os.path.abspath(__file__)
    return peers


def _from(setup: Any, where: str) -> Any:
    """``setup`` run with flask_memqueue imported from ``where``."""

    def run(start: bool) -> Any:
        baseline.use(where)
        return setup(start)

    return run


def _probe_from(probe: Any, where: str) -> Any:
    """``probe`` (which starts a Python subprocess) with ``where`` first on its ``PYTHONPATH``."""

    def run(url: str | None) -> str | None:
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = where + (os.pathsep + saved if saved else "")
        try:
            return probe(url)  # type: ignore[no-any-return]
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    return run


def register(peers: Any, directory: str, label: str) -> list[str]:
    """Pin ``flask_memqueue*`` to the working tree; add ``flask_memqueue*@label`` from ``directory``."""
    added = []
    for name in OURS:
        original = peers.CONTENDERS.get(name)
        if original is None:
            continue
        setup = original.setup
        copy = dataclasses.replace(
            original,
            name=f"{name}@{label}",
            setup=_from(setup, directory),
            description=f"{original.description} ({label}, from {directory})",
            probe=None if original.probe is None else _probe_from(original.probe, directory),
        )
        original.setup = _from(setup, baseline.WORKTREE)
        if original.probe is not None:
            original.probe = _probe_from(original.probe, baseline.WORKTREE)
        peers.CONTENDERS[copy.name] = copy
        added.append(name)
    return added


def against_baseline(summary: dict[str, Any], label: str, metrics: dict[str, Any], fmt: Any = str) -> str:
    """Markdown: each flask-memqueue contender's medians against its baseline's, same run."""
    lines = [f"### The working tree against {label} (same run; medians; × = working tree ÷ {label})", ""]
    lines.append(f"| workload | metric | contender | working tree | {label} | × {label} | better |")
    lines.append("|---|---|---|---|---|---|---|")
    for w, per in summary.items():
        for name in OURS:
            cur, base = per.get(name, {}), per.get(f"{name}@{label}", {})
            for key, title, higher in metrics[w]:
                if key not in cur or key not in base:
                    continue
                a, b = cur[key]["median"], base[key]["median"]
                better = (a > b) if higher else (a < b)
                lines.append(
                    f"| {w} | {title} ({'higher' if higher else 'lower'} is better) | `{name}` | {fmt(a)} | {fmt(b)}"
                    f" | {a / b:.2f}× | {'yes' if better else 'no'} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--harness", default=os.environ.get(HARNESS_ENV), help="path of bench/peers.py")
    parser.add_argument("--baseline", default=baseline.DEFAULT_REF, help="git ref to run beside the working tree")
    parser.add_argument("--baseline-dir", help="a directory holding the baseline's flask_memqueue/ instead of a ref")
    parser.add_argument("-h", "--help", action="store_true")
    own, rest = parser.parse_known_args(argv)
    if own.help:
        print(__doc__)
        return 0
    if not own.harness:
        raise SystemExit("--harness PATH (the shared bench/peers.py) is required")
    harness = os.path.abspath(own.harness)
    child = "--child" in rest or "--serve" in rest
    made = None
    if child:  # a cell: the parent chose the baseline
        directory, label = os.environ[baseline.ENV], os.environ[LABEL_ENV]
    elif own.baseline_dir:
        directory, label = os.path.abspath(own.baseline_dir), os.path.basename(os.path.abspath(own.baseline_dir))
    else:
        directory, label = baseline.checkout(own.baseline)
        made = directory
    os.environ[baseline.ENV], os.environ[LABEL_ENV], os.environ[HARNESS_ENV] = directory, label, harness
    sys.path.insert(0, baseline.WORKTREE)  # the parent's find_spec("flask_memqueue") sees the working tree
    peers = load_harness(harness)
    ours = register(peers, directory, label)
    opts = peers.parse_args(rest)
    if opts.child:
        peers.child_main(opts)
        return 0
    if opts.serve:
        peers.serve_main(opts)
        return 0
    try:
        if opts.list or opts.render:
            return int(peers.parent_main(opts))
        names = [n.strip() for n in opts.contenders.split(",") if n.strip()] or [
            n for n in peers.CONTENDERS if n != "none" and "@" not in n
        ]
        names += [f"{n}@{label}" for n in ours if n in names and f"{n}@{label}" not in names]
        opts.contenders = ",".join(names)
        saved = opts.json
        if not saved:
            fd, opts.json = tempfile.mkstemp(suffix=".json", prefix="peers-baseline-")
            os.close(fd)
        code = int(peers.parent_main(opts))
        with open(opts.json) as f:
            summary = json.load(f)["summary"]
        if not saved:
            os.unlink(opts.json)
        print(against_baseline(summary, label, peers.METRICS, getattr(peers, "_fmt", str)))
        return code
    finally:
        if made is not None:
            baseline.remove(made)


if __name__ == "__main__":
    sys.exit(main())

