"""A query's result as every store path returns it (direct client, store API, reports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class QueryResult:
    """A query's result in JSON-able form."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
