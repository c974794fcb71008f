"""GET /memqueue/metrics under real gunicorn with 2 workers: the numbers are the sum over workers.

prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set
for the server, each worker writes its numbers there, and a scrape served by
either worker adds them up. Which worker accepts a connection is the
kernel's choice, so the test makes it certain as tests/test_gunicorn.py does:
a sync worker serves one request at a time, and while one is held in
``/hold/<gate>`` every new connection goes to the other.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from servers import Response, Server, gunicorn, http, wait_until

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TOKEN = "metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 15.0

APP = '''
import os
import time
from pathlib import Path

from flask import Flask, request
from flask_memqueue import MemQueue

DIR = Path(os.environ["MT_DIR"])
mq = MemQueue()


@mq.task(name="work")
def work(n):
    return n * 2


def create_app():
    app = Flask("metrics_app")
    app.config.from_prefixed_env()
    mq.init_app(app)

    @app.post("/work/<int:n>")
    def enqueue(n):
        job = work.delay(n)
        return {"id": job.id}, 202, {"X-Pid": str(os.getpid())}

    @app.get("/hold/<gate>")
    def hold(gate):
        with open(DIR / "held.log", "a") as log:
            log.write(f"{os.getpid()} {gate}\\n")
        deadline = time.monotonic() + 15
        while not (DIR / gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "released"

    return app


app = create_app()
'''

#: gunicorn's hook for multiprocess mode: forget a dead worker's live gauges.
CONFIG = '''
from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
'''


class Hold:
    """A request that keeps one sync worker busy until its gate file exists."""

    def __init__(self, server: Server, data: Path, name: str) -> None:
        self.gate = data / name
        self.response: Response | OSError | None = None
        self.thread = threading.Thread(target=self._run, args=(f"{server.url}/hold/{name}",), daemon=True)
        self.thread.start()

        def held() -> int | None:
            log = data / "held.log"
            lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
            return next((int(pid) for pid, gate in lines if gate == name), None)

        #: The pid of the worker held.
        self.pid: int = wait_until(held, DEADLINE, lambda: f"a worker to take {name}: {server.describe()}")

    def _run(self, url: str) -> None:
        try:
            self.response = http("GET", url, timeout=DEADLINE + 5)
        except OSError as exc:
            self.response = exc

    def release(self) -> None:
        self.gate.touch()
        self.thread.join(DEADLINE)
        assert isinstance(self.response, Response) and self.response.status == 200, self.response


def scrape(server: Server) -> dict[str, float]:
    """{sample name with its labels: value}, summed by prometheus_client over the workers."""
    r = http("GET", server.url + "/memqueue/metrics", headers=AUTH)
    assert r.status == 200, r.text
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def enqueue_on_free_worker(server: Server, held: int, numbers: range) -> set[int]:
    pids = set()
    for n in numbers:
        r = http("POST", f"{server.url}/work/{n}", headers=AUTH)
        assert r.status == 202, r.text
        pids.add(int(r.headers["X-Pid"]))
    assert held not in pids
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="gunicorn tests run on Linux")
def test_counters_are_summed_over_two_workers(tmp_path: Path) -> None:
    src, data, multiproc = tmp_path / "src", tmp_path / "data", tmp_path / "prometheus"
    for d in (src, data, multiproc):
        d.mkdir()
    (src / "metrics_app.py").write_text(APP)
    (src / "gunicorn_conf.py").write_text(CONFIG)
    env = {"MT_DIR": str(data), "FLASK_MEMQUEUE_TOKEN": TOKEN,
           "FLASK_MEMQUEUE_METRICS": "true", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with gunicorn("metrics_app:app", cwd=src, workers=2, env=env, args=["--config", "gunicorn_conf.py"],
                  log_path=tmp_path / "server.log", ready_path="/memqueue/health") as server:
        first = Hold(server, data, "gate-1")
        pids = enqueue_on_free_worker(server, first.pid, range(0, 3))
        second = Hold(server, data, "gate-2")  # the only free worker is the other one
        assert second.pid != first.pid
        first.release()
        pids |= enqueue_on_free_worker(server, second.pid, range(3, 7))
        second.release()
        assert pids == {first.pid, second.pid}  # both workers queued (and so run) some of the 7

        succeeded = "memqueue_jobs_succeeded_total[('queue', 'default'), ('task', 'work')]"
        samples = wait_until(lambda: (s := scrape(server)).get(succeeded) == 7 and s, DEADLINE,
                             lambda: f"7 succeeded jobs in the metrics: {scrape(server)}; {server.describe()}")
        assert samples["memqueue_jobs_enqueued_total[('queue', 'default'), ('task', 'work')]"] == 7
        assert samples["memqueue_jobs_started_total[('queue', 'default'), ('task', 'work')]"] == 7
        assert samples["memqueue_job_duration_seconds_count[('queue', 'default'), ('task', 'work')]"] == 7
        assert samples["memqueue_job_wait_seconds_count[('queue', 'default'), ('task', 'work')]"] == 7
        assert samples["memqueue_consumer_threads[]"] == 2  # one per worker, added up
        assert samples["memqueue_queue_depth[('queue', 'default')]"] == 0
