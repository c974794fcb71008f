"""Checked by ``mypy --strict`` (see ``[tool.mypy]`` in pyproject.toml), never run.

Proves that ``@mq.task`` and ``@mq.handler`` keep a function's signature: the
``assert_type`` lines must hold, and every line marked ``# type: ignore[...]``
must stay an error (``warn_unused_ignores`` fails the check if one passes).
tests/test_typing.py runs mypy on this file, so the suite covers it too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from typing_extensions import assert_type

from flask_memqueue import Call, Job, MemQueue, Task, current_job, enqueue

mq = MemQueue()


@mq.task
def resize(path: str, width: int = 100) -> bytes:
    return path.encode() * width


@mq.task(retries=3, retry_delay=0.5)
def count(items: list[int], *, scale: float = 1.0) -> float:
    return len(items) * scale


@mq.handler
def on_message(message: Any) -> None:
    return None


@mq.handler("orders")
def on_order(message: dict[str, int]) -> int:
    return len(message)


# -- the decorators keep the signature --------------------------------------------
# (assert_type cannot spell parameter names, so: assignable to the right
# signature, and not to a wrong one, as Task[..., Any] would be.)
resize_task: Task[[str, int], bytes] = resize
as_callable: Callable[[str], bytes] = resize
order_task: Task[[dict[str, int]], int] = on_order
message_task: Task[[Any], None] = on_message
wrong_params: Callable[[int], bytes] = resize  # type: ignore[assignment]
wrong_result: Callable[[str], int] = resize  # type: ignore[assignment]
wrong_handler: Callable[[str], int] = on_order  # type: ignore[assignment]

# -- calling a task calls the function ----------------------------------------------
assert_type(resize("a.png"), bytes)
assert_type(count([1, 2], scale=2.0), float)
resize(123)  # type: ignore[arg-type]
resize("a.png", width="wide")  # type: ignore[arg-type]
count([1], 2.0)  # type: ignore[call-arg]
resize()  # type: ignore[call-arg]

# -- .delay() takes exactly the parameters and returns a Job of the result -----------
job = resize.delay("a.png", width=10)
assert_type(job, Job[bytes])
assert_type(job.wait(), bytes)
assert_type(job.wait(timeout=1.0), bytes)
assert_type(job.result, bytes | None)
assert_type(count.delay([1, 2, 3], scale=0.5).wait(), float)
assert_type(on_order.delay({"a": 1}), Job[int])
resize.delay(123)  # type: ignore[arg-type]
resize.delay("a.png", height=3)  # type: ignore[call-arg]
count.delay([1], 2.0)  # type: ignore[call-arg]

# -- enqueue and friends check the arguments against the callable --------------------
assert_type(mq.enqueue(resize, "a.png"), Job[bytes])
assert_type(mq.enqueue(len, "abc"), Job[int])
assert_type(mq.enqueue_in(5, resize, "a.png"), Job[bytes])
assert_type(mq.enqueue_in(dt.timedelta(seconds=5), count, [1]), Job[float])
assert_type(mq.enqueue_at(dt.datetime.now(dt.timezone.utc), resize, "a.png", 3), Job[bytes])
assert_type(enqueue(resize, "a.png"), Job[bytes])
assert_type(mq.enqueue("module.resize", 1, 2), Job[Any])  # by name: nothing to check against
mq.enqueue(resize, 123)  # type: ignore[call-overload]
mq.enqueue_in(5, resize)  # type: ignore[call-overload]
enqueue(count, "not a list")  # type: ignore[call-overload]

# -- a bare Job is a Job[Any]; current_job is one --------------------------------------
assert_type(current_job, Job[Any])


def untyped_result(j: Job) -> Any:  # no "missing type parameters" error
    return j.wait()


# -- per-call options keep the signature too (issue 11) ---------------------------
assert_type(resize.options(queue="images", priority=10).delay("a.png", 3), Job[bytes])
assert_type(resize.options(priority=-1).enqueue_in(5, "a.png"), Job[bytes])
assert_type(count.options(queue="q").enqueue_at(dt.datetime.now(dt.timezone.utc), [1], scale=2.0), Job[float])
assert_type(mq.options(queue="q").enqueue(resize, "a.png"), Job[bytes])
assert_type(mq.options(priority=5).enqueue_in(1, count, [1]), Job[float])
assert_type(mq.options().enqueue("module.resize", 1), Job[Any])
resize.options(queue="q").delay(3)  # type: ignore[arg-type]
mq.options(queue="q").enqueue(resize, 3)  # type: ignore[call-overload]


# -- periodic tasks keep their signature; unique keys are an option, not a job argument ---
@mq.periodic("*/10 * * * *")
def purge() -> int:
    return 0


@mq.periodic(every=dt.timedelta(seconds=30), timezone=None, catch_up=False, queue="default")
def refresh() -> str:
    return "ok"


purge_task: Task[[], int] = purge
assert_type(purge(), int)
assert_type(refresh.delay(), Job[str])
purge(1)  # type: ignore[call-arg]
assert_type(resize.options(unique_key="resize:a.png").delay("a.png"), Job[bytes])
assert_type(mq.options(unique_key="k").enqueue(resize, "a.png"), Job[bytes])
resize.options(unique_key=42)  # type: ignore[arg-type]


# -- call objects: task.s(...) / task.si(...) ----------------------------------------
# s: the function's own call, or the call without its first positional argument
# (a chain's previous result fills it in); keyword names and types always checked.
assert_type(resize.s("a.png", width=10), Call[bytes])
assert_type(resize.s(width=10), Call[bytes])  # the path left to a chain
assert_type(resize.s("a.png").options(queue="images", priority=5), Call[bytes])
assert_type(resize.s("a.png").delay(), Job[bytes])
assert_type(count.s([1], scale=2.0), Call[float])
resize.s("a.png", widht=10)  # type: ignore[call-overload]
resize.s("a.png", width="wide")  # type: ignore[call-overload]
resize.s(123, 5)  # type: ignore[call-overload]  # (resize.s(123) type-checks: 123 falls on width)
count.s(scale="big")  # type: ignore[call-overload]
resize.s("a.png").options(priority="high")  # type: ignore[arg-type]
# si: immutable (ignores a chain's result), so the whole call, as delay() takes it.
assert_type(resize.si("a.png", width=10), Call[bytes])
resize.si(width=10)  # type: ignore[call-arg]
resize.si("a.png", width="wide")  # type: ignore[arg-type]


# -- async def tasks: Task[P, R] with the coroutine's result, Job[R] ----------------------
@mq.task
async def fetch(url: str, *, timeout: float = 1.0) -> int:
    return len(url)


@mq.task(retries=2, time_limit=5.0)
async def crawl(urls: list[str]) -> list[int]:
    return [len(u) for u in urls]


fetch_task: Task[[str], int] = fetch
assert_type(fetch.delay("https://example.org"), Job[int])
assert_type(crawl.delay(["a"]), Job[list[int]])
assert_type(fetch.delay("x").wait(), int)
fetch.delay(1)  # type: ignore[arg-type]
crawl.delay(["a"], "b")  # type: ignore[call-arg]
wrong_fetch: Task[[str], str] = fetch  # type: ignore[assignment]


async def async_view() -> None:
    assert_type(await fetch.adelay("https://example.org"), Job[int])
    assert_type(await mq.aenqueue(fetch, "x"), Job[int])
    assert_type(await mq.aenqueue(resize, "a.png"), Job[bytes])
    assert_type(await fetch("x"), int)
    await fetch.adelay(2)  # type: ignore[arg-type]
