"""GET /memqueue/metrics under real gunicorn with 2 workers: the numbers are the sum over workers.

prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set
for the server, each worker writes its numbers there, and a scrape served by
either worker adds them up. Which worker accepts a connection is the
kernel's choice, so the test makes it certain as tests/test_gunicorn.py does:
a sync worker serves one request at a time, and while one is held
(:class:`support.harness.Hold`) every new connection goes to the other.
The app is ``tests/apps/metrics_app.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.harness import Env, Hold
from support.net import http
from support.processes import Server
from support.waiting import wait_until

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TOKEN = "metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 15.0

pytestmark = pytest.mark.processes

#: gunicorn's hook for multiprocess mode: forget a dead worker's live gauges.
CONFIG = '''
from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
'''


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
def test_counters_are_summed_over_two_workers(make_env: Callable[..., Env], tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = make_env("metrics_app", target="metrics_app:app", FLASK_MEMQUEUE_TOKEN=TOKEN,
                   FLASK_MEMQUEUE_METRICS="true", PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    (env.src / "gunicorn_conf.py").write_text(CONFIG)
    with env.gunicorn(workers=2, args=["--config", "gunicorn_conf.py"], ready_path="/memqueue/health") as server:
        first = Hold(server, env, "gate-1")
        pids = enqueue_on_free_worker(server, first.pid, range(0, 3))
        second = Hold(server, env, "gate-2")  # the only free worker is the other one
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
