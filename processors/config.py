"""Configuration of the stream processor (filled in by the processor issue)."""

from __future__ import annotations

from tocsin.configbase import StrictModel


class ProcessorConfig(StrictModel):
    """Stream processor settings."""
