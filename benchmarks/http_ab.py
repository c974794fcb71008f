#!/usr/bin/env python3
"""Workload E, narrowed: where does an enqueueing view lose requests/s?

    python benchmarks/http_ab.py --rounds 3          # needs waitress and wrk (Debian: apt-get install wrk)

Serves one variant at a time with waitress (4 threads) on 127.0.0.1 and drives
it with wrk (1 thread, 8 connections, 1 s warm-up, then --seconds of load),
alternating the variants round after round so drift hits all alike. Prints
the mean req/s per variant and its ratio to ``none``:

  none         the view enqueues nothing
  raw_flask    queue.Queue + one consumer thread with an app context per job
  memqueue     mq.enqueue() with the consumer running (the real thing)
  enqueue_only mq.enqueue() with no consumer (MEMQUEUE_CONSUMER=False): the enqueue's own cost
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

VARIANTS = ("none", "raw_flask", "memqueue", "enqueue_only")


def serve(variant: str, port: int) -> None:
    import logging
    import queue
    import threading

    import waitress
    from flask import Flask

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    app = Flask("http_ab")

    def noop(*args: object) -> None:
        pass

    enqueue = None
    if variant == "raw_flask":
        q: queue.Queue[tuple[object, tuple[object, ...]]] = queue.Queue()

        def consume() -> None:
            while True:
                fn, args = q.get()
                with app.app_context():
                    fn(*args)  # type: ignore[operator]

        threading.Thread(target=consume, daemon=True).start()

        def enqueue(fn: object, *args: object) -> None:
            q.put((fn, args))

    elif variant in ("memqueue", "enqueue_only"):
        from flask_memqueue import MemQueue

        app.config.update(MEMQUEUE_MAXSIZE=0, MEMQUEUE_URL_PREFIX=None)
        if variant == "enqueue_only":
            app.config.update(MEMQUEUE_CONSUMER=False, TESTING=True)
        enqueue = MemQueue(app).enqueue

    @app.post("/produce")
    def produce() -> tuple[dict[str, bool], int]:
        if enqueue is not None:
            enqueue(noop, "x" * 64)
        return {"queued": True}, 202

    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(variant: str, seconds: int) -> float:
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", variant, str(port)])
    url = f"http://127.0.0.1:{port}/produce"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{variant}: the server did not start") from None
                time.sleep(0.1)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "post.lua")
        wrk = ["wrk", "-t1", "-c8", "-s", script]
        subprocess.run([*wrk, "-d1s", url], capture_output=True, timeout=60)
        out = subprocess.run([*wrk, f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 60).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if match is None:
            raise RuntimeError(f"{variant}: no result from wrk:\n{out}")
        return float(match.group(1))
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            results[v].append(measure(v, args.seconds))
            print(f"round {r + 1}: {v} {results[v][-1]:,.0f} req/s", file=sys.stderr)
    base = sum(results["none"]) / len(results["none"]) if results.get("none") else None
    for v, values in results.items():
        mean = sum(values) / len(values)
        ratio = f"{mean / base:.2f}× none" if base else ""
        print(f"{v:14s} {mean:8,.0f} req/s  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
