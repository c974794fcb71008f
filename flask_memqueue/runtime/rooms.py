"""The rooms of one app's queue in one process, as the front holds them.

:class:`~flask_memqueue.state.AppQueue` is one :class:`Rooms`; shutdown and
the statistics, which look at every room, take it as this protocol (so that
nothing in :mod:`flask_memqueue.runtime` imports the front above it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from .children import Children
    from .jobs import Jobs
    from .limits import Watchdog
    from .pools import ConsumerPools
    from .scheduling import SchedulerPlace
    from .store import StoreHandle
    from .supervisor import Supervisor
    from .transport import Transport


class Rooms(Protocol):
    """What the front of one app's queue holds."""

    app: Flask
    store: StoreHandle
    pools: ConsumerPools
    scheduling: SchedulerPlace
    supervisor: Supervisor
    jobs: Jobs
    transport: Transport
    limits: Watchdog
    children: Children

    @property
    def config(self) -> Config: ...
