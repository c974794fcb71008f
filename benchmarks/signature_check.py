#!/usr/bin/env python3
"""What checking a call against the task's signature costs at enqueue (issue 25).

    python benchmarks/signature_check.py            # the check alone, then whole enqueues
    python benchmarks/signature_check.py --n 50000

The check alone is timed as the enqueue path runs it (AppQueue.new_job): the
inline range test for positional arguments, Task.check_call for keywords (a
layout seen before, then a first one), next to ``pass`` and to
``inspect.Signature.bind``, the obvious way it costs. Then whole enqueues on
the memory store (no consumer: nothing runs), which include the check: run it
beside a checkout without the check (another venv's python) to compare.
Every figure is the minimum of 7 timeit repeats, in microseconds.
"""

from __future__ import annotations

import argparse
import inspect
import timeit
from typing import Any

from flask import Flask

from flask_memqueue import MemQueue, Task


def add(a: int, b: int, c: int = 0) -> int:
    return a + b + c


def best(stmt: str, namespace: dict[str, Any], n: int) -> float:
    return min(timeit.repeat(stmt, number=n, repeat=7, globals=namespace)) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="calls per timing")
    n = parser.parse_args().n

    task: Task[..., Any] = Task(add, "add")
    ns: dict[str, Any] = {"t": task, "args": (1, 2), "args1": (1,), "kw": {}, "kw2": {"b": 2},
                          "sig": inspect.signature(add)}
    if hasattr(task, "check_call"):
        task.check_call((1, 2), {})
        check = [
            ("check, positional (inline range test)",
             "if kw or not t.min_args <= len(args) <= t.max_args: t.check_call(args, kw)"),
            ("check, keywords (a layout seen before)",
             "if kw2 or not t.min_args <= len(args1) <= t.max_args: t.check_call(args1, kw2)"),
            ("check, keywords the first time", "t.check_call(args1, kw2); t._call_spec.good_shapes.clear()"),
        ]
    else:
        check = []
    for label, stmt in [("pass", "pass"), *check, ("Signature.bind(1, 2), for comparison", "sig.bind(*args)")]:
        print(f"{label:42s} {best(stmt, ns, n * 10):7.3f} us")

    mq = MemQueue()
    registered = mq.task(add)
    app = Flask("bench")
    app.config.update(TESTING=True, MEMQUEUE_CONSUMER=False, MEMQUEUE_MAXSIZE=0)
    mq.init_app(app)
    with app.app_context():
        queue = app.extensions["memqueue"]
        for label, stmt in [("enqueue: delay(1, 2)", "t.delay(1, 2)"), ("enqueue: delay(1, b=2)", "t.delay(1, b=2)"),
                            ("enqueue: mq.enqueue(add, 1, 2)", "mq.enqueue(t, 1, 2)")]:
            print(f"{label:42s} {best(stmt, {'t': registered, 'mq': mq}, n):7.3f} us")
        queue.shutdown(wait=False)  # the queued jobs are cancelled, quietly enough for a benchmark


if __name__ == "__main__":
    main()
