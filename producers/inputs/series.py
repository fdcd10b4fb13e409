"""Turning cumulative series into what the rules read: counters into per-second rates, histogram buckets into
quantiles.

Choice: quantiles are computed here, in the agent, from the buckets' increase
since the previous sample (Prometheus' ``histogram_quantile(q, rate(x_bucket[interval]))``,
linear interpolation inside the bucket), and published as one MetricEvent per
quantile with a ``quantile`` label, the shape summaries already have. The
processor's rules then read them with ``latest``/``max``/``avg`` and a
``quantile`` filter. Kept as buckets, every rule would need a bucket-merging
aggregate the processor does not have; the cost is that a quantile over a
window longer than one interval is an aggregate of per-interval quantiles.

State is one entry per live series and is replaced on every sample set, so it
is bounded by the input's sample limit.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative ``(upper_bound, count)`` buckets sorted by bound, as Prometheus computes it.

    None when there are no observations. Values in the +Inf bucket answer the highest finite bound.
    """
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0 or math.isnan(total):
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if bound <= 0 and prev_count == 0:
                return bound
            width = bound - prev_bound
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return bound
            return prev_bound + width * (rank - prev_count) / in_bucket
        prev_bound, prev_count = bound, count
    return prev_bound


def _rate(prev: tuple[float, object] | None, t_s: float, value: float) -> float | None:
    if prev is None:
        return None
    t0, v0 = prev
    dt = t_s - t0
    if dt <= 0:
        return None
    inc = value - v0 if value >= v0 else value  # type: ignore[operator]  # a drop is a reset: counted from 0
    return inc / dt


def _increase(prev: tuple[float, object] | None, buckets: list[tuple[float, float]]
              ) -> list[tuple[float, float]] | None:
    if prev is None:
        return None
    old = dict(prev[1])  # type: ignore[call-overload]
    if set(old) != {b for b, _ in buckets} or any(c < old[b] for b, c in buckets):
        return buckets  # reset or new layout: everything counted since the reset
    return [(b, c - old[b]) for b, c in buckets]


class CumulativeTracker:
    """Per-series previous values of one sample set (a scrape): rates of counters, increases of buckets.

    ``begin()`` starts a sample set; series not seen in it are forgotten at ``end()``.
    """

    def __init__(self) -> None:
        self._prev: dict[Hashable, tuple[float, object]] = {}
        self._next: dict[Hashable, tuple[float, object]] = {}

    def begin(self) -> None:
        self._next = {}

    def end(self) -> None:
        self._prev = self._next
        self._next = {}

    def __len__(self) -> int:
        return len(self._prev)

    def rate(self, key: Hashable, t_s: float, value: float) -> float | None:
        """Per-second increase since the previous sample of ``key``; None on its first sample."""
        self._next[key] = (t_s, value)
        return _rate(self._prev.get(key), t_s, value)

    def increase(self, key: Hashable, t_s: float, buckets: list[tuple[float, float]]
                 ) -> list[tuple[float, float]] | None:
        """Buckets' increase since the previous sample of ``key`` (the whole histogram after a reset)."""
        self._next[key] = (t_s, buckets)
        return _increase(self._prev.get(key), buckets)


class LruTracker:
    """The same for series that arrive in any order (OTLP pushes): at most ``max_series``, least recent evicted."""

    def __init__(self, max_series: int = 100_000) -> None:
        self.max_series = max_series
        self._prev: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._prev)

    def _swap(self, key: Hashable, entry: tuple[float, object]) -> tuple[float, object] | None:
        with self._lock:
            prev = self._prev.pop(key, None)
            self._prev[key] = entry
            if len(self._prev) > self.max_series:
                self._prev.popitem(last=False)
                self.evicted += 1
            return prev

    def rate(self, key: Hashable, t_s: float, value: float) -> float | None:
        return _rate(self._swap(key, (t_s, value)), t_s, value)

    def increase(self, key: Hashable, t_s: float, buckets: list[tuple[float, float]]
                 ) -> list[tuple[float, float]] | None:
        return _increase(self._swap(key, (t_s, buckets)), buckets)
