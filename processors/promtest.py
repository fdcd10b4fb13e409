"""Rule unit tests in promtool's test file format (``promtool test rules``), run through Tocsin's engine.

A test file (``tocsin rules test FILE...``)::

    rule_files: [default.yaml]          # Tocsin rule files, relative to the test file
    evaluation_interval: 1m             # the engine's evaluation interval (default 1m)
    tests:
      - name: checkout slows down
        interval: 1m                    # between two samples of a series (default evaluation_interval)
        input_series:
          - series: 'api_response_time{service="shop", host="h1"}'
            values: '100x10 900x20'     # promtool's expanding notation: a+bxn, a-bxn, axn, _, _xn, stale
          - series: 'logs{service="shop", level="ERROR", message="db timeout"}'
            values: '0x5 3x10'          # logs{...}: that many log lines at each step
        alert_rule_test:
          - eval_time: 10m
            alertname: api_response_time
            exp_alerts:                 # the alerts *firing* then (pending ones are not listed)
              - exp_labels: {service: shop, severity: warning}
                exp_annotations: {summary: "..."}

How the model maps (the README's rule-test section says more): a series named
``logs`` or ``health`` makes log lines (the value is how many) or health
results (the value is ``response_time_ms``); any other name is a metric.
Labels ``service`` (required) and ``host`` (and ``level``, ``logger``,
``message`` for logs; ``check``, ``status``, ``error`` for health) are the
event's fields, the rest its labels/attrs/details map. ``_`` and ``stale``
are both "no sample" (Tocsin has no staleness markers: windows decide). An
alert's severity is compared as the label ``severity``; ``alertname`` is
implied, as in promtool. Annotations are compared for the keys given (they
are rendered at the alert's last transition, not at every evaluation).

The engine is the production one (``tocsin.processors.engine.Engine``) with
an injected wall clock; samples start at ``T0`` (2026-01-01T00:00:00Z), and
``eval_time`` counts from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError

from tocsin.core.config import StrictModel, format_validation_error, read_yaml
from tocsin.core.errors import RuleError
from tocsin.processors.alerts import FIRING
from tocsin.processors.engine import Engine
from tocsin.processors.rules import RuleSet, load_rules, parse_rules

T0_US = 1_767_225_600_000_000
"""2026-01-01T00:00:00Z: time 0 of a test (promtool's is the Unix epoch, which Tocsin rejects as unset)."""
MAX_SAMPLES = 1_000_000
"""Per test: the expanding notation can ask for any number; this many is a day of 100 series at 10 s."""
MAX_LINES_PER_SAMPLE = 10_000

_PROM_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_PROM_UNITS_S = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_UNUM = r"(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|Inf|inf|NaN|nan)"
_TOKEN = re.compile(rf"^([-+]?{_UNUM})(?:([+-])({_UNUM})x(\d+)|x(\d+))?$")
_MISSING = re.compile(r"^(?:_|stale)(?:x(\d+))?$")
_SERIES = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)?\s*(?:\{(.*)\})?\s*$", re.S)
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')

LOG_FIELDS = ("host", "level", "logger", "message")
HEALTH_FIELDS = ("host", "check", "status", "error")
METRIC_FIELDS = ("host", "unit")


def prom_duration(value: Any) -> float:
    """Seconds of a Prometheus duration (``1h30m``, ``90s``, ``500ms``) or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _PROM_DURATION.match(value) if isinstance(value, str) and value else None
    if m is None or not any(m.groups()):
        raise ValueError("expected a duration such as 30s, 5m, 1h30m")
    return sum(int(g) * u for g, u in zip(m.groups(), _PROM_UNITS_S, strict=True) if g)


def expand_values(text: str) -> list[float | None]:
    """promtool's expanding notation; None is a missing (or stale) sample.

    >>> expand_values("-2+4x3 1x2 _x2 stale 7")
    [-2.0, 2.0, 6.0, 10.0, 1.0, 1.0, 1.0, None, None, None, 7.0]
    """
    out: list[float | None] = []
    for token in str(text).split():
        if m := _MISSING.match(token):
            n = int(m.group(1) or 1)
            if len(out) + n > MAX_SAMPLES:
                raise ValueError(f"more than {MAX_SAMPLES} samples")
            out.extend([None] * n)
            continue
        m = _TOKEN.match(token)
        if m is None:
            raise ValueError(f"{token!r} is not a number, a+bxn, a-bxn, axn, _ or stale")
        start = float(m.group(1))
        if m.group(4) is not None:
            n, step = int(m.group(4)), float(m.group(3)) * (1 if m.group(2) == "+" else -1)
        elif m.group(5) is not None:
            n, step = int(m.group(5)), 0.0
        else:
            n, step = 0, 0.0
        if len(out) + n + 1 > MAX_SAMPLES:
            raise ValueError(f"more than {MAX_SAMPLES} samples")
        out.extend(start + i * step for i in range(n + 1))
    return out


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """``name{label="value", ...}`` (or ``{__name__="name", ...}``) as (name, labels)."""
    m = _SERIES.match(text)
    if m is None:
        raise ValueError("expected name{label=\"value\", ...}")
    labels: dict[str, str] = {}
    body = (m.group(2) or "").strip()
    pos = 0
    while pos < len(body):
        lm = _LABEL.match(body, pos)
        if lm is None:
            raise ValueError(f"cannot read the labels from {body[pos:][:40]!r}")
        labels[lm.group(1)] = bytes(lm.group(2), "utf-8").decode("unicode_escape")
        pos = lm.end()
    name = m.group(1) or labels.pop("__name__", "")
    labels.pop("__name__", None)
    if not name:
        raise ValueError("a series needs a name")
    return name, labels


PromDuration = Annotated[float, BeforeValidator(prom_duration)]
"""A Prometheus duration, as promtool reads eval_time, interval and evaluation_interval."""


class ExpAlert(StrictModel):
    exp_labels: dict[str, str] = Field(default_factory=dict)
    exp_annotations: dict[str, str] = Field(default_factory=dict)


class AlertTest(StrictModel):
    eval_time: PromDuration = Field(description="Time since the test's start.")
    alertname: str
    exp_alerts: list[ExpAlert] = Field(default_factory=list)


class InputSeries(StrictModel):
    series: str
    values: str


class TestGroup(StrictModel):
    name: str = ""
    interval: PromDuration | None = Field(None, gt=0, description="Between two samples (default evaluation_interval).")
    input_series: list[InputSeries] = Field(default_factory=list)
    alert_rule_test: list[AlertTest] = Field(default_factory=list)
    external_labels: dict[str, str] = Field(default_factory=dict)


class TestFile(StrictModel):
    rule_files: list[str]
    evaluation_interval: PromDuration = Field(60.0, gt=0)
    tests: list[TestGroup] = Field(default_factory=list)


@dataclass
class Failure:
    """One mismatch: where, and the alerts expected and got, one line each."""

    where: str
    expected: list[str]
    got: list[str]

    def render(self) -> str:
        missing = [a for a in self.expected if a not in self.got]
        unexpected = [a for a in self.got if a not in self.expected]
        lines = [f"FAILED {self.where}"]
        lines += [f"    - expected, not firing: {a}" for a in missing]
        lines += [f"    + firing, not expected: {a}" for a in unexpected]
        lines += ["    expected:", *(f"        {a}" for a in self.expected or ["(none)"])]
        lines += ["    got:", *(f"        {a}" for a in self.got or ["(none)"])]
        return "\n".join(lines)


@dataclass
class FileResult:
    path: str
    tests: int = 0
    checks: int = 0
    failures: list[Failure] = field(default_factory=list)


def _events(name: str, labels: dict[str, str], values: list[float | None], interval_us: int,
            origin: str) -> list[tuple[str, dict[str, Any]]]:
    """(source, record) of one input series."""
    service = labels.get("service", "")
    if not service:
        raise RuleError(f"{origin}: a series needs a service label (Tocsin's alerts are owned per service)")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        ts = T0_US + i * interval_us
        eid = f"{origin}#{i}"
        if name == "logs":
            if v < 0 or v != int(v) or v > MAX_LINES_PER_SAMPLE:
                raise RuleError(f"{origin}: logs values count lines: whole numbers 0..{MAX_LINES_PER_SAMPLE}")
            rest = {k: x for k, x in labels.items() if k not in ("service", *LOG_FIELDS)}
            for j in range(int(v)):
                out.append(("logs", {
                    "event_id": f"{eid}.{j}", "ts": ts, "service": service, "host": labels.get("host", ""),
                    "level": labels.get("level", "INFO"), "logger": labels.get("logger", ""),
                    "message": labels.get("message", ""), "trace_id": None, "attrs": rest}))
        elif name == "health":
            rest = {k: x for k, x in labels.items() if k not in ("service", *HEALTH_FIELDS)}
            out.append(("health", {
                "event_id": eid, "ts": ts, "service": service, "host": labels.get("host", ""),
                "check": labels.get("check", "check"), "status": labels.get("status", "healthy"),
                "response_time_ms": None if math.isnan(v) else v, "details": rest, "error": labels.get("error")}))
        else:
            rest = {k: x for k, x in labels.items() if k not in ("service", *METRIC_FIELDS)}
            out.append(("metrics", {
                "event_id": eid, "ts": ts, "service": service, "host": labels.get("host", ""), "name": name,
                "value": v, "unit": labels.get("unit", ""), "labels": rest}))
    return out


def _duration(seconds: float) -> str:
    """``8m30s`` for 510 seconds: eval times as a test file writes them."""
    out, rest = "", round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


def _describe(labels: dict[str, str], annotations: dict[str, str] | None = None) -> str:
    text = "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "}"
    if annotations:
        text += " annotations {" + ", ".join(f"{k}={v!r}" for k, v in sorted(annotations.items())) + "}"
    return text


def run_group(group: TestGroup, rules: RuleSet, eval_s: float, where: str) -> tuple[int, list[Failure]]:
    """Runs one test group through a fresh engine; returns (checks, failures)."""
    eval_us = max(1, int(eval_s * 1e6))
    interval_us = max(1, int((group.interval or eval_s) * 1e6))
    events: list[tuple[str, dict[str, Any]]] = []
    for i, s in enumerate(group.input_series):
        origin = f"{where}.input_series[{i}]"
        try:
            name, labels = parse_series(s.series)
            values = expand_values(s.values)
        except ValueError as exc:
            raise RuleError(f"{origin}: {exc}") from exc
        events.extend(_events(name, labels, values, interval_us, origin))
        if len(events) > MAX_SAMPLES:
            raise RuleError(f"{where}: more than {MAX_SAMPLES} events")
    last_eval = max((t.eval_time for t in group.alert_rule_test), default=0.0)
    end_us = T0_US + int(last_eval * 1e6)
    last_ts = max((rec["ts"] for _, rec in events), default=T0_US)
    grace_us = eval_us
    steps = (max(end_us, last_ts) - T0_US) // eval_us + 4
    wall = [max(end_us, last_ts) + grace_us]
    eng = Engine(rules, eval_interval_us=eval_us, grace_us=grace_us, max_future_us=10**15,
                 max_catchup_steps=int(steps), wall=lambda: wall[0])
    parts = {src: eng.add_partition(src, 0, src) for src in ("metrics", "logs", "health")}
    for source, rec in sorted(events, key=lambda e: e[1]["ts"]):
        reason = eng.check(source, rec)
        if reason is not None:
            raise RuleError(f"{where}: {rec['event_id']}: {reason}")
        eng.ingest(parts[source], source, rec)
    for ps in parts.values():  # the stream ends: the clock moves on to the last eval_time (absence, timers)
        eng.advance_idle(ps, end_us + eval_us + grace_us)
    transitions = sorted(eng.take_transitions(), key=lambda t: t.ts)
    failures: list[Failure] = []
    for j, test in enumerate(group.alert_rule_test):
        at = T0_US + int(test.eval_time * 1e6)
        state: dict[str, Any] = {}
        for t in transitions:
            if t.ts > at:
                break
            if t.rule == test.alertname:
                state[t.fingerprint] = t
        firing = [t for t in state.values() if t.state == FIRING]
        got_labels = [({k: v for k, v in t.labels.items() if k != "alertname"} | {"severity": t.severity},
                       dict(t.annotations)) for t in firing]
        expected = sorted(_describe(a.exp_labels, a.exp_annotations) for a in test.exp_alerts)
        # Annotations are compared for the keys a test names: show only those of the alert that matches.
        got = []
        for labels, ann in got_labels:
            keys = next((set(a.exp_annotations) for a in test.exp_alerts if a.exp_labels == labels), set())
            got.append(_describe(labels, {k: v for k, v in ann.items() if k in keys}))
        got.sort()
        if got != expected:
            failures.append(Failure(f"{where}.alert_rule_test[{j}]: alertname {test.alertname}, "
                                    f"eval_time {_duration(test.eval_time)}", expected, got))
    return len(group.alert_rule_test), failures


def run_file(path: str | Path) -> FileResult:
    """Runs every test of one file; raises ``RuleError`` for a file (or a rule file) that does not validate."""
    path = Path(path)
    data = read_yaml(path, "rule test file", RuleError)
    try:
        spec = TestFile.model_validate(data)
    except ValidationError as exc:
        raise RuleError(format_validation_error(str(path), exc)) from exc
    if not spec.rule_files:
        raise RuleError(f"{path}: rule_files: name at least one rule file")
    raw: list[Any] = []
    for name in spec.rule_files:
        rule_path = (path.parent / name) if not Path(name).is_absolute() else Path(name)
        raw.extend(load_rules(rule_path).rules)  # each file validated on its own, with its own name
    rules = parse_rules([r.spec.model_dump(by_alias=True) for r in raw], ", ".join(spec.rule_files))
    result = FileResult(str(path), tests=len(spec.tests))
    for i, group in enumerate(spec.tests):
        where = f"{path}: tests[{i}]" + (f" ({group.name})" if group.name else "")
        unknown = {t.alertname for t in group.alert_rule_test} - set(rules.by_name)
        if unknown:
            raise RuleError(f"{where}: alertname {', '.join(sorted(unknown))}: no such rule in {spec.rule_files}")
        checks, failures = run_group(group, rules, spec.evaluation_interval, where)
        result.checks += checks
        result.failures.extend(failures)
    return result
