"""Configuration of notification routing, receivers and the daily summary."""

from __future__ import annotations

from tocsin.configbase import StrictModel


class NotifyConfig(StrictModel):
    """Notification routing and receivers."""


class SummaryConfig(StrictModel):
    """Daily summary settings."""
