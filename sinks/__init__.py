"""Sinks: ClickHouse history, notifications and summaries."""
