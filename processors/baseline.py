"""Baselines of ``kind: spike`` rules: the rule's aggregate per tumbling period of one window, kept in a ring.

A spike rule compares the aggregate of its sliding window now with a
baseline: the period of the same length that ended ``offset`` earlier (a
day, a week), or the median of the ``median_of`` periods before the current
window. Periods are a ``SlidingWindow`` whose buckets are one window long, so
memory is O(periods) per series whatever the event rate (a week of 5-minute
periods: 2,016 buckets, ~50 KB). A period is a baseline only when the
processor watched all of it (from the partition's first event, or from where
a replay made its windows whole); otherwise there is no verdict, which is
the learning period after a start.

Periods older than Kafka's replay (a week's offset against a few days of
retention) come from the store at start (``seed_from_store``): per group and
period, the raw table's count, sum, extrema and numerator before a cutoff;
the stream counts from the cutoff on, so nothing is counted twice and the
replay needs to cover only the current window.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier

from tocsin.processors.slo import TABLES, column_sql, filter_sql
from tocsin.processors.windows import SlidingWindow

Seed = tuple[int, int, float, float, float, int]
"""One period from the store: (period index, count, sum, min, max, numerator count)."""

MAX_PERIODS = 10_080
"""A week of one-minute periods: beyond that a baseline costs more memory than it is worth."""
SPIKE_AGGREGATES = ("count", "rate_per_min", "sum", "avg", "ratio", "min", "max")
"""Aggregates a period can hold in five numbers; quantiles would need a histogram per period."""
COUNTS = ("count", "rate_per_min", "sum")
"""An empty period is 0 of these; of the others it is no value."""


def periods_needed(offset_us: int | None, median_of: int | None, window_us: int) -> int:
    """Ring length: the periods back to the oldest one a baseline reads, plus the two the current window spans."""
    if median_of is not None:
        return median_of + 2
    return (offset_us or 0) // window_us + 2


def new_history(window_us: int, periods: int, aggregate: str) -> SlidingWindow:
    return SlidingWindow(window_us, periods, numerator=aggregate == "ratio", extrema=aggregate in ("min", "max"))


def period_value(h: SlidingWindow, q: int, aggregate: str) -> float | None:
    """The aggregate of period ``q`` (its bucket index), 0 or None when the ring holds nothing for it."""
    slot = q % h.n
    if h.idx[slot] != q:
        n, sm = 0, 0.0
    else:
        n, sm = h.cnt[slot], h.sm[slot]
    if aggregate == "count":
        return float(n)
    if aggregate == "rate_per_min":
        return n * 60e6 / h.bucket_us
    if aggregate == "sum":
        return sm
    if n == 0:
        return None
    if aggregate == "avg":
        return sm / n
    if aggregate == "ratio":
        return h.num[slot] / n  # type: ignore[index]
    if aggregate == "min":
        return h.lo[slot]  # type: ignore[index]
    return h.hi[slot]  # type: ignore[index]


def baseline_value(offset_us: int | None, median_of: int | None, h: SlidingWindow, t: int, known_from: float,
                   aggregate: str) -> float | None:
    """The baseline at ``t``, or None while the periods it reads were not all watched (learning)."""
    period = h.bucket_us
    h.expire(t)
    if median_of is not None:
        # The current window (t - W, t] overlaps periods q and q - 1: the baseline starts before them.
        q_last = t // period - 2
        q_first = q_last - median_of + 1
        if q_first * period < known_from:
            return None
        values = [v for q in range(q_first, q_last + 1) if (v := period_value(h, q, aggregate)) is not None]
        return statistics.median(values) if values else None
    q = (2 * (t - (offset_us or 0) - period) + period) // (2 * period)  # the period nearest (t-D-W, t-D]
    if q * period < known_from:
        return None
    return period_value(h, q, aggregate)


# --- seeding from the store -------------------------------------------------------------------------------

def seed_sql(database: str, rule: Any, start_us: int, cutoff_us: int) -> str:
    """Per group and period (one window long): count, sum, min, max and numerator of ``[start_us, cutoff_us)``."""
    spec = rule.spec
    src = spec.source
    table = f"{quote_identifier(database)}.{quote_identifier(TABLES[src])}"
    groups = [column_sql(src, g) for g in spec.group_by]
    where = filter_sql(src, spec.filter)
    if src == "metrics":
        value = "value"
    elif src == "health":
        col = quote_identifier(spec.value_field)
        value = f"toFloat64(ifNull({col}, 0))"
        if (spec.aggregate or "count") not in COUNTS:  # Rule.value_of: a null field is no sample of these
            where += f" AND {col} IS NOT NULL"
    else:
        value = "1.0"  # a log line counts one
    numerator = f"countIf({filter_sql(src, spec.numerator)})" if spec.aggregate == "ratio" else "0"
    period = int(rule.window_us)
    return (
        f"SELECT {', '.join(groups)}, intDiv(toUnixTimestamp64Micro(ts), {period}) AS q, count() AS n, "
        f"sum({value}) AS total, min({value}) AS lo, max({value}) AS hi, {numerator} AS num FROM {table} "
        f"WHERE ts >= fromUnixTimestamp64Micro({int(start_us)}) AND ts < fromUnixTimestamp64Micro({int(cutoff_us)}) "
        f"AND {where} GROUP BY {', '.join(groups)}, q"
    )


def first_sql(database: str, source: str) -> str:
    """When the store's table for ``source`` begins: periods before it are unknown, not empty."""
    table = f"{quote_identifier(database)}.{quote_identifier(TABLES[source])}"
    return f"SELECT toUnixTimestamp64Micro(min(ts)), count() > 0 FROM {table}"


def load_seeds(query: Callable[[str], Iterable[Iterable[Any]]], database: str, rules: Iterable[Any],
               cutoff_us: int) -> dict[str, tuple[int, dict[tuple[str, ...], list[Seed]]]]:
    """Per spike rule: (event time from which the store knows its periods, per group its periods)."""
    out: dict[str, tuple[int, dict[tuple[str, ...], list[Seed]]]] = {}
    first: dict[str, int | None] = {}
    for rule in rules:
        if not rule.is_spike:
            continue
        src = rule.spec.source
        if src not in first:
            rows = [list(r) for r in query(first_sql(database, src))]
            first[src] = int(rows[0][0]) if rows and rows[0][1] else None
        period = rule.window_us
        start = (cutoff_us // period - rule.periods) * period
        begins = first[src]
        if begins is None:  # an empty store knows nothing yet: the baseline learns from the stream
            continue
        known_from = max(start, -(-begins // period) * period)  # the first whole period the store holds
        groups: dict[tuple[str, ...], list[Seed]] = {}
        n = len(rule.spec.group_by)
        for row in query(seed_sql(database, rule, known_from, cutoff_us)):
            row = list(row)
            key = tuple(str(v) for v in row[:n])
            groups.setdefault(key, []).append((int(row[n]), int(row[n + 1]), float(row[n + 2]), float(row[n + 3]),
                                               float(row[n + 4]), int(row[n + 5])))
        out[rule.name] = (known_from, groups)
    return out


def seed_from_store(clickhouse: Any, rules: Iterable[Any], cutoff_us: int, log: logging.Logger) -> str:
    """Seeds every spike rule's baseline periods from the store (before ``cutoff_us``); returns what they cover.

    Where the store cannot be read (see ``slo.store_client``), the baselines are rebuilt by replay alone.
    """
    from tocsin.processors.slo import store_client

    spikes = [r for r in rules if r.is_spike]
    if not spikes:
        return "no spike rules"
    client, why = store_client(clickhouse)
    seeds: dict[str, tuple[int, dict[tuple[str, ...], list[Seed]]]] = {}
    if client is not None:
        try:
            seeds = load_seeds(lambda sql: client.query(sql).result_rows, clickhouse.database, spikes, cutoff_us)
        except Exception as exc:  # the store is optional for the processor: alerting goes on without it
            client, why = None, f"{type(exc).__name__}: {str(exc)[:300]}"
    for r in spikes:  # unseeded (no store, or an empty one): the replay rebuilds the baselines (Rule.horizon_us)
        r.spike_seeds = None
        if r.name in seeds:
            r.spike_known_from, r.spike_seeds = seeds[r.name]
            r.spike_cutoff_us = cutoff_us
    if client is None:
        log.warning("spike baselines come from the replay only", extra={"reason": why})
        return f"replay only: {why}"
    log.info("spike baselines seeded from the store",
             extra={"rules": len(seeds), "groups": sum(len(g) for _, g in seeds.values())})
    return "store+stream"
