"""Builders shared by the processor tests: events, rule sets and an engine with an injected wall clock."""

from __future__ import annotations

from typing import Any

from tocsin.processors.engine import Engine
from tocsin.processors.rules import RuleSet, parse_rules

S = 1_000_000
"""One second in microseconds."""
T0 = 1_767_225_600 * S
"""2026-01-01T00:00:00Z: a fixed event-time origin (on every grid)."""


class FakeWall:
    """A wall clock the test moves by hand."""

    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def metric(ts: int, value: float, name: str = "api_response_time", service: str = "shop", host: str = "h1",
           **labels: str) -> dict[str, Any]:
    return {"event_id": f"m-{ts}-{name}-{service}-{host}", "ts": ts, "service": service, "host": host, "name": name,
            "value": float(value), "unit": "", "labels": dict(labels)}


def log(ts: int, level: str = "ERROR", service: str = "shop", host: str = "h1", logger: str = "app",
        message: str = "boom") -> dict[str, Any]:
    return {"event_id": f"l-{ts}-{service}-{level}", "ts": ts, "service": service, "host": host, "level": level,
            "logger": logger, "message": message, "trace_id": None, "attrs": {}}


def health(ts: int, check: str = "database", status: str = "healthy", rt: float | None = 5.0,
           service: str = "shop") -> dict[str, Any]:
    return {"event_id": f"h-{ts}-{check}", "ts": ts, "service": service, "host": "h1", "check": check,
            "status": status, "response_time_ms": rt, "details": {}, "error": None}


def rules(*specs: dict[str, Any]) -> RuleSet:
    return parse_rules(list(specs))


def engine(ruleset: RuleSet, wall: FakeWall | None = None, eval_s: float = 1.0, grace_s: float = 5.0,
           **kw: Any) -> Engine:
    return Engine(ruleset, eval_interval_us=int(eval_s * S), grace_us=int(grace_s * S), wall=wall or FakeWall(),
                  **kw)


def states(transitions: list[Any]) -> list[tuple[str, str, str]]:
    """(previous_state -> state, severity) in order, for readable asserts."""
    return [(t.previous_state, t.state, t.severity) for t in transitions]
