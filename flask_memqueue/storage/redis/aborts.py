"""Abort requests on Redis: two fields of the running job's state (``lua/abort.lua``, ``lua/aborts.lua``).

A mixin of :class:`~flask_memqueue.storage.redis.store.RedisStorage`, kept
apart so that the store's class does not grow (tests/test_sizes.py). The
request names the claim it was asked of (the job's claim token), so a job
requeued and claimed again is not stopped by a request its earlier run never read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class RedisAbortFlags:
    """``_request_abort`` and ``_abort_requests`` (the capability ``abort_flags``) for Redis."""

    if TYPE_CHECKING:  # what the store provides
        def _run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any: ...

    def _request_abort(self, job_id: str, reason: str) -> bool:
        return bool(self._run("abort", [job_id, reason], "asking a job to stop"))

    def _abort_requests(self, job_ids: list[str]) -> dict[str, str]:
        flat = self._run("aborts", job_ids, "reading abort requests")
        return dict(zip(flat[::2], flat[1::2], strict=True))
