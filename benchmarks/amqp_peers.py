"""The Celery and Dramatiq sides of benchmarks/amqp_bench.py: a no-op task each, on RabbitMQ.

Imported by the benchmark (to publish) and by the peers' own worker commands
(``celery -A amqp_peers worker``, ``dramatiq amqp_peers``), from this
directory. ``BENCH_PEER`` says which one to define, ``BENCH_URL`` the broker,
``BENCH_QUEUE`` the queue, ``BENCH_COUNT_FILE`` the file every handled
message adds one byte to (the benchmark counts them by its size).
"""

from __future__ import annotations

import os
from typing import Any

PEER = os.environ.get("BENCH_PEER", "")
URL = os.environ.get("BENCH_URL", "")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
_fd: int | None = None


def handled() -> None:
    """One byte per handled message, one O_APPEND write (several worker threads never clash)."""
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["BENCH_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, b".")


if PEER == "celery":
    from celery import Celery

    app = Celery("amqp_peers", broker=URL)
    app.conf.update(
        broker_transport_options={"confirm_publish": True},  # a published task is confirmed, as ours
        task_acks_late=True,  # acknowledged after the task ran: at-least-once, as ours
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="bench.noop")
    def noop(message: Any) -> None:
        handled()

    def publish(message: Any) -> None:
        noop.delay(message)

elif PEER == "dramatiq":
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=URL, confirm_delivery=True)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=QUEUE, max_retries=0)
    def noop(message: Any) -> None:
        handled()

    def publish(message: Any) -> None:
        noop.send(message)
