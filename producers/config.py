"""Configuration of the agents: log shipper, metrics agent, health probes."""

from __future__ import annotations

from tocsin.configbase import StrictModel


class AgentsConfig(StrictModel):
    """Agent settings."""
