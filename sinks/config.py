"""Configuration of the sinks: ClickHouse writer, notifications, summaries."""

from __future__ import annotations

from tocsin.configbase import StrictModel


class ClickHouseSinkConfig(StrictModel):
    """ClickHouse sink settings."""


class NotifyConfig(StrictModel):
    """Notification routing and receivers."""


class SummaryConfig(StrictModel):
    """Daily summary settings."""
