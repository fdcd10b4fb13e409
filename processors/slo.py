"""Service level objectives (``kind: slo``): good/total counts, multi-window burn-rate alerts, error budgets.

An objective says which events count (``filter``), which of them are good
(``good``: a filter, e.g. ``status~: "^[1-4]"``, or ``good_below``: a value at
or under a latency threshold) and the target fraction (``objective``, percent)
over a rolling ``period`` (30 days). The error budget is the bad events the
objective allows: ``(1 - objective) x total``. The burn rate over a window is
the window's bad fraction divided by ``1 - objective`` (1 = spending the budget
exactly over the period). An alert fires when the burn rate is above a pair's
``burn_rate`` over both its ``long`` and its ``short`` window (the Google SRE
workbook, "Alerting on SLOs", multiwindow multi-burn-rate: 14.4x over 1 h and
5 min is 2 % of a 30-day budget in an hour, critical; 6x over 6 h and 30 min is
5 % in six hours, warning). The short window makes the alert stop soon after
the burn stops.

State per series (``SloWindow``): a ring of burn buckets covering the longest
window (rebuilt by replay: at most ``MAX_BURN_WINDOW_S``) and a ring of budget
buckets covering the period (``BUDGET_BUCKETS`` of period/720: 1 h for 30 days),
seeded at start from the store (``seed_sql``/``load_seeds``: per-bucket counts
of the raw ``metrics``/``logs``/``health_checks`` tables before the replay's
start), the stream counting from there on, so a 30-day objective needs no
30 days of Kafka.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clickhouse_connect.driver.binding import format_query_value, quote_identifier

BUDGET_BUCKETS = 720
"""Budget ring length: a 30-day period in hours (expiry is one bucket coarse)."""
BURN_BUCKETS_PER_SHORT = 5
"""The burn bucket is the shortest window over this: a 5-minute window moves in one-minute steps."""
MAX_BURN_BUCKETS = 10_080
MAX_BURN_WINDOW_S = 6 * 3600.0
"""Burn windows are rebuilt by replaying Kafka: the workbook's longest page window (6 h) and no more."""
DEFAULT_BURN_RATES = (
    {"long": 3600.0, "short": 300.0, "burn_rate": 14.4, "severity": "critical"},
    {"long": 6 * 3600.0, "short": 1800.0, "burn_rate": 6.0, "severity": "warning"},
)
"""The SRE workbook's page conditions for a 30-day period (2 % of the budget in 1 h, 5 % in 6 h)."""
EMPTY = -(2**62)
BUDGET_METRIC = "tocsin_slo_budget_remaining"
"""MetricEvent the processor emits with its heartbeat: the error budget left (1 = whole), label ``slo``."""
TABLES = {"metrics": "metrics", "logs": "logs", "health": "health_checks"}
MAP_COLUMN = {"metrics": "labels", "logs": "attrs", "health": "details"}
TOP_FIELDS = {
    "metrics": {"service", "host", "name", "unit"},
    "logs": {"service", "host", "level", "logger", "message", "trace_id"},
    "health": {"service", "host", "check", "status", "error"},
}


class _Ring:
    """Counts (total, good) per fixed event-time bucket in a ring of ``n`` buckets."""

    __slots__ = ("bucket_us", "good", "idx", "n", "total")

    def __init__(self, bucket_us: int, n: int) -> None:
        self.bucket_us, self.n = bucket_us, n
        self.idx = array("q", [EMPTY]) * n
        self.total = array("q", bytes(8 * n))
        self.good = array("q", bytes(8 * n))

    def add(self, ts: int, total: int, good: int) -> bool:
        b = ts // self.bucket_us
        slot = b % self.n
        cur = self.idx[slot]
        if cur != b:
            if b < cur:
                return False  # that bucket left the ring
            self.idx[slot], self.total[slot], self.good[slot] = b, 0, 0
        self.total[slot] += total
        self.good[slot] += good
        return True

    def sums(self, t: int, buckets: int) -> tuple[int, int]:
        """(total, good) of the ``buckets`` newest buckets up to the one holding ``t``."""
        hi = t // self.bucket_us
        lo = hi - buckets
        tot = good = 0
        idx, total, goods = self.idx, self.total, self.good
        for s in range(self.n):
            if lo < idx[s] <= hi:
                tot += total[s]
                good += goods[s]
        return tot, good


class SloWindow:
    """One objective's state for one group: burn buckets (replayed) and budget buckets (seeded, then streamed).

    Duck-types the parts of ``SlidingWindow`` the engine touches (``add``, ``newest``,
    ``unsafe_last``, ``empty``); the rule reads it through ``level`` and ``budget``.
    """

    __slots__ = ("budget_from", "budget_ring", "burn", "first_ts", "last_ts", "newest", "period_buckets",
                 "seeded", "unsafe_last", "verdict", "verdict_at")

    def __init__(self, burn_bucket_us: int, burn_buckets: int, period_us: int,
                 seed: Iterable[tuple[int, int, int]] = (), budget_from: float = -math.inf,
                 seeded: bool = False) -> None:
        self.burn = _Ring(burn_bucket_us, burn_buckets + 1)
        self.budget_ring = _Ring(max(1, period_us // BUDGET_BUCKETS), BUDGET_BUCKETS)
        self.period_buckets = BUDGET_BUCKETS
        self.budget_from = budget_from
        """Stream events before this are in the seed (from the store): not counted twice."""
        self.seeded = seeded
        self.first_ts = math.inf
        for ts, total, good in seed:
            self.budget_ring.add(ts, total, good)
            self.first_ts = min(self.first_ts, ts)
        self.last_ts = -1
        # The engine forgets a series whose window slid past ``newest``: keep it for a whole period.
        self.newest = -1
        self.unsafe_last = -1
        self.verdict_at = -1
        self.verdict: tuple[int, float, float] = (0, 0.0, 0.0)

    def add(self, ts: int, value: float, is_good: bool = False, unsafe: bool = False) -> bool:
        g = 1 if is_good else 0
        if not self.burn.add(ts, 1, g):
            return False
        if ts >= self.budget_from:
            self.budget_ring.add(ts, 1, g)
            if ts < self.first_ts:
                self.first_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts
            self.newest = (ts + self.budget_ring.bucket_us * BUDGET_BUCKETS) // self.burn.bucket_us
            self.unsafe_last = ts // self.burn.bucket_us
        return True

    def empty(self, t: int) -> bool:
        return self.burn.sums(t, self.burn.n)[0] == 0

    def burn_rate(self, t: int, window_us: int, error_budget: float) -> float:
        """Bad fraction over the window ending at ``t`` divided by the allowed fraction; 0 with no events."""
        total, good = self.burn.sums(t, max(1, window_us // self.burn.bucket_us))
        if total == 0:
            return 0.0
        return (total - good) / total / error_budget

    def budget(self, t: int, error_budget: float) -> dict[str, float]:
        """Counts over the period ending at ``t`` and the fraction of the error budget left (< 0: overspent)."""
        total, good = self.budget_ring.sums(t, BUDGET_BUCKETS)
        allowed = error_budget * total
        remaining = 1.0 if total == 0 else 1.0 - (total - good) / allowed
        return {"total": total, "good": good, "bad": total - good, "allowed_bad": allowed,
                "remaining": remaining, "covers_from_us": None if self.first_ts == math.inf else self.first_ts}


def compile_good(source: str, good_below: float | None,
                 good_filter: Callable[[Mapping[str, Any]], bool] | None,
                 value_field: str) -> Callable[[Mapping[str, Any]], bool] | None:
    """The per-event "is it good" predicate: a latency at or under ``good_below``, or the ``good`` filter."""
    if good_below is None:
        return good_filter
    limit = good_below
    if source == "metrics":
        return lambda rec: rec["value"] <= limit
    return lambda rec: (v := rec.get(value_field)) is not None and v <= limit


# --- seeding from the store -------------------------------------------------------------------------------

def column_sql(source: str, key: str) -> str:
    """A rule field (``labels.x``, a top-level field, or a map key) as a SQL expression of the raw table."""
    for prefix in ("labels.", "attrs.", "details."):
        if key.startswith(prefix):
            return f"{prefix[:-1]}[{format_query_value(key[len(prefix):])}]"
    if key in TOP_FIELDS[source]:
        return f"ifNull(toString({quote_identifier(key)}), '')"
    return f"{MAP_COLUMN[source]}[{format_query_value(key)}]"


def filter_sql(source: str, spec: Mapping[str, str | list[str]]) -> str:
    """The rule filter syntax (``field``, ``field~`` regex, ``field!`` not) as a SQL condition, values quoted."""
    parts = []
    for raw_key, raw in spec.items():
        values = [raw] if isinstance(raw, str) else list(raw)
        if raw_key.endswith("~"):
            pattern = "|".join(f"(?:{v})" for v in values)
            parts.append(f"match({column_sql(source, raw_key[:-1])}, {format_query_value(pattern)})")
        elif raw_key.endswith("!"):
            parts.append(f"{column_sql(source, raw_key[:-1])} NOT IN ({', '.join(map(format_query_value, values))})")
        else:
            parts.append(f"{column_sql(source, raw_key)} IN ({', '.join(map(format_query_value, values))})")
    return " AND ".join(parts) or "1"


def seed_sql(database: str, spec: Any, start_us: int, cutoff_us: int, bucket_us: int) -> str:
    """Per group and budget bucket: events and good events in ``[start_us, cutoff_us)`` of the raw table."""
    src = spec.source
    table = f"{quote_identifier(database)}.{quote_identifier(TABLES[src])}"
    groups = [column_sql(src, g) for g in spec.group_by]
    if spec.good_below is not None:
        value = "value" if src == "metrics" else quote_identifier(spec.value_field)
        good = f"ifNull({value}, inf) <= {float(spec.good_below)!r}"
    else:
        good = filter_sql(src, spec.good)
    return (
        f"SELECT {', '.join(groups)}, intDiv(toUnixTimestamp64Micro(ts), {int(bucket_us)}) AS b, "
        f"count() AS total, countIf({good}) AS good FROM {table} "
        f"WHERE ts >= fromUnixTimestamp64Micro({int(start_us)}) AND ts < fromUnixTimestamp64Micro({int(cutoff_us)}) "
        f"AND {filter_sql(src, spec.filter)} GROUP BY {', '.join(f'{g}' for g in groups)}, b"
    )


def load_seeds(query: Callable[[str], Iterable[Iterable[Any]]], database: str, rules: Iterable[Any],
               cutoff_us: int) -> dict[str, dict[tuple[str, ...], list[tuple[int, int, int]]]]:
    """Per SLO rule name, per group key: ``(bucket start us, total, good)`` from the store, before ``cutoff_us``.

    ``query(sql)`` returns rows (a clickhouse-connect ``client.query(sql).result_rows``).
    """
    out: dict[str, dict[tuple[str, ...], list[tuple[int, int, int]]]] = {}
    for rule in rules:
        if not rule.is_slo:
            continue
        spec = rule.spec
        bucket_us = max(1, rule.period_us // BUDGET_BUCKETS)
        start = cutoff_us - rule.period_us
        groups: dict[tuple[str, ...], list[tuple[int, int, int]]] = {}
        n = len(spec.group_by)
        for row in query(seed_sql(database, spec, start, cutoff_us, bucket_us)):
            row = list(row)
            key = tuple(str(v) for v in row[:n])
            groups.setdefault(key, []).append((int(row[n]) * bucket_us, int(row[n + 1]), int(row[n + 2])))
        out[rule.name] = groups
    return out


def budgets(partitions: Iterable[Any]) -> list[dict[str, Any]]:
    """The error budget of every SLO series in ``partitions`` (``PartitionState``s), at each one's clock."""
    out = []
    for ps in partitions:
        if ps.clock < 0:
            continue
        for rule in ps.rules:
            if not rule.is_slo:
                continue
            for key, s in ps.tables[rule.index].items():
                w = s.window
                b = w.budget(ps.clock, rule.error_budget)
                burn = {f"{p.long_s:g}s": round(w.burn_rate(ps.clock, int(p.long_s * 1e6), rule.error_budget), 4)
                        for p in rule.spec.burn_rates}
                out.append({
                    "rule": rule.name, "labels": rule.group_labels(key), "objective": rule.spec.objective,
                    "period_s": rule.spec.period_s, **b, "burn_rates": burn,
                    "covers": "store+stream" if w.seeded else "replay only (no store)",
                })
    return sorted(out, key=lambda d: (d["remaining"], d["rule"]))


def store_client(clickhouse: Any) -> tuple[Any, str]:
    """A client of the store for the seeds at start, or None and why not.

    A ``chdb://`` store is used only when this process already has it open (``tocsin start all``): the
    embedded engine belongs to one process, and opening it here would lock the ClickHouse sink out.
    """
    from tocsin.core import clickhouse as ch

    if ch.is_embedded(clickhouse) and clickhouse.resolved_url() not in ch._embedded:
        return None, "the embedded store belongs to another process (run tocsin start all, or a ClickHouse server)"
    try:
        return ch.connect(clickhouse), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"


def seed_from_store(clickhouse: Any, rules: Iterable[Any], cutoff_us: int,
                    log: Any) -> str:
    """Seeds every SLO rule's budget from the store (before ``cutoff_us``); returns what the budget covers.

    A ``chdb://`` store is used only when this process already has it open (``tocsin start all``): the
    embedded engine belongs to one process, and opening it here would lock the ClickHouse sink out.
    Any failure leaves the budgets to the replayed stream, and says so (logged, /health/detailed and the
    alert's ``budget_covers`` annotation).
    """
    slos = [r for r in rules if r.is_slo]
    if not slos:
        return "no slo rules"
    client, why = store_client(clickhouse)
    if client is None:
        log.warning("slo budgets cover only the replayed stream", extra={"reason": why})
        return f"replay only: {why}"
    try:
        seeds = load_seeds(lambda sql: client.query(sql).result_rows, clickhouse.database, slos, cutoff_us)
    except Exception as exc:  # the store is optional for the processor: alerting goes on without it
        why = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.warning("slo budgets cover only the replayed stream", extra={"reason": why})
        return f"replay only: {why}"
    for r in slos:
        r.slo_seeds, r.slo_cutoff_us = seeds.get(r.name, {}), cutoff_us
    log.info("slo budgets seeded from the store", extra={"groups": sum(len(g) for g in seeds.values())})
    return "store+stream"
