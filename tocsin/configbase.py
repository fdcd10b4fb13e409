"""The base every Tocsin config model derives from: frozen, typed, unknown keys rejected.

Kept apart from ``tocsin.config`` so that component config modules
(``processors/config.py``, ``sinks/config.py``...) can import it without
importing the root config that aggregates them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from tocsin.errors import ConfigError


class StrictModel(BaseModel):
    """A frozen config section that rejects unknown keys (a typo is an error, not a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
