"""Configuration of the ClickHouse sink."""

from __future__ import annotations

from tocsin.configbase import StrictModel


class ClickHouseSinkConfig(StrictModel):
    """ClickHouse sink settings."""
