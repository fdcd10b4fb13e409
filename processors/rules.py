"""Alert rules: the YAML format, its validation, and the compiled form the engine evaluates.

A rule file is ``{"rules": [...]}`` (or a bare list). Each rule::

    - name: api_response_time_p95      # unique; becomes the alert's ``alertname`` label
      kind: threshold                   # threshold (default), or absence (more kinds below)
      source: metrics                   # logs, metrics or health
      filter: {name: api_response_time} # field: value or [values]; ``field~`` regex, ``field!`` not equal
      aggregate: p95                    # count, sum, rate_per_min, avg, min, max, latest, p50, p95, p99, ratio
      window: 5m                        # event-time sliding window, cut in ``slices`` buckets
      group_by: [service]               # must include service; fields or label/attr/detail keys
      warning: 500                      # thresholds (at least one), compared with ``direction``
      critical: 2000
      direction: above                  # above (value > threshold) or below (value < threshold)
      for: 1m                           # held this long before firing (Prometheus ``for``)
      resolve_after: 2m                 # clear this long before resolving (hysteresis)
      cooldown: 10m                     # a re-fire this soon after resolving reopens the incident
      labels: {team: web}
      annotations: {summary: "{{ labels.service }} p95 {{ value | round(1) }} ms"}

Absence rules name ``absent_for`` (and ``severity``) instead of an aggregate
and thresholds: a group that sent nothing for that long fires. Ratio rules
name a ``numerator`` filter: errors among the events the ``filter`` selects.
Durations are seconds or ``500ms``/``30s``/``5m``/``1h``/``1d``.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import jinja2.sandbox
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError

from tocsin.core.config import StrictModel, format_validation_error, read_yaml
from tocsin.core.errors import RuleError
from tocsin.processors.baseline import MAX_PERIODS, SPIKE_AGGREGATES, baseline_value, new_history, periods_needed
from tocsin.processors.slo import (
    BURN_BUCKETS_PER_SHORT,
    DEFAULT_BURN_RATES,
    MAX_BURN_BUCKETS,
    MAX_BURN_WINDOW_S,
    SloWindow,
    compile_good,
)
from tocsin.processors.windows import DEFAULT_MAPPING, SlidingWindow

DEFAULT_RULES = Path(__file__).parent / "rules" / "default.yaml"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
VALUE_AGGREGATES = {"sum", "avg", "min", "max", "latest", *QUANTILES}
COUNT_AGGREGATES = {"count", "rate_per_min", "ratio"}
Aggregate = Literal["count", "sum", "rate_per_min", "avg", "min", "max", "latest", "p50", "p95", "p99", "ratio"]

# Top-level fields of each source's schema; any other filter/group key is looked up in its map.
SOURCE_FIELDS = {
    "logs": ({"service", "host", "level", "logger", "message", "trace_id"}, "attrs"),
    "metrics": ({"service", "host", "name", "unit"}, "labels"),
    "health": ({"service", "host", "check", "status", "error"}, "details"),
}
ERROR_LEVELS = ("ERROR", "CRITICAL")

NONE, WARNING, CRITICAL = 0, 1, 2
KEEP = -1
"""no_data: keep: an empty window holds the alert's current severity."""
SEVERITY_NAMES = ("none", "warning", "critical")


def parse_duration(value: Any) -> float:
    """Seconds from a number or ``'90s'``, ``'5m'``, ``'500ms'``..."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds >= 0")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
FilterSpec = dict[str, str | list[str]]


class BaselineSpec(StrictModel):
    """``baseline:`` of a spike rule: exactly one of ``offset`` and ``median_of``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    offset_s: Duration | None = Field(None, alias="offset", gt=0, description="The same window this much earlier.")
    median_of: int | None = Field(None, ge=1, le=1000, description="Median of this many previous windows.")


class BurnRateSpec(StrictModel):
    """One pair of ``burn_rates`` of an slo rule: fires when both windows burn faster than ``burn_rate``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    long_s: Duration = Field(alias="long", gt=0, description="The long window (how much budget was spent).")
    short_s: Duration = Field(alias="short", gt=0, description="The short window (it is still burning).")
    burn_rate: float = Field(gt=1, le=1e6, description="Bad fraction / allowed fraction over both windows.")
    severity: Literal["warning", "critical"] = Field(description="Severity of the alert this pair fires.")


class RuleSpec(StrictModel):
    """One rule as written in YAML (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_:.\-]*$", description="Unique rule name.")
    kind: Literal["threshold", "absence", "forecast", "spike", "new_pattern", "slo"] = Field(
        "threshold", description="threshold, absence, forecast, spike, new_pattern or slo (README: rule reference).")
    source: Literal["logs", "metrics", "health"] = Field(description="Which input topic the rule reads.")
    filter: FilterSpec = Field(default_factory=dict, description="Events the rule reads.")
    numerator: FilterSpec = Field(default_factory=dict, description="ratio: the part counted over the whole.")
    aggregate: Aggregate | None = Field(None, description="What to compute over the window.")
    value_field: str = Field("response_time_ms", description="health: which numeric field is the value.")
    window: Duration = Field(300.0, gt=0, description="Sliding window length in seconds.")
    slices: int = Field(10, ge=2, le=360, description="Buckets per window (window / slices = bucket width).")
    group_by: list[str] = Field(default_factory=lambda: ["service"], description="Labels of one alert.")
    warning: float | None = Field(None, description="Warning threshold.")
    critical: float | None = Field(None, description="Critical threshold.")
    direction: Literal["above", "below", "up", "down"] = Field(
        "above", description="Fire above or below the thresholds (up and down are the same, for spikes).")
    baseline: BaselineSpec | None = Field(None, description="spike: what the window is compared with.")
    min_current: float = Field(
        0.0, ge=0, description="spike up, forecast: the current value (forecast: the line now) must reach this.")
    min_baseline: float = Field(
        1.0, ge=0, description="spike: a baseline below this counts as this (up), or gives no verdict (down).")
    for_s: Duration = Field(0.0, alias="for", description="How long the condition holds before firing.")
    resolve_after: Duration = Field(0.0, description="How long clear before resolving (hysteresis).")
    cooldown: Duration = Field(0.0, description="A re-fire within this after resolving reopens the incident.")
    predict: Duration | None = Field(
        None, gt=0, description="forecast: how far ahead the least-squares line is read (predict_linear).")
    unseen_for: Duration = Field(
        7 * 86400.0, gt=0, description="new_pattern: a pattern not seen in the service for this long is new.")
    learn_for: Duration = Field(
        3600.0, ge=0, description="new_pattern: after the rule starts, patterns are learnt for this long, not alerted.")
    allow: list[str] = Field(
        default_factory=list, description="new_pattern: regular expressions; a matching pattern never alerts.")
    max_patterns_per_service: int = Field(
        10_000, ge=1, le=1_000_000, description="new_pattern: patterns remembered per service (oldest dropped).")
    objective: float | None = Field(
        None, gt=0, lt=100, description="slo: the target percentage of good events (99.5).")
    period_s: Duration = Field(30 * 86400.0, alias="period", ge=3600, le=400 * 86400,
                               description="slo: the rolling period the objective and its error budget cover.")
    good: FilterSpec = Field(default_factory=dict, description="slo: the good events among those filter selects.")
    good_below: float | None = Field(
        None, gt=0, description="slo (latency): an event is good when its value is at or under this (ms).")
    burn_rates: tuple[BurnRateSpec, ...] = Field(
        tuple(BurnRateSpec.model_validate(b) for b in DEFAULT_BURN_RATES),
        description="slo: multiwindow burn-rate pairs (default the SRE workbook's 14.4x 1h/5m, 6x 6h/30m).")
    absent_for: Duration | None = Field(None, gt=0, description="absence: silence that fires the alert.")
    severity: Literal["warning", "critical"] = Field(
        "critical", description="absence, and no_data: fire: severity when firing.")
    no_data: Literal["resolve", "keep", "fire"] = Field(
        "resolve", description="An empty window: counts as clear (resolve), holds the alert as it is (keep) "
        "or fires at severity (fire), as Grafana's NoData options (OK, KeepLast, Alerting).")
    labels: dict[str, str] = Field(default_factory=dict, description="Static labels added to the alert.")
    annotations: dict[str, str] = Field(default_factory=dict, description="jinja2 templates: summary...")

    @property
    def up(self) -> bool:
        return self.direction in ("above", "up")

    def problems(self) -> list[tuple[str, str]]:
        """(field, reason) for every inconsistency between fields: checked after the types are valid."""
        out: list[tuple[str, str]] = []
        if "service" not in self.group_by:
            out.append(("group_by", "must include service (alerts are owned per service)"))
        if len(set(self.group_by)) != len(self.group_by):
            out.append(("group_by", "lists a label twice"))
        if self.kind == "absence":
            if self.absent_for is None:
                out.append(("absent_for", "an absence rule needs absent_for"))
            for name in ("aggregate", "warning", "critical"):
                if getattr(self, name) is not None:
                    out.append((name, "an absence rule takes absent_for and severity instead"))
            return out
        if self.absent_for is not None:
            out.append(("absent_for", "only absence rules take absent_for"))
        if self.kind == "slo":
            return out + self._slo_problems()
        for name in ("objective", "good_below"):
            if getattr(self, name) is not None:
                out.append((name, "only slo rules take " + name))
        if self.good:
            out.append(("good", "only slo rules take good"))
        if self.kind == "forecast":
            if self.predict is None:
                out.append(("predict", "a forecast rule needs predict (how far ahead, e.g. 4h)"))
            if self.aggregate is not None:
                out.append(("aggregate", "a forecast rule fits a line to the samples: it takes no aggregate"))
            if self.source == "logs":
                out.append(("source", "a forecast reads values: metrics or health, not logs"))
        elif self.predict is not None:
            out.append(("predict", "only forecast rules take predict"))
        if self.kind == "spike":
            b = self.baseline
            if b is None or (b.offset_s is None) == (b.median_of is None):
                out.append(("baseline", "a spike rule needs a baseline with one of offset (e.g. 1d) or median_of"))
            elif b.offset_s is not None and b.offset_s < self.window:
                out.append(("baseline", "offset must be at least one window (the baseline must not overlap it)"))
            elif periods_needed(int((b.offset_s or 0) * 1e6), b.median_of, int(self.window * 1e6)) > MAX_PERIODS:
                out.append(("baseline", f"reaches more than {MAX_PERIODS} windows back: use a longer window"))
            if self.aggregate not in SPIKE_AGGREGATES:
                out.append(("aggregate", f"a spike compares one of {', '.join(SPIKE_AGGREGATES)}"))
            for name in ("warning", "critical"):
                v = getattr(self, name)
                if v is not None and v <= 1:
                    out.append((name, "a spike threshold is a ratio to the baseline: > 1 (5 = five times)"))
        elif self.baseline is not None:
            out.append(("baseline", "only spike rules take a baseline"))
        if self.kind == "new_pattern":
            if self.source != "logs":
                out.append(("source", "new_pattern reads log messages: source logs"))
            for name in ("aggregate", "warning", "critical"):
                if getattr(self, name) is not None:
                    out.append((name, "a new_pattern rule takes severity instead (it fires on the first occurrence)"))
            for i, rx in enumerate(self.allow):
                try:
                    re.compile(rx)
                except re.error as exc:
                    out.append((f"allow[{i}]", f"bad regular expression: {exc}"))
            return out
        if self.no_data != "resolve" and self.kind == "threshold" and self.aggregate in ("count", "rate_per_min"):
            out.append(("no_data", "count and rate_per_min are 0, never missing, over an empty window"))
        if self.aggregate is None and self.kind != "forecast":
            out.append(("aggregate", "a threshold rule needs an aggregate"))
        if self.warning is None and self.critical is None:
            out.append(("warning", "a threshold rule needs warning or critical (or both)"))
        for name in ("warning", "critical"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                out.append((name, "must be a finite number"))
        if self.warning is not None and self.critical is not None:
            if self.kind == "spike" and self.critical < self.warning:
                out.append(("critical", "a spike's critical ratio must be >= its warning ratio"))
            elif self.kind != "spike" and self.up and self.critical < self.warning:
                out.append(("critical", "with direction above, critical must be >= warning"))
            elif self.kind != "spike" and not self.up and self.critical > self.warning:
                out.append(("critical", "with direction below, critical must be <= warning"))
        if self.source == "logs" and self.aggregate not in COUNT_AGGREGATES | {None}:
            out.append(("aggregate", f"logs have no value: use count, rate_per_min or ratio, not {self.aggregate}"))
        if self.aggregate == "ratio" and not self.numerator:
            out.append(("numerator", "a ratio rule needs a numerator filter (e.g. level: [ERROR, CRITICAL])"))
        if self.aggregate != "ratio" and self.numerator:
            out.append(("numerator", "only ratio rules take a numerator"))
        if self.aggregate in QUANTILES and any(t is not None and t <= 0 for t in (self.warning, self.critical)):
            out.append(("warning", "percentile thresholds must be > 0"))
        return out


    def _slo_problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.objective is None:
            out.append(("objective", "an slo rule needs objective (a percentage such as 99.5)"))
        if (self.good_below is None) == (not self.good):
            out.append(("good", "an slo rule needs one of good (a filter: availability) or good_below (latency)"))
        if self.good_below is not None and self.source == "logs":
            out.append(("good_below", "logs have no value: use good (a filter) for log-based objectives"))
        for name in ("aggregate", "warning", "critical", "numerator", "baseline", "predict"):
            if getattr(self, name):
                out.append((name, "an slo rule takes objective, good or good_below and burn_rates instead"))
        if self.no_data != "resolve":
            out.append(("no_data", "no requests burn no budget: an slo rule takes no no_data"))
        for name in ("window", "slices"):
            if name in self.model_fields_set:
                out.append((name, "an slo rule's windows are its burn_rates' long and short windows"))
        if not self.burn_rates:
            out.append(("burn_rates", "an slo rule needs at least one {long, short, burn_rate, severity}"))
        for i, b in enumerate(self.burn_rates):
            if b.short_s >= b.long_s:
                out.append((f"burn_rates[{i}].short", "the short window must be shorter than the long one"))
            if b.long_s > MAX_BURN_WINDOW_S:
                out.append((f"burn_rates[{i}].long", f"at most {MAX_BURN_WINDOW_S / 3600:g}h: burn windows are "
                            "rebuilt by replaying Kafka on restart (the budget itself comes from the store)"))
            if b.long_s > self.period_s:
                out.append((f"burn_rates[{i}].long", "a burn window longer than the period"))
        if self.burn_rates and self.burn_rates[0].short_s > 0:
            bucket = min(b.short_s for b in self.burn_rates) / BURN_BUCKETS_PER_SHORT
            if max(b.long_s for b in self.burn_rates) / max(bucket, 1.0) > MAX_BURN_BUCKETS:
                out.append(("burn_rates", f"the longest window over a fifth of the shortest exceeds "
                            f"{MAX_BURN_BUCKETS} buckets: lengthen the short windows"))
        return out


# --- compiled form --------------------------------------------------------------------------------

Getter = Callable[[Mapping[str, Any]], str]


def _getter(source: str, key: str) -> Getter:
    """Reads ``key`` from an event: a top-level field, or an entry of the source's map (labels/attrs/details)."""
    fields, mapname = SOURCE_FIELDS[source]
    for prefix in ("labels.", "attrs.", "details."):
        if key.startswith(prefix):
            mapname, key = prefix[:-1], key[len(prefix):]
            break
    else:
        if key in fields:
            def top(rec: Mapping[str, Any], _k: str = key) -> str:
                v = rec.get(_k)
                return "" if v is None else str(v)
            return top

    def in_map(rec: Mapping[str, Any], _m: str = mapname, _k: str = key) -> str:
        return (rec.get(_m) or {}).get(_k, "")
    return in_map


def compile_filter(source: str, spec: FilterSpec) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate for ``spec`` (all keys must match), or None for match-all."""
    if not spec:
        return None
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for raw_key, raw in spec.items():
        values = [raw] if isinstance(raw, str) else list(raw)
        if raw_key.endswith("~"):
            get = _getter(source, raw_key[:-1])
            pattern = re.compile("|".join(f"(?:{v})" for v in values))
            checks.append(lambda r, g=get, p=pattern: p.search(g(r)) is not None)
        elif raw_key.endswith("!"):
            get = _getter(source, raw_key[:-1])
            excluded = frozenset(values)
            checks.append(lambda r, g=get, s=excluded: g(r) not in s)
        else:
            get = _getter(source, raw_key)
            allowed = frozenset(values)
            checks.append(lambda r, g=get, s=allowed: g(r) in s)
    if len(checks) == 1:
        return checks[0]
    return lambda r: all(c(r) for c in checks)


NON_NULL_STRINGS = {"service", "host", "level", "logger", "message", "name", "unit", "check", "status"}
"""Top-level fields the schemas declare as plain (never null) strings: readable with one C-level itemgetter."""


def _key_function(source: str, group_by: list[str],
                  getters: tuple[Getter, ...]) -> Callable[[Mapping[str, Any]], tuple[str, ...]]:
    """The group key of an event as a tuple; an ``operator.itemgetter`` when every label is a plain field."""
    fields = SOURCE_FIELDS[source][0] & NON_NULL_STRINGS
    if all(g in fields for g in group_by):
        if len(group_by) == 1:
            name = group_by[0]
            return lambda rec: (rec[name],)
        return operator.itemgetter(*group_by)
    return lambda rec: tuple([g(rec) for g in getters])


_JINJA = jinja2.sandbox.SandboxedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined)


@dataclass(eq=False)
class Rule:
    """A validated rule compiled for the hot path: filter predicate, group key, level function."""

    spec: RuleSpec
    index: int
    name: str = ""
    source: str = ""
    is_absence: bool = False
    window_us: int = 0
    bucket_us: int = 0
    for_us: int = 0
    resolve_us: int = 0
    cooldown_us: int = 0
    absent_us: int = 0
    accepts: Callable[[Mapping[str, Any]], bool] | None = None
    post_filter: Callable[[Mapping[str, Any]], bool] | None = None
    """``accepts`` minus what dispatch by metric name already checked (None: nothing left to check)."""
    key_of: Callable[[Mapping[str, Any]], tuple[str, ...]] = tuple
    is_numerator: Callable[[Mapping[str, Any]], bool] | None = None
    group_getters: tuple[Getter, ...] = ()
    dispatch_names: tuple[str, ...] | None = None
    quantile: float | None = None
    thresholds: tuple[tuple[int, float], ...] = ()
    """(level, threshold) pairs, most severe first."""
    threshold_keys: tuple[int, ...] = ()
    safe_low: float = math.inf
    safe_high: float = -math.inf
    """A sample in [safe_low, safe_high] cannot raise a clear level (avg, max, latest, quantiles...)."""
    is_spike: bool = False
    offset_us: int | None = None
    median_of: int | None = None
    periods: int = 0
    """spike: the ring of past periods (one window each) the baseline is read from."""
    is_pattern: bool = False
    label_names: tuple[str, ...] = ()
    """Labels of one alert: group_by, plus pattern_id for new_pattern rules."""
    allowed: Callable[[str], bool] | None = None
    is_slo: bool = False
    period_us: int = 0
    error_budget: float = 0.0
    """slo: the allowed bad fraction, 1 - objective."""
    slo_pairs: tuple[tuple[int, int, int, float], ...] = ()
    """slo: (level, long us, short us, burn rate), most severe first."""
    slo_seeds: dict[tuple[str, ...], list[tuple[int, int, int]]] | None = None
    """slo: per group, (bucket start, total, good) read from the store at start (None: no store)."""
    slo_cutoff_us: float = -math.inf
    """slo: stream events before this are in the seeds."""
    spike_seeds: dict[tuple[str, ...], list[tuple[int, int, float, float, float, int]]] | None = None
    """spike: per group, the periods read from the store at start (None: the baselines come from the replay)."""
    spike_known_from: float = -math.inf
    """spike, seeded: event time from which the store knows the periods."""
    spike_cutoff_us: float = -math.inf
    """spike, seeded: stream events before this are in the seeds."""
    no_data_level: int | None = None
    """The level an empty window has (None: NONE, the default 'resolve'; -1: keep the alert's severity)."""
    templates: dict[str, jinja2.Template] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.spec
        self.name, self.source, self.is_absence = s.name, s.source, s.kind == "absence"
        self.window_us = int(s.window * 1e6)
        self.bucket_us = max(1, self.window_us // s.slices)
        self.for_us, self.resolve_us, self.cooldown_us = (int(x * 1e6) for x in (s.for_s, s.resolve_after, s.cooldown))
        self.absent_us = int((s.absent_for or 0) * 1e6)
        self.label_names = tuple(s.group_by)
        if s.kind == "new_pattern":
            self.is_pattern = True
            self.label_names = (*s.group_by, "pattern_id")
            if s.allow:
                allow_rx = re.compile("|".join(f"(?:{a})" for a in s.allow))
                self.allowed = lambda p, _rx=allow_rx: _rx.search(p) is not None
        if s.kind == "slo" and s.objective is not None:
            self.is_slo = True
            self.period_us = int(s.period_s * 1e6)
            self.error_budget = 1.0 - s.objective / 100.0
            self.bucket_us = max(1_000_000, int(min(b.short_s for b in s.burn_rates) * 1e6) // BURN_BUCKETS_PER_SHORT)
            self.window_us = max(int(b.long_s * 1e6) for b in s.burn_rates)
            pairs = [(CRITICAL if b.severity == "critical" else WARNING, int(b.long_s * 1e6), int(b.short_s * 1e6),
                      b.burn_rate) for b in s.burn_rates]
            self.slo_pairs = tuple(sorted(pairs, key=lambda p: -p[0]))
        if s.kind == "spike" and s.baseline is not None:
            self.is_spike = True
            b = s.baseline
            self.offset_us = int(b.offset_s * 1e6) if b.offset_s is not None else None
            self.median_of = b.median_of
            self.periods = periods_needed(self.offset_us, self.median_of, self.window_us)
        self.accepts = compile_filter(s.source, s.filter)
        self.is_numerator = compile_filter(s.source, s.numerator)
        if self.is_slo:  # the window's numerator counts the good events
            self.is_numerator = compile_good(s.source, s.good_below, compile_filter(s.source, s.good), s.value_field)
        self.group_getters = tuple(_getter(s.source, g) for g in s.group_by)
        self.key_of = _key_function(s.source, s.group_by, self.group_getters)
        names = s.filter.get("name") if s.source == "metrics" else None
        self.dispatch_names = ((names,) if isinstance(names, str) else tuple(names)) if names else None
        rest = {k: v for k, v in s.filter.items() if not (k == "name" and self.dispatch_names)}
        self.post_filter = compile_filter(s.source, rest)
        self.quantile = QUANTILES.get(s.aggregate or "")
        pairs = [(CRITICAL, s.critical), (WARNING, s.warning)]
        self.thresholds = tuple((lvl, t) for lvl, t in pairs if t is not None)
        if self.is_slo:  # the burn rate each severity fires at
            self.thresholds = tuple((lvl, rate) for lvl, _, _, rate in self.slo_pairs)
        if self.is_pattern:  # fires while its occurrences are in the window: count > 0
            self.thresholds = ((CRITICAL if s.severity == "critical" else WARNING, 0.0),)
        if self.quantile is not None:
            # Rank test "quantile > T" <=> "samples at or below key(T) <= rank"; for "<" use keys < T.
            inclusive = s.up
            self.threshold_keys = tuple(DEFAULT_MAPPING.threshold_key(t, inclusive) for _, t in self.thresholds)
        self.templates = {k: _JINJA.from_string(v) for k, v in s.annotations.items()}
        if not self.is_absence and s.no_data != "resolve":
            self.no_data_level = KEEP if s.no_data == "keep" else (CRITICAL if s.severity == "critical" else WARNING)
        self._safe_range()

    @property
    def has_safe_range(self) -> bool:
        return self.safe_low <= self.safe_high

    def _safe_range(self) -> None:
        """Where a new sample cannot turn a clear window into a breaching one (so it needs no evaluation).

        Averages, maxima (above), minima (below), latest values and quantiles of samples that are
        each clear stay clear; counts, sums and rates can grow with any sample. Quantile rules compare
        bucket estimates, which are within the relative accuracy of the sample: hence the margin.
        """
        s = self.spec
        agg = s.aggregate
        if (self.is_absence or agg not in {"avg", "min", "max", "latest", *QUANTILES} or not self.thresholds
                or s.kind != "threshold"):
            return
        margin = DEFAULT_MAPPING.relative_accuracy if self.quantile is not None else 0.0
        if s.up:
            if agg == "min":
                return
            lowest = min(t for _, t in self.thresholds)
            self.safe_low, self.safe_high = -math.inf, lowest / (1 + margin) if lowest > 0 else lowest * (1 + margin)
        else:
            if agg == "max":
                return
            highest = max(t for _, t in self.thresholds)
            self.safe_low, self.safe_high = (highest / (1 - margin) if highest > 0 else highest), math.inf

    @property
    def horizon_us(self) -> int:
        """How much event time must be replayed to rebuild this rule's state (window plus timers)."""
        if self.is_absence:
            return self.absent_us + max(self.for_us, self.resolve_us)
        if self.is_spike and self.spike_seeds is None:  # the baseline's periods are rebuilt by replay too
            return (self.periods + 1) * self.window_us + max(self.for_us, self.resolve_us)
        return self.window_us + self.bucket_us + max(self.for_us, self.resolve_us)

    def new_history(self, key: tuple[str, ...] = ()) -> SlidingWindow | None:
        if not self.is_spike:
            return None
        h = new_history(self.window_us, self.periods, self.spec.aggregate or "count")
        for q, n, total, lo, hi, num in (self.spike_seeds or {}).get(key, ()):
            h.merge(q, n, total, lo, hi, num)
        return h

    def spike_level(self, w: SlidingWindow, history: SlidingWindow, t: int, known_from: float
                    ) -> tuple[int, float | None, float | None]:
        """(level, current value, baseline) of a spike rule at ``t``; thresholds are ratios to the baseline.

        Up: fires when current >= min_current and current > ratio x max(baseline, min_baseline), so 0
        against 0 or 3 against 1 never fire with the defaults. Down: fires when baseline >= min_baseline
        and current < baseline / ratio. No baseline yet (learning) or no current value: no verdict.
        """
        s = self.spec
        base = baseline_value(self.offset_us, self.median_of, history, t, known_from, s.aggregate or "count")
        cur = self.measure(w, t)
        if base is None or cur is None:
            return NONE, cur, base
        for lvl, ratio in self.thresholds:
            if s.up:
                if cur >= s.min_current and cur > ratio * max(base, s.min_baseline):
                    return lvl, cur, base
            elif base >= s.min_baseline and cur * ratio < base:
                return lvl, cur, base
        return NONE, cur, base

    def spike_threshold(self, level: int, base: float | None) -> float | None:
        """The absolute value a spike crossed (or would cross): the ratio applied to the baseline."""
        ratio = self.threshold_for(level) if level != NONE else (self.threshold_for(1) or self.threshold_for(2))
        if ratio is None or base is None:
            return None
        s = self.spec
        return ratio * max(base, s.min_baseline) if s.up else base / ratio

    def new_window(self, key: tuple[str, ...] = ()) -> SlidingWindow:
        s = self.spec
        if self.is_slo:
            seeds = self.slo_seeds
            return SloWindow(self.bucket_us, self.window_us // self.bucket_us, self.period_us,  # type: ignore
                             (seeds or {}).get(key, ()), self.slo_cutoff_us, seeds is not None)
        return SlidingWindow(self.bucket_us, s.slices, numerator=s.aggregate == "ratio",
                             quantiles=self.quantile is not None, threshold_keys=self.threshold_keys,
                             extrema=s.aggregate in ("min", "max"), regression=s.kind == "forecast")

    def value_of(self, rec: Mapping[str, Any]) -> float | None:
        """The number a sample contributes: the metric value, the health field, or 1 per log line."""
        if self.source == "metrics":
            return rec["value"]
        if self.source == "health":
            v = rec.get(self.spec.value_field)
            if v is None:
                return 0.0 if self.spec.aggregate in COUNT_AGGREGATES else None
            return float(v)
        return 1.0

    def group_key(self, rec: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(g(rec) for g in self.group_getters)

    def group_labels(self, key: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.label_names, key, strict=True))

    def measure(self, w: SlidingWindow, t: int) -> float | None:
        """The aggregate over the window ending at ``t``; None when the window holds nothing."""
        agg = self.spec.aggregate
        if self.is_pattern:
            return float(w.count(t))
        if self.is_slo:
            return self.slo_verdict(w, t)[1]  # type: ignore[arg-type]
        if self.spec.kind == "forecast":
            if w.span_us(t) * 2 < self.window_us:
                return None  # a line through less than half a window is noise read hours ahead
            line = w.linear(t)
            if line is None or (self.spec.up and line[1] < self.spec.min_current):
                return None  # min_current: only a line that is already high is read ahead (node_exporter's mixin)
            return line[1] + line[0] * self.spec.predict  # type: ignore[operator]
        if agg == "count":
            return float(w.count(t))
        if agg == "rate_per_min":
            return w.count(t) * 60e6 / self.window_us
        n = w.count(t)
        if n == 0:
            return None
        if agg == "ratio":
            return w.numerator(t) / n
        if agg == "sum":
            return w.total(t)
        if agg == "avg":
            return w.total(t) / n
        if agg == "min":
            return w.minimum(t)
        if agg == "max":
            return w.maximum(t)
        if agg == "latest":
            return w.latest(t)
        return w.quantile(self.quantile, t)  # type: ignore[arg-type]

    def level(self, w: SlidingWindow, t: int) -> int:
        """NONE, WARNING or CRITICAL for the window ending at ``t`` (no data is NONE)."""
        if self.is_slo:
            return self.slo_verdict(w, t)[0]  # type: ignore[arg-type]
        above = self.spec.up
        if self.quantile is not None:
            n = w.count(t)
            if n == 0:
                return NONE
            rank = self.quantile * (n - 1)
            for j, (lvl, _) in enumerate(self.thresholds):
                le = w.count_le(j, t)
                if (le <= rank) if above else (le > rank):
                    return lvl
            return NONE
        value = self.measure(w, t)
        if value is None:
            return NONE
        for lvl, threshold in self.thresholds:
            if (value > threshold) if above else (value < threshold):
                return lvl
        return NONE

    def slo_verdict(self, w: SloWindow, t: int) -> tuple[int, float, float]:
        """(level, long-window burn rate, short-window burn rate) at ``t``: the most severe pair whose windows
        both burn faster than its rate, else NONE with the first pair's rates (the alert's value)."""
        if w.verdict_at == t:
            return w.verdict
        eb = self.error_budget
        verdict = None
        for lvl, long_us, short_us, rate in self.slo_pairs:
            lb = w.burn_rate(t, long_us, eb)
            sb = w.burn_rate(t, short_us, eb) if lb > rate else 0.0
            if lb > rate and sb > rate:
                verdict = (lvl, lb, sb)
                break
            if verdict is None:
                verdict = (NONE, lb, sb)
        w.verdict_at, w.verdict = t, verdict  # type: ignore[assignment]
        return verdict  # type: ignore[return-value]

    def context(self, w: Any, t: int) -> dict[str, str]:
        """slo: the error budget at ``t`` for annotations (and whether the store seeded it)."""
        if not self.is_slo or w is None:
            return {}
        b = w.budget(t, self.error_budget)
        covers = ("the whole period (store, then stream)" if w.seeded else
                  "only what was replayed (no store at start)")
        return {"budget_remaining": f"{b['remaining'] * 100:.2f}%", "objective": f"{self.spec.objective:g}%",
                "good": str(b["good"]), "total": str(b["total"]), "budget_covers": covers}

    def threshold_for(self, level: int) -> float | None:
        for lvl, t in self.thresholds:
            if lvl == level:
                return t
        return None

    def render(self, context: dict[str, Any]) -> dict[str, str]:
        """Annotations rendered with value, threshold, labels, severity, state; a broken template says so."""
        out = {}
        for key, template in self.templates.items():
            try:
                out[key] = template.render(**context)
            except Exception as exc:  # a template error must not lose the transition
                out[key] = f"{self.spec.annotations[key]} [template error: {type(exc).__name__}: {exc}]"
        return out

    def fingerprint(self, key: tuple[str, ...]) -> str:
        """Rule name plus group labels, hashed: stable across processes and restarts."""
        text = "\x1f".join([self.name, *(f"{k}={v}" for k, v in zip(self.label_names, key, strict=True))])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class RuleSet:
    """The compiled rules with the indexes the engine dispatches on."""

    rules: list[Rule]
    origin: str = "<rules>"
    by_source: dict[str, list[Rule]] = field(default_factory=dict)
    by_metric: dict[str, list[Rule]] = field(default_factory=dict)
    any_metric: list[Rule] = field(default_factory=list)
    by_name: dict[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rule in self.rules:
            self.by_name[rule.name] = rule
            self.by_source.setdefault(rule.source, []).append(rule)
            if rule.source == "metrics":
                if rule.dispatch_names is None:
                    self.any_metric.append(rule)
                else:
                    for n in rule.dispatch_names:
                        self.by_metric.setdefault(n, []).append(rule)
        # Wildcard metric rules also see named metrics: append them to every named list.
        for lst in self.by_metric.values():
            lst.extend(self.any_metric)

    @property
    def horizon_us(self) -> int:
        return max((r.horizon_us for r in self.rules), default=0)


def parse_rules(data: Any, origin: str = "<rules>") -> RuleSet:
    """Validates parsed YAML; raises ``RuleError`` listing every problem as ``origin: rules[i] (name): field: ...``."""
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleError(f"{origin}: (top level): expected a mapping with a list under 'rules'")
    problems: list[str] = []
    specs: list[RuleSpec] = []
    for i, raw in enumerate(data["rules"]):
        label = f"rules[{i}]"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            label += f" ({raw['name']})"
        try:
            spec = RuleSpec.model_validate(raw)
        except ValidationError as exc:
            problems.extend(line.replace(f"{origin}: ", f"{origin}: {label}: ", 1)
                            for line in format_validation_error(origin, exc))
            continue
        problems.extend(f"{origin}: {label}: {fname}: {reason}" for fname, reason in spec.problems())
        for key, text in spec.annotations.items():  # syntax now, not at the first transition
            try:
                _JINJA.parse(text)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{origin}: {label}: annotations.{key}: template syntax error: {exc.message}")
        for fkey, values in (*spec.filter.items(), *spec.numerator.items()):
            if fkey.endswith("~"):
                for v in [values] if isinstance(values, str) else values:
                    try:
                        re.compile(v)
                    except re.error as exc:
                        problems.append(f"{origin}: {label}: filter.{fkey}: bad regular expression: {exc}")
        specs.append(spec)
    seen: set[str] = set()
    for i, raw in enumerate(data["rules"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{origin}: rules[{i}] ({name}): name: duplicate rule name")
            seen.add(name)
    if problems:
        raise RuleError(problems)
    return RuleSet([Rule(spec, i) for i, spec in enumerate(specs)], origin)


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Reads and validates a rule file (the seed's defaults when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_RULES
    return parse_rules(read_yaml(path, "rule file", RuleError), str(path))
