"""The base every Tocsin config model derives from: frozen, typed, unknown keys rejected.

Kept apart from ``tocsin.config`` so that component config modules
(``processors/config.py``, ``sinks/config.py``...) can import it without
importing the root config that aggregates them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tocsin.errors import ConfigError


class StrictModel(BaseModel):
    """A frozen config section that rejects unknown keys (a typo is an error, not a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ConsumerGroupConfig(StrictModel):
    """What every consumer-group service shares; each sets its own ``group_id`` default."""

    group_id: str = Field(description="Kafka consumer group.")
    group_instance_id: str | None = Field(
        None, description="Static group membership: a restarted instance with the same id resumes without a rebalance."
    )
    session_timeout_ms: int = Field(
        10_000, ge=6_000, le=300_000,
        description="Consumer session timeout: how soon a crashed instance's partitions move (broker min 6000).",
    )


def read_yaml(path: str | Path, what: str, error: type[ConfigError] = ConfigError) -> Any:
    """A YAML file's content; unreadable or malformed files raise ``error`` naming the file and line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
