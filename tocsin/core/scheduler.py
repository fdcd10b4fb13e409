"""Scheduled work inside the services (the seed's Celery beat): intervals, daily and weekly jobs.

A job is a name, a schedule and a callable. The scheduler runs due jobs one at
a time on its own thread; a job that raises is logged and counted and runs
again at its next due time: one failing cleanup must not stop the summaries.
Times of day are UTC ("03:00").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, field_validator

from tocsin.core.component import Component
from tocsin.core.config import StrictModel

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class JobConfig(StrictModel):
    """When one job runs: every ``interval_s``, or daily/weekly at ``at`` (UTC)."""

    enabled: bool = Field(True, description="Run this job at all.")
    interval_s: float | None = Field(None, gt=0, description="Run every N seconds (exclusive with `at`).")
    at: str | None = Field(None, description="Time of day, UTC, HH:MM.")
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] | None = Field(
        None, description="With `at`: run weekly on this day.")

    @field_validator("at")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                dt.datetime.strptime(v, "%H:%M")
            except ValueError:
                raise ValueError("must be HH:MM (24-hour, UTC)") from None
        return v

    def next_due(self, after: float) -> float:
        """The first due time strictly after ``after`` (epoch seconds)."""
        if self.interval_s is not None:
            return after + self.interval_s
        hour, minute = map(int, (self.at or "00:00").split(":"))
        now = dt.datetime.fromtimestamp(after, dt.UTC)
        due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if self.weekday is not None:
            due += dt.timedelta(days=(WEEKDAYS.index(self.weekday) - due.weekday()) % 7)
            if due.timestamp() <= after:
                due += dt.timedelta(days=7)
        elif due.timestamp() <= after:
            due += dt.timedelta(days=1)
        return due.timestamp()


class JobsConfig(StrictModel):
    """The seed's scheduled tasks, each with its own switch and schedule.

    Health probes are the agent's (``agents.health.interval_s``, the seed's 15
    minutes); the daily summary runs in ``sink-notify``; cleanup and archival run
    beside the ClickHouse sink, which owns the store.
    """

    cleanup: JobConfig = Field(JobConfig(at="03:00"), description="Daily: drop history older than retention_days.")
    daily_summary: JobConfig = Field(JobConfig(at="07:00"), description="Daily summary email (sink-notify).")
    archive: JobConfig = Field(JobConfig(at="04:00", weekday="sun"),
                               description="Weekly: alert history to Parquet before the TTL drops it.")
    archive_dir: str = Field("archive", description="Where the weekly archive writes Parquet files.")


@dataclass
class Job:
    name: str
    schedule: JobConfig
    fn: Callable[[], object]
    next_due: float = 0.0
    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    last_run_s: float | None = None


@dataclass
class Scheduler(Component):
    """Runs jobs when due; ``clock`` is injectable so tests need not wait for 03:00."""

    jobs: list[Job] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    tick_s: float = 1.0
    name: str = "scheduler"

    def __post_init__(self) -> None:
        Component.__init__(self)

    def add(self, name: str, schedule: JobConfig, fn: Callable[[], object]) -> None:
        if schedule.enabled:
            self.jobs.append(Job(name, schedule, fn, next_due=schedule.next_due(self.clock())))

    def run_due(self) -> list[str]:
        """Runs every job that is due now; returns their names."""
        ran = []
        for job in self.jobs:
            now = self.clock()
            if now < job.next_due:
                continue
            started = time.monotonic()
            try:
                job.fn()
                job.last_error = None
            except Exception as exc:
                job.failures += 1
                job.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduled job failed", extra={"job": job.name})
            job.runs += 1
            job.last_run_s = time.monotonic() - started
            job.next_due = job.schedule.next_due(max(now, self.clock()))
            ran.append(job.name)
        return ran

    def run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.run_due()
