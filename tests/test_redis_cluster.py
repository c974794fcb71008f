"""The Redis store on a real Redis Cluster (three masters on loopback, the session's one:
``support.servers.redis.shared_redis_cluster``), beyond the storage contract that
``tests/test_storage_contract.py`` runs on it (row ``redis-cluster``): every key an app
writes is in the one hash slot of its prefix's ``{hash tag}``, and a prefix without a
tag is refused at ``init_app``, naming ``prefix``. Also what Sentinel and Cluster URLs
take, and that their passwords are never shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from support.factory import new_job
from support.servers.redis import shared_redis_cluster

from flask_memqueue import ConfigurationError, MemQueue
from flask_memqueue.state import AppQueue


@pytest.mark.parametrize("prefix", ["memqueue:jobs", "memqueue:{}:jobs", "jobs}{"])
def test_a_cluster_prefix_without_a_hash_tag_is_refused_at_init_app_naming_prefix(
        make_app: Callable[..., Flask], prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="'prefix'") as caught:
        make_app(MEMQUEUE_STORAGE="redis+cluster://:s3cret@127.0.0.1:7000,127.0.0.1:7001/",
                 MEMQUEUE_STORAGE_OPTIONS={"prefix": prefix})
    assert "hash tag" in str(caught.value) and "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("url", "words"), [
    ("redis+sentinel://127.0.0.1:26379/", "names the master"),
    ("redis+sentinel://127.0.0.1:notaport/mymaster", "host[:port]"),
    ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
    ("redis+cluster:///", "no host"),
])
def test_bad_sentinel_and_cluster_urls_are_refused_at_init_app(make_app: Callable[..., Flask], url: str,
                                                               words: str) -> None:
    with pytest.raises(ConfigurationError, match="MEMQUEUE_STORAGE") as caught:
        make_app(MEMQUEUE_STORAGE=url)
    assert words in str(caught.value)


def test_sentinel_and_cluster_urls_open_without_connecting_and_hide_the_password(
        make_app: Callable[..., Flask]) -> None:
    sentinel = make_app("s", MEMQUEUE_STORAGE="redis+sentinel://:pw1@127.0.0.1:1,127.0.0.1:2/mymaster/2",
                        MEMQUEUE_STORAGE_OPTIONS={"sentinel_password": "pw2", "wait_replicas": 1})
    cluster = make_app("c", MEMQUEUE_STORAGE="redis+cluster://:pw3@127.0.0.1:1,127.0.0.1:2/")
    shown = [sentinel.extensions["memqueue"].storage.url, cluster.extensions["memqueue"].storage.url]
    assert shown == ["redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/mymaster/2", "redis+cluster://:***@127.0.0.1:1,127.0.0.1:2/"]
    for app, why in ((sentinel, "the sentinels name no reachable master"), (cluster, "can not be reached")):
        answer = app.test_client().get("/memqueue/stats")  # nothing listens on ports 1 and 2
        text = answer.get_data(as_text=True)
        assert answer.status_code == 503 and why in answer.get_json()["error"], text
        assert all(pw not in text for pw in ("pw1", "pw2", "pw3")) and "<redis" not in text, text


@pytest.mark.servers
def test_every_key_an_app_writes_is_in_its_prefix_slot(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    """Queued, scheduled, running, finished, cancelled, unique and periodic jobs, an idle
    consumer's registration: every key under the app's prefix, on every node, hashes to
    the slot of its hash tag (a script on a key of another slot would fail on a cluster;
    this shows none is left for a later one to trip on)."""
    cluster = shared_redis_cluster()
    cluster.flush()

    @mq.task(name="cl.echo")
    def echo(value: Any) -> Any:
        return value

    app = make_app("cluster_keys", MEMQUEUE_STORAGE=cluster.url(), MEMQUEUE_CONSUMER=False)
    queue: AppQueue = app.extensions["memqueue"]
    storage: Any = queue.storage
    with app.app_context():
        mq.enqueue(echo, 1)
        mq.enqueue_in(3600, echo, 2)
        echo.options(unique_key="only-one").delay(3)
        cancelled = mq.enqueue(echo, 4)
        assert cancelled.cancel()
    assert storage.claim_tick("cl.tick", time.time(), new_job(queue, "cl.echo", 5))
    taken = storage.take(0)
    assert taken is not None
    queue.consumer.execute(taken)
    storage.finish(taken)
    while (job := storage.take(0)) is not None:
        queue.consumer.execute(job)
        storage.finish(job)
    assert storage.take(0.05) is None  # an idle consumer registers, and waits on its own list
    prefix = storage.prefix
    slots: dict[int, set[str]] = {}
    for node in cluster.nodes:
        with node.client() as c:
            for key in c.scan_iter(match=f"{prefix}*", count=1000):
                slots.setdefault(int(c.execute_command("CLUSTER", "KEYSLOT", key)), set()).add(key)
    assert len(slots) == 1, {slot: sorted(keys)[:5] for slot, keys in slots.items()}
    keys = next(iter(slots.values()))
    assert any(k.endswith(":j") for k in keys) and any(":x:" in k for k in keys), sorted(keys)
