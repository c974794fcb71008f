"""The store handle: the app's store in this process, and this process's identity.

Opened from ``MEMQUEUE_STORAGE`` when the queue is made, opened anew in a
forked child (which must never use its parent's connection or socket) with
a new id prefix, closed at shutdown. Everything above asks the store
through :attr:`StoreHandle.storage` and its declared capabilities, never
through its class.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..storage import Storage, StoreContext, open_storage, redact_url

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..job import JobHost, TaskLike


class StoreHandle:
    """The app's store in this process (:attr:`storage`), and the process it belongs to.

    :param task_named: finds a task by name (a stand-in for a name this process does not know).
    """

    def __init__(self, app: Flask, config: Config, task_named: Callable[[str], TaskLike]) -> None:
        self.app = app
        self.config = config
        self._task_named = task_named
        #: The process this handle belongs to.
        self.pid = os.getpid()
        #: Prefix of this process's job ids, new in every process.
        self.token = secrets.token_hex(4)
        #: Unix time this process's queue was made (``/stats`` uptime).
        self.started_at = time.time()
        #: The open store; None until :meth:`open`.
        self.storage: Storage = None  # type: ignore[assignment]  # set by open(), before anyone reads it

    def open(self, host: JobHost) -> Storage:
        """Open the store ``MEMQUEUE_STORAGE`` names, binding the jobs it makes to ``host``
        (a backend's errors name the config key)."""
        c = self.config
        context = StoreContext(
            namespace=self.app.name,
            token=self.token,
            host=host,
            task=self._task_named,
            base_dir=self.app.instance_path,
            maxsize=c.maxsize,
            max_finished=c.max_finished,
            result_ttl=c.result_ttl,
            local_jobs=c.consumer or self.app.testing,
            config_key=c.storage_key,
            development=bool(self.app.debug or self.app.testing),
        )
        self.storage = open_storage(c.storage, c.storage_options, context)
        return self.storage

    @property
    def url(self) -> str:
        """The store's URL as people may see it: any password replaced by ``***``."""
        return redact_url(self.config.storage)

    def inherited(self) -> int:
        """In a forked child, before a new handle replaces this one: how many waiting jobs the
        parent's store held (they stay the parent's to run), 0 for a store re-opened per process."""
        if self.storage.capabilities.reopen_after_fork:
            return 0  # never use the parent's connection (or socket), not even to count
        return self.storage.depth()

    def close(self) -> None:
        self.storage.close()

    def __repr__(self) -> str:
        return f"<StoreHandle {self.url} pid={self.pid}>"


__all__ = ["StoreHandle"]
