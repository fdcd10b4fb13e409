"""The scheduler: intervals, daily and weekly due times, failures that do not stop other jobs."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from tocsin.core.scheduler import JobConfig, Scheduler


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_daily_job_is_due_at_its_time_today_or_tomorrow() -> None:
    daily = JobConfig(at="03:00")
    assert daily.next_due(_ts("2026-11-27 02:59:59")) == _ts("2026-11-27 03:00:00")
    assert daily.next_due(_ts("2026-11-27 03:00:00")) == _ts("2026-11-28 03:00:00")


def test_weekly_job_waits_for_its_weekday() -> None:
    weekly = JobConfig(at="04:00", weekday="sun")  # 2026-11-27 is a Friday
    assert weekly.next_due(_ts("2026-11-27 12:00")) == _ts("2026-11-29 04:00")
    assert weekly.next_due(_ts("2026-11-29 04:00")) == _ts("2026-12-06 04:00")


def test_bad_time_of_day_is_rejected() -> None:
    with pytest.raises(ValidationError, match="HH:MM"):
        JobConfig(at="25:00")


def test_due_jobs_run_failures_are_counted_and_do_not_stop_others() -> None:
    now = [_ts("2026-11-27 00:00")]
    calls: list[str] = []
    sched = Scheduler(clock=lambda: now[0])

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("disk full")

    sched.add("probes", JobConfig(interval_s=900), lambda: calls.append("probes"))
    sched.add("cleanup", JobConfig(at="03:00"), broken)
    sched.add("off", JobConfig(interval_s=1, enabled=False), lambda: calls.append("off"))
    assert sched.run_due() == []
    now[0] += 900
    assert sched.run_due() == ["probes"]
    now[0] = _ts("2026-11-27 03:00")
    assert sched.run_due() == ["probes", "cleanup"]
    cleanup = next(j for j in sched.jobs if j.name == "cleanup")
    assert (cleanup.failures, cleanup.last_error) == (1, "RuntimeError: disk full")
    assert cleanup.next_due == _ts("2026-11-28 03:00")
    assert "off" not in calls and calls == ["probes", "probes", "broken"]
