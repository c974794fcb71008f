"""Group commit: the enqueuers of one process share writes.

The first thread to find no write in progress leads and writes every record
queued so far in one write (one transaction, one script); threads arriving
meanwhile join the next batch. N threads cost about two writes, not N, and
no extra thread exists (nothing to restart after fork).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..exceptions import MemQueueError, QueueFull
from ..job import describe_task
from .records import Record


class _Batch:
    """Records waiting for one group write, and what became of each."""

    __slots__ = ("records", "errors", "done")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.errors: list[BaseException | None] = []
        self.done = False


class GroupCommit:
    """One store's shared insert.

    :param insert: the backend's ``_insert`` primitive: adds a prefix of the
        records (as many as ``maxsize`` allows) and says how many.
    :param wrap: turns a failure of ``insert`` into the store's error.
    :param maxsize: ``MEMQUEUE_MAXSIZE``, for the message of a refused record.
    """

    def __init__(
        self, insert: Callable[[list[Record]], int], wrap: Callable[[Exception, str], MemQueueError], maxsize: int
    ) -> None:
        self._insert = insert
        self._wrap = wrap
        self._maxsize = maxsize
        self._cond = threading.Condition(threading.Lock())
        self._open: _Batch | None = None
        self._leading = False

    def write(self, record: Record) -> BaseException | None:
        """Insert ``record`` with whatever other threads insert meanwhile; its error, or None."""
        cond = self._cond
        with cond:
            if not self._leading and self._open is None:
                # Nobody writes: this thread writes its record alone, without a batch (the
                # common case of one enqueuer); arrivals meanwhile open the next batch.
                self._leading = True
                batch, index = None, 0
            else:
                batch, index = self._join(record)
        if batch is None:
            try:
                return self._errors([record])[0]
            finally:
                with cond:
                    self._leading = False
                    if self._open is not None:
                        cond.notify_all()  # one of those waiting leads the next batch
        if not batch.done:  # this thread leads: write the whole batch
            try:
                batch.errors = self._errors(batch.records)
            finally:
                with cond:
                    batch.done = True
                    self._leading = False
                    cond.notify_all()
        return batch.errors[index]

    def _join(self, record: Record) -> tuple[_Batch, int]:
        """Under the lock: add ``record`` to the open batch and wait until the batch is
        written, or until this thread may lead it (then it returns it not done)."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
        index = len(batch.records)
        batch.records.append(record)
        batch.errors.append(None)
        while not batch.done:
            if not self._leading:
                self._leading = True
                self._open = None  # arrivals from now on go to the next batch
                break
            self._cond.wait()
        return batch, index

    def _errors(self, records: list[Record]) -> list[BaseException | None]:
        """Write ``records``; what became of each (None: inserted)."""
        try:
            accepted = self._insert(records)
        except BaseException as exc:
            error = self._wrap(exc, f"enqueueing {len(records)} job(s)") if isinstance(exc, Exception) else exc
            if error is not exc:
                error.__cause__ = exc
            return [error] * len(records)
        errors: list[BaseException | None] = [None] * accepted
        for i in range(accepted, len(records)):
            errors.append(QueueFull(
                f"the queue holds {self._maxsize} waiting jobs (MEMQUEUE_MAXSIZE);"
                f" {describe_task(records[i].task)} was not queued"
            ))
        return errors


__all__ = ["GroupCommit"]
