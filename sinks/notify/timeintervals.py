"""Named time intervals (Alertmanager's ``time_intervals``): when a route mutes, or is active at all.

The vocabulary is Alertmanager's, so a ``time_intervals`` block of an
``alertmanager.yml`` reads the same here::

    notify:
      time_intervals:
        - name: nightly-maintenance
          time_intervals:
            - times: [{start_time: "02:00", end_time: "04:00"}]
              weekdays: ["monday:friday"]
              location: Europe/Berlin
        - name: month-end
          time_intervals: [{days_of_month: ["-3:-1"], months: ["january:march", "12"]}]
      route:
        receiver: ops
        routes:
          - {matchers: [service=batch], mute_time_intervals: [nightly-maintenance]}
          - {matchers: [team=day], active_time_intervals: [office-hours]}

Semantics (Alertmanager's ``timeinterval`` package, re-implemented): an
interval matches an instant when every field it sets matches (an unset field
matches anything); a named interval matches when any of its intervals does.
``times`` are half-open ``[start, end)`` minutes of the local day, ``24:00``
allowed as an end; ``weekdays`` (sunday = 0 as in Go), ``days_of_month`` (1..31,
or -1 for the last day back to -31, clamped to the month's length), ``months``
(names or 1..12) and ``years`` are inclusive ranges ``a:b`` or single values.
``location`` is an IANA zone (``zoneinfo``): the instant is converted to that
zone's wall clock before any field is compared, so ``02:00-04:00`` in
Europe/Berlin stays 02:00-04:00 on the local clock across a daylight-saving
change (the hour that does not exist in spring simply never matches). Like in
Alertmanager, routes do not inherit their parent's intervals.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from tocsin.core.config import StrictModel

WEEKDAYS = {name: i for i, name in enumerate(
    ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"))}
MONTHS = {name: i for i, name in enumerate(calendar.month_name) if name} | {
    name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_TIME_RE = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
MINUTES_PER_DAY = 24 * 60
MIN_DAYS_IN_MONTH = 28  # Alertmanager checks negative day ranges against the shortest month


def _minute_of_day(text: str, what: str) -> int:
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"{what} {text!r} is not HH:MM (00:00 to 24:00)")
    minute = int(m.group(1)) * 60 + int(m.group(2))
    if minute > MINUTES_PER_DAY:
        raise ValueError(f"{what} {text!r} is after 24:00")
    return minute


def _range(text: Any, names: Mapping[str, int] | None, lo: int, hi: int, what: str) -> tuple[int, int]:
    """``a:b`` or ``a`` (names or integers) -> an inclusive (begin, end) within [lo, hi]."""
    raw = str(text).strip().lower()
    parts = raw.split(":")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"{what} {text!r} is not a value or a range a:b")

    def one(p: str) -> int:
        if names is not None and p in names:
            return names[p]
        try:
            n = int(p)
        except ValueError:
            known = f" or one of {', '.join(k for k in names if k.islower())}" if names else ""
            raise ValueError(f"{what} {p!r} is not an integer{known}") from None
        if not lo <= n <= hi or (what == "day of month" and n == 0):
            raise ValueError(f"{what} {p!r} is out of range {lo}..{hi}")
        return n

    begin = one(parts[0])
    end = one(parts[-1])
    return begin, end


def _day_of_month_range(text: Any) -> tuple[int, int]:
    begin, end = _range(text, None, -31, 31, "day of month")
    if begin < 0 < end:
        raise ValueError(f"days_of_month {text!r}: the end must be negative when the start is")
    check_begin = MIN_DAYS_IN_MONTH + begin + 1 if begin < 0 else begin
    check_end = MIN_DAYS_IN_MONTH + end + 1 if end < 0 else end
    if check_begin > check_end:
        raise ValueError(f"days_of_month {text!r}: the start is after the end")
    return begin, end


def _ordered(rng: tuple[int, int], text: Any, what: str) -> tuple[int, int]:
    if rng[0] > rng[1]:
        raise ValueError(f"{what} {text!r}: the start is after the end")
    return rng


class TimeRangeSpec(StrictModel):
    """A half-open range of the local day: ``{start_time: "09:00", end_time: "17:00"}``."""

    start_time: str = Field(description="HH:MM, inclusive.")
    end_time: str = Field(description="HH:MM, exclusive; 24:00 is the end of the day.")

    @model_validator(mode="after")
    def _ordered(self) -> TimeRangeSpec:
        if _minute_of_day(self.start_time, "start_time") >= _minute_of_day(self.end_time, "end_time"):
            raise ValueError(f"start_time {self.start_time} must be before end_time {self.end_time}")
        return self


class TimeIntervalSpec(StrictModel):
    """One interval: every field set must match; unset fields match anything."""

    times: list[TimeRangeSpec] | None = Field(None, description="Ranges of the local day.")
    weekdays: list[str] | None = Field(None, description="monday, or monday:friday (sunday is 0, as in Go).")
    days_of_month: list[str] | None = Field(None, description="1, 1:5, -1 (the last day), -3:-1.")
    months: list[str] | None = Field(None, description="january, 1, january:march, 1:3.")
    years: list[str] | None = Field(None, description="2026, 2026:2027.")
    location: str = Field("UTC", description="IANA time zone the fields are read in (Europe/Berlin).")

    @field_validator("weekdays", "days_of_month", "months", "years", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[str] | None) -> list[str] | None:
        for x in v or ():
            _ordered(_range(x, WEEKDAYS, 0, 6, "weekday"), x, "weekdays")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _days(cls, v: list[str] | None) -> list[str] | None:
        for x in v or ():
            _day_of_month_range(x)
        return v

    @field_validator("months")
    @classmethod
    def _months(cls, v: list[str] | None) -> list[str] | None:
        for x in v or ():
            _ordered(_range(x, MONTHS, 1, 12, "month"), x, "months")
        return v

    @field_validator("years")
    @classmethod
    def _years(cls, v: list[str] | None) -> list[str] | None:
        for x in v or ():
            _ordered(_range(x, None, 1, 9999, "year"), x, "years")
        return v

    @field_validator("location")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"location {v!r} is not an IANA time zone (e.g. Europe/Berlin): {exc}") from None
        return v


class NamedTimeIntervalConfig(StrictModel):
    """A name routes refer to, and the intervals it covers (any of them)."""

    name: str = Field(min_length=1, description="Referenced by mute_time_intervals and active_time_intervals.")
    time_intervals: list[TimeIntervalSpec] = Field(default_factory=list, description="Matches when any matches.")


@dataclass(frozen=True)
class TimeInterval:
    """A compiled ``TimeIntervalSpec``: integer ranges and the zone, ready for ``contains``."""

    times: tuple[tuple[int, int], ...] | None
    weekdays: tuple[tuple[int, int], ...] | None
    days_of_month: tuple[tuple[int, int], ...] | None
    months: tuple[tuple[int, int], ...] | None
    years: tuple[tuple[int, int], ...] | None
    zone: ZoneInfo

    @classmethod
    def of(cls, spec: TimeIntervalSpec) -> TimeInterval:
        def many(values: list[str] | None, parse: Any) -> tuple[tuple[int, int], ...] | None:
            return None if values is None else tuple(parse(v) for v in values)

        return cls(
            times=None if spec.times is None else tuple(
                (_minute_of_day(t.start_time, "start_time"), _minute_of_day(t.end_time, "end_time"))
                for t in spec.times),
            weekdays=many(spec.weekdays, lambda v: _range(v, WEEKDAYS, 0, 6, "weekday")),
            days_of_month=many(spec.days_of_month, _day_of_month_range),
            months=many(spec.months, lambda v: _range(v, MONTHS, 1, 12, "month")),
            years=many(spec.years, lambda v: _range(v, None, 1, 9999, "year")),
            zone=ZoneInfo(spec.location),
        )

    def contains(self, ts_s: float) -> bool:
        local = datetime.fromtimestamp(ts_s, tz=UTC).astimezone(self.zone)
        if self.times is not None:
            minute = local.hour * 60 + local.minute
            if not any(a <= minute < b for a, b in self.times):
                return False
        if self.days_of_month is not None:
            days = calendar.monthrange(local.year, local.month)[1]
            if not any(_day_in(local.day, days, a, b) for a, b in self.days_of_month):
                return False
        if self.months is not None and not any(a <= local.month <= b for a, b in self.months):
            return False
        weekday = local.isoweekday() % 7  # sunday = 0, as Go's time.Weekday
        if self.weekdays is not None and not any(a <= weekday <= b for a, b in self.weekdays):
            return False
        return self.years is None or any(a <= local.year <= b for a, b in self.years)


def _day_in(day: int, days_in_month: int, begin: int, end: int) -> bool:
    begin = days_in_month + begin + 1 if begin < 0 else begin
    end = days_in_month + end + 1 if end < 0 else end
    if begin > days_in_month:
        return False  # e.g. day 31 in a 30-day month: that range has no day this month
    return max(begin, 1) <= day <= min(end, days_in_month)


class TimeIntervals:
    """Every named interval of the config, compiled; answers whether a route is muted at an instant.

    >>> ti = TimeIntervals([NamedTimeIntervalConfig(name="night", time_intervals=[
    ...     TimeIntervalSpec(times=[TimeRangeSpec(start_time="00:00", end_time="06:00")])])])
    >>> ti.active("night", 3 * 3600.0), ti.active("night", 7 * 3600.0)
    (True, False)
    """

    def __init__(self, named: Iterable[NamedTimeIntervalConfig]) -> None:
        self._named = {n.name: tuple(TimeInterval.of(s) for s in n.time_intervals) for n in named}

    def __contains__(self, name: str) -> bool:
        return name in self._named

    def active(self, name: str, ts_s: float) -> bool:
        return any(i.contains(ts_s) for i in self._named.get(name, ()))

    def muted(self, mute: Iterable[str], active: Iterable[str], ts_s: float) -> str | None:
        """Why a route with these interval names does not notify at ``ts_s``, or None when it does."""
        for name in mute:
            if self.active(name, ts_s):
                return f"mute_time_interval {name}"
        names = list(active)
        if names and not any(self.active(n, ts_s) for n in names):
            return f"outside active_time_intervals {', '.join(names)}"
        return None


def unknown_references(route: Any, known: set[str], path: str = "route") -> list[str]:
    """Config problems: interval names a route refers to that no ``time_intervals`` entry defines."""
    problems = []
    for field in ("mute_time_intervals", "active_time_intervals"):
        for name in getattr(route, field, None) or ():
            if name not in known:
                problems.append(f"{path}.{field}: unknown time interval {name!r} (known: {sorted(known)})")
    for i, child in enumerate(getattr(route, "routes", ())):
        problems += unknown_references(child, known, f"{path}.routes[{i}]")
    return problems
