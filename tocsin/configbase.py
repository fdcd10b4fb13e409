"""The base every Tocsin config model derives from: frozen, typed, unknown keys rejected.

Kept apart from ``tocsin.config`` so that component config modules
(``processors/config.py``, ``sinks/config.py``...) can import it without
importing the root config that aggregates them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen config section that rejects unknown keys (a typo is an error, not a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
