"""Configuration sections of the sinks, gathered for ``tocsin.config``."""

from __future__ import annotations

from sinks.clickhouse_config import ClickHouseSinkConfig
from sinks.notify_config import NotifyConfig, SummaryConfig

__all__ = ["ClickHouseSinkConfig", "NotifyConfig", "SummaryConfig"]
