"""When a periodic task is due: cron expressions, fixed intervals, time zones.

Plain arithmetic on Unix times, no threads and no store: the scheduler
(:mod:`flask_memqueue.periodic`) asks a task's :class:`Periodic` for the
tick after a time and the latest tick at or before it, and claims ticks by
their Unix time, so every process (and every restart) names a tick the same.

- ``every=`` ticks lie on a fixed grid: the multiples of the interval since
  the Unix epoch. Time zones do not move them (they are instants), so
  ``every=timedelta(days=1)`` ticks at midnight UTC; for "every day at 09:00
  in Paris" write the cron expression ``0 9 * * *`` with that time zone.
- Cron expressions are parsed and evaluated by `cronsim`_ (the ``cron``
  extra), not here. It follows Debian's cron on daylight-saving days, in the
  task's time zone (``timezone=``, else ``MEMQUEUE_TIMEZONE``):

  - an expression for fixed times (``30 2 * * *``: the minute and the hour
    fields are not ``*``-based) runs once a day: a time the clock skips in
    spring runs at the first minute after the jump (``02:30`` runs at
    ``03:00``), a time the clock repeats in autumn runs once, the first time;
  - an expression whose minute or hour field starts with ``*`` (``*/10 * * *
    *``) counts real time: it runs every 10 minutes straight through both
    changes (the repeated hour in autumn has its 6 runs twice).

.. _cronsim: https://pypi.org/project/cronsim/
"""

from __future__ import annotations

import abc
import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any

from .exceptions import ScheduleError
from .extras import install_hint

UTC = _dt.timezone.utc


#: The shortcuts Debian's cron (crontab(5)) accepts, as the five fields each stands for;
#: cronsim reads fields only. Lower case, as cron spells them. ``@reboot`` is refused:
#: see :func:`_expand_shortcut`.
CRON_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: How many ticks :meth:`Cron.latest` walks forward at most to confirm a tick
#: near a daylight-saving change (the forward walk defines which ticks exist).
_WALK_LIMIT = 100_000


def resolve_timezone(name: object, where: str) -> _dt.tzinfo:
    """The time zone an IANA name (``"Europe/Paris"``) names; ``"UTC"`` needs no database.

    :raises ScheduleError: not a string, or no such zone here; the message names ``where``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"{where}: a time zone is an IANA name like 'Europe/Paris' or 'UTC', not {name!r}")
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"{where}: unknown time zone {name!r}; use an IANA name like 'Europe/Paris', 'America/New_York'"
            f" or 'UTC' (a system without a time zone database needs the tzdata package: {install_hint('cron')}"
            " installs it)"
        ) from None


class Schedule(abc.ABC):
    """When ticks fall. Ticks are Unix times; a schedule is the same in every process."""

    #: True if the time zone changes the ticks (cron), False for a fixed grid (every=).
    uses_timezone: bool = False

    @abc.abstractmethod
    def next_after(self, t: float, tz: _dt.tzinfo) -> float | None:
        """The first tick strictly after ``t``; None if there is none (a cron date that never comes)."""

    @abc.abstractmethod
    def latest(self, t: float, tz: _dt.tzinfo) -> float | None:
        """The last tick at or before ``t``; None if there is none within the parser's reach."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The schedule as people write it: ``"*/10 * * * *"``, ``"every 30s"``."""

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """``"cron"`` or ``"every"``."""


class Every(Schedule):
    """Every ``seconds``, on the grid of its multiples since the Unix epoch.

    The grid (not "``seconds`` after the start") makes every process and every
    restart agree on which tick is which: tick ``k`` is at ``k * seconds``.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def next_after(self, t: float, tz: _dt.tzinfo) -> float:
        return (math.floor(t / self.seconds) + 1) * self.seconds

    def latest(self, t: float, tz: _dt.tzinfo) -> float:
        return math.floor(t / self.seconds) * self.seconds

    def describe(self) -> str:
        return "every " + _seconds_text(self.seconds)

    @property
    def kind(self) -> str:
        return "every"

    def __repr__(self) -> str:
        return f"<Every {_seconds_text(self.seconds)}>"


class Cron(Schedule):
    """A cron expression, evaluated by cronsim in the task's time zone.

    Five fields (minute hour day-of-month month day-of-week), or six with a
    leading seconds field, as cronsim reads them. ``label`` is what the user
    wrote when it was a shortcut (``"@daily"`` for ``"0 0 * * *"``).
    """

    uses_timezone = True

    def __init__(self, expression: str, label: str | None = None) -> None:
        self.expression = expression
        self.label = label

    def _iter(self, t: float, tz: _dt.tzinfo, reverse: bool = False) -> Any:
        from cronsim import CronSim

        return CronSim(self.expression, _dt.datetime.fromtimestamp(t, tz), reverse=reverse)

    def next_after(self, t: float, tz: _dt.tzinfo) -> float | None:
        # CronSim drops the microseconds, then steps one second: the first match after floor(t).
        try:
            return float(next(self._iter(t, tz)).timestamp())
        except StopIteration:
            return None

    def latest(self, t: float, tz: _dt.tzinfo) -> float | None:
        """The last tick at or before ``t``, as the forward iteration makes ticks.

        cronsim's reverse iteration gives a candidate quickly (one microsecond
        more makes it include ``t`` itself). Near a daylight-saving change the
        reverse and forward rules of Debian's cron differ, so there the ticks
        of the three hours before the candidate are walked forward, which is
        what :meth:`next_after` (and so the scheduler) would have produced.
        """
        try:
            candidate: float | None = float(next(self._iter(t + 1e-6, tz, reverse=True)).timestamp())
        except StopIteration:
            candidate = None
        start = (candidate if candidate is not None else t) - 3 * 3600.0
        if candidate is not None and tz.utcoffset(_utc(start)) == tz.utcoffset(_utc(t)):
            return candidate  # no change of offset in the window: both rules agree
        found = None
        tick = self.next_after(start, tz)
        for _ in range(_WALK_LIMIT):
            if tick is None or tick > t:
                break
            found = tick
            tick = self.next_after(tick, tz)
        return found if found is not None else candidate

    def describe(self) -> str:
        return self.expression if self.label is None else f"{self.label} ({self.expression})"

    @property
    def kind(self) -> str:
        return "cron"

    def __repr__(self) -> str:
        return f"<Cron {self.expression!r}>"


def _utc(t: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(t, UTC)


def _seconds_text(seconds: float) -> str:
    """``30s``, ``10m``, ``2h``, ``1d``, ``1.5s``: an interval as the docs and the dashboard show it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Periodic:
    """What makes a task periodic: its schedule, its own time zone, its catch-up rule."""

    schedule: Schedule
    #: The task's own IANA time zone name; None: the app's ``MEMQUEUE_TIMEZONE``.
    timezone: str | None = None
    #: After every process was down over a tick: run once for the latest missed tick
    #: when the schedule comes back (True), or wait for the next tick (False).
    catch_up: bool = True

    def zone(self, default: _dt.tzinfo) -> _dt.tzinfo:
        """The zone the ticks are computed in: the task's own, else ``default``."""
        if self.timezone is None:
            return default
        return resolve_timezone(self.timezone, "timezone")


def _expand_shortcut(expression: str, where: str) -> Cron:
    """The :class:`Cron` for an expression, a shortcut (``@daily``) expanded to its fields.

    :raises ScheduleError: ``@reboot`` (it means "once when cron starts": a
        schedule that every process of the app runs, started and restarted at
        any time, has no such moment), or an unknown ``@`` word.
    """
    if not expression.startswith("@"):
        return Cron(expression)
    fields = CRON_SHORTCUTS.get(expression)
    if fields is not None:
        return Cron(fields, label=expression)
    if expression.lower() == "@reboot":
        raise ScheduleError(
            f"{where}: '@reboot' is not a schedule here: it means once when cron starts, and the schedule"
            " runs in every process of the app, each started and restarted at its own time. To run"
            " something when the app starts, call the task (or .delay() it) in your app factory"
        )
    raise ScheduleError(
        f"{where}: unknown cron shortcut {expression!r}; the shortcuts are "
        + ", ".join(CRON_SHORTCUTS) + " (lower case), or write the five fields, e.g. '0 0 * * *'"
    )


def make_periodic(
    task_name: str,
    cron: object = None,
    every: object = None,
    timezone: object = None,
    catch_up: object = True,
) -> Periodic:
    """Check a ``@mq.periodic(...)`` call and build its :class:`Periodic`.

    :raises ScheduleError: naming the task: neither or both of a cron
        expression and ``every=``; an interval that is not a positive number
        of seconds or timedelta; an invalid cron expression, or one that never
        matches; cron without the ``cron`` extra; an unknown time zone;
        ``timezone=`` with ``every=`` (which it would not move).
    """
    where = f"periodic task {task_name!r}"
    if not isinstance(catch_up, bool):
        raise ScheduleError(f"{where}: catch_up must be True or False, not {catch_up!r}")
    if timezone is not None:
        resolve_timezone(timezone, f"{where}: timezone")
    if (cron is None) == (every is None):
        raise ScheduleError(
            f"{where}: give a cron expression or every=, exactly one: @mq.periodic('*/10 * * * *') or"
            " @mq.periodic(every=timedelta(seconds=30))"
        )
    if every is not None:
        seconds = every.total_seconds() if isinstance(every, _dt.timedelta) else every
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
            raise ScheduleError(f"{where}: every= must be a timedelta or a number of seconds, not {every!r}")
        if seconds <= 0:
            raise ScheduleError(f"{where}: every= must be a positive interval, not {every!r}")
        if timezone is not None:
            raise ScheduleError(
                f"{where}: timezone= does not move every= ticks (they are instants on a grid since the Unix"
                " epoch); for a time of day in a time zone use a cron expression, e.g."
                f" @mq.periodic('0 9 * * *', timezone={timezone!r})"
            )
        return Periodic(Every(float(seconds)), None, catch_up)
    if not isinstance(cron, str) or not cron.strip():
        raise ScheduleError(f"{where}: a cron expression is a string like '*/10 * * * *', not {cron!r}")
    schedule = _expand_shortcut(" ".join(cron.split()), where)
    try:
        from cronsim import CronSimError
    except ImportError:
        raise ScheduleError(
            f"{where}: cron expressions need the cron extra ({install_hint('cron')});"
            " every=timedelta(...) needs nothing"
        ) from None
    zone = UTC if timezone is None else resolve_timezone(timezone, f"{where}: timezone")
    try:
        first = schedule.next_after(_dt.datetime.now(UTC).timestamp(), zone)
    except (CronSimError, ValueError) as exc:
        raise ScheduleError(f"{where}: invalid cron expression {cron!r}: {exc}") from None
    if first is None:
        raise ScheduleError(f"{where}: the cron expression {cron!r} never matches (no date in the next 50 years)")
    return Periodic(schedule, None if timezone is None else str(timezone), catch_up)
