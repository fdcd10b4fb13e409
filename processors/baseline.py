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
"""

from __future__ import annotations

import statistics

from tocsin.processors.windows import SlidingWindow

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
