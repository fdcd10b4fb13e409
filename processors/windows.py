"""Event-time sliding windows built from a ring of fixed buckets, and the percentile sketch they keep.

A window of length W is cut into N buckets ("slices") of W/N; a series keeps
one ring of N buckets, so its memory is O(N) whatever the event rate. At time
t the window is the buckets whose start lies in ``(t - W, t]``: it covers
between ``W - W/N`` and ``W`` of event time (the usual sliced-window
approximation, as in Flink's slicing and Kafka Streams' hopping windows).

Percentiles come from ``LogHistogram``, a mergeable log-bucketed histogram
with DDSketch's logarithmic mapping: every positive value v is counted in
bucket ``k = ceil(log_gamma(v))`` with ``gamma = (1 + a) / (1 - a)`` and read
back as ``2 gamma^k / (gamma + 1)``, so any quantile it returns is within a
relative error ``a`` (1 % by default) of the exact sample of the same rank.
One histogram per bucket, merged on demand: the ring stays O(N) and a
quantile over the window is exact up to ``a``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence

RELATIVE_ACCURACY = 0.01
"""Relative error of every percentile (the issue's 1 %)."""

MIN_POSITIVE = 1e-9
"""Values at or below this (and zero) go to the zero bucket; below any latency or percentage we measure."""

MAX_KEY_SPAN = 8192
"""Cap on the dense key range of one histogram (1e-9..1e15 needs ~2,760 keys at 1 %): memory stays bounded."""

BELOW_ALL_KEYS = -(2**40)
_log, _ceil = math.log, math.ceil
"""Threshold key of values <= 0: below every positive value's key."""


class LogMapping:
    """Value <-> bucket key with a stated relative accuracy (DDSketch's logarithmic mapping)."""

    __slots__ = ("gamma", "multiplier", "relative_accuracy")

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self.relative_accuracy = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self.multiplier = 1 / math.log(self.gamma)

    def key(self, value: float) -> int:
        """Bucket of a positive value: ``gamma^(k-1) < value <= gamma^k``."""
        return math.ceil(math.log(value) * self.multiplier)

    def value(self, key: int) -> float:
        """The estimate of every value in bucket ``key``: within ``relative_accuracy`` of each."""
        return 2 * self.gamma**key / (self.gamma + 1)

    def threshold_key(self, threshold: float, inclusive: bool) -> int:
        """The largest key whose estimate is ``<= threshold`` (``inclusive``) or ``< threshold``.

        Counting the samples at or below that key tells whether a quantile read
        from the histogram exceeds the threshold, without merging histograms.
        """
        if threshold <= 0:
            return BELOW_ALL_KEYS - 1 if inclusive or threshold < 0 else BELOW_ALL_KEYS
        k = math.floor(math.log(threshold * (self.gamma + 1) / 2) * self.multiplier)
        # Float rounding can put k one off either way: settle it on the estimates themselves.
        while self.value(k + 1) <= threshold if inclusive else self.value(k + 1) < threshold:
            k += 1
        while not (self.value(k) <= threshold if inclusive else self.value(k) < threshold):
            k -= 1
        return k


DEFAULT_MAPPING = LogMapping()


class LogHistogram:
    """Mergeable quantile sketch: counts per log bucket in a dense array, plus zero and negative counts.

    >>> h = LogHistogram()
    >>> for v in range(1, 1001): h.add(float(v))
    >>> abs(h.quantile(0.95) - 950) / 950 < 0.01
    True
    """

    __slots__ = ("counts", "mapping", "negative", "offset", "total", "zero")

    def __init__(self, mapping: LogMapping = DEFAULT_MAPPING) -> None:
        self.mapping = mapping
        self.offset = 0
        self.counts = array("I")
        self.zero = 0
        self.total = 0
        self.negative: LogHistogram | None = None

    def add(self, value: float, count: int = 1) -> None:
        if value > MIN_POSITIVE:
            self.add_key(self.mapping.key(value), count)
        elif value >= -MIN_POSITIVE:
            self.zero += count
            self.total += count
        else:
            if self.negative is None:
                self.negative = LogHistogram(self.mapping)
            self.negative.add(-value, count)
            self.total += count

    def add_key(self, key: int, count: int = 1) -> None:
        """Count a positive value already mapped to ``key`` (the window maps once for several uses)."""
        i = key - self.offset
        counts = self.counts
        if not counts:
            self.offset, i = key, 0
            counts.append(0)
        elif i < 0:
            if len(counts) - i > MAX_KEY_SPAN:  # clamp: a wild value joins the lowest bucket
                i = 0
            else:
                self.counts = counts = array("I", bytes(4 * -i)) + counts
                self.offset, i = key, 0
        elif i >= len(counts):
            if i >= MAX_KEY_SPAN:
                i = len(counts) - 1
            else:
                counts.frombytes(bytes(4 * (i + 1 - len(counts))))
        counts[i] += count
        self.total += count

    def merge(self, other: LogHistogram) -> None:
        """Adds ``other``'s counts (same mapping)."""
        if other.counts:
            lo = other.offset if not self.counts else min(self.offset, other.offset)
            hi = other.offset + len(other.counts) if not self.counts else max(
                self.offset + len(self.counts), other.offset + len(other.counts))
            if hi - lo <= MAX_KEY_SPAN:
                grown = array("I", bytes(4 * (hi - lo)))
                for src in (self, other):
                    base = src.offset - lo
                    for i, c in enumerate(src.counts):
                        if c:
                            grown[base + i] += c
                self.counts, self.offset = grown, lo
                self.total += sum(other.counts)
            else:
                for i, c in enumerate(other.counts):
                    if c:
                        self.add_key(other.offset + i, c)
        self.zero += other.zero
        self.total += other.zero
        if other.negative is not None:
            if self.negative is None:
                self.negative = LogHistogram(self.mapping)
            self.negative.merge(other.negative)
            self.total += other.negative.total

    def quantile(self, q: float) -> float | None:
        """The value at rank ``q * (n - 1)`` (0-based, as DDSketch), within the relative accuracy; None if empty."""
        if self.total == 0:
            return None
        rank = q * (self.total - 1)
        seen = 0
        neg = self.negative
        if neg is not None and neg.total:
            # Most negative first: walk the negative store's keys downward.
            for i in range(len(neg.counts) - 1, -1, -1):
                seen += neg.counts[i]
                if seen > rank:
                    return -self.mapping.value(neg.offset + i)
        seen += self.zero
        if seen > rank:
            return 0.0
        for i, c in enumerate(self.counts):
            seen += c
            if seen > rank:
                return self.mapping.value(self.offset + i)
        return self.mapping.value(self.offset + len(self.counts) - 1)  # float rounding of rank at q=1

    def __len__(self) -> int:
        return self.total

    def nbytes(self) -> int:
        """Approximate payload size (for memory reports)."""
        return 4 * len(self.counts) + (self.negative.nbytes() if self.negative is not None else 0)


def merged(histograms: Iterable[LogHistogram | None], mapping: LogMapping = DEFAULT_MAPPING) -> LogHistogram:
    out = LogHistogram(mapping)
    for h in histograms:
        if h is not None:
            out.merge(h)
    return out


EMPTY = 2**62
"""Bucket index of an unused slot: above every real index, so ``min(idx)`` finds the oldest bucket in use."""


class SlidingWindow:
    """One series' ring of N event-time buckets with count, sum, min, max, latest and optional extras.

    ``numerator`` counts a sub-population (errors among requests) for ratio
    rules; ``quantiles`` keeps a ``LogHistogram`` per bucket; ``threshold_keys``
    counts, per bucket, the samples whose histogram key is at or below each
    key, so "is p95 above 500 ms" costs a sum of N counters instead of a merge.

    Reads at time t first ``expire(t)`` the buckets that left the window, so
    every aggregate is a plain sum over the ring (C speed); reads must come in
    non-decreasing t, as the engine's evaluation instants do.

    >>> w = SlidingWindow(bucket_us=10_000_000, buckets=6)
    >>> w.add(5_000_000, 3.0); w.add(15_000_000, 5.0)
    True
    True
    >>> w.count(15_000_000), w.total(15_000_000), w.count(65_000_000)
    (2, 8.0, 1)
    """

    __slots__ = (
        "bucket_us", "cnt", "hi", "hist", "idx", "last_ts", "last_value", "le", "lo", "mapping", "n", "newest",
        "num", "sm", "su", "suu", "suv", "threshold_keys", "unsafe_last",
    )

    def __init__(self, bucket_us: int, buckets: int, *, numerator: bool = False, quantiles: bool = False,
                 threshold_keys: Sequence[int] = (), extrema: bool = True, regression: bool = False,
                 mapping: LogMapping = DEFAULT_MAPPING) -> None:
        # Typed arrays, not lists: no float object per bucket, nothing for the garbage collector to walk.
        self.bucket_us = bucket_us
        self.n = buckets
        self.idx = array("q", [EMPTY]) * buckets
        self.cnt = array("q", bytes(8 * buckets))
        self.sm = array("d", bytes(8 * buckets))
        self.lo = array("d", [math.inf]) * buckets if extrema else None
        self.hi = array("d", [-math.inf]) * buckets if extrema else None
        self.num = array("q", bytes(8 * buckets)) if numerator else None
        # Least squares (``regression``): per bucket, sums of u, u^2 and u*v with u the seconds since the
        # bucket's start, so sums stay small and exact enough whatever the epoch (see ``linear``).
        self.su = array("d", bytes(8 * buckets)) if regression else None
        self.suu = array("d", bytes(8 * buckets)) if regression else None
        self.suv = array("d", bytes(8 * buckets)) if regression else None
        self.newest = -1
        """Index of the newest bucket that got a sample: the window is empty once it slid past it."""
        self.unsafe_last = -1
        """Index of the newest bucket with a sample the caller flagged as possibly breaching."""
        self.hist: list[LogHistogram | None] | None = [None] * buckets if quantiles else None
        self.threshold_keys = tuple(threshold_keys)
        self.le = [array("q", bytes(8 * buckets)) for _ in self.threshold_keys]
        self.mapping = mapping
        self.last_ts = -1
        self.last_value = 0.0

    def add(self, ts: int, value: float, is_numerator: bool = False, unsafe: bool = False) -> bool:
        """Counts one sample; False if its bucket has already left the ring (too old to keep)."""
        b = ts // self.bucket_us
        slot = b % self.n
        cur = self.idx[slot]
        if cur != b:
            if b < cur != EMPTY:
                return False
            self._reset(slot, b)
            if b > self.newest:
                self.newest = b
        self.cnt[slot] += 1
        self.sm[slot] += value
        lo = self.lo
        if lo is not None:
            if value < lo[slot]:
                lo[slot] = value
            if value > self.hi[slot]:  # type: ignore[index]
                self.hi[slot] = value  # type: ignore[index]
        if is_numerator:
            self.num[slot] += 1  # type: ignore[index]
        su = self.su
        if su is not None:
            u = (ts - b * self.bucket_us) / 1e6
            su[slot] += u
            self.suu[slot] += u * u  # type: ignore[index]
            self.suv[slot] += u * value  # type: ignore[index]
        if unsafe and b > self.unsafe_last:
            self.unsafe_last = b
        if ts >= self.last_ts:
            self.last_ts = ts
            self.last_value = value
        hist = self.hist
        if hist is not None:
            h = hist[slot]
            if h is None:
                h = hist[slot] = LogHistogram(self.mapping)
            if value > MIN_POSITIVE:
                key = _ceil(_log(value) * self.mapping.multiplier)  # LogMapping.key, inlined: the hot path
                i = key - h.offset
                counts = h.counts
                if 0 <= i < len(counts):
                    counts[i] += 1
                    h.total += 1
                else:
                    h.add_key(key)
            else:
                key = BELOW_ALL_KEYS
                h.add(value)
            for j, tk in enumerate(self.threshold_keys):
                if key <= tk:
                    self.le[j][slot] += 1
        return True

    def merge(self, b: int, n: int, total: float, lo: float, hi: float, numerator: int = 0) -> None:
        """Adds a whole bucket's aggregates (bucket index ``b``), as counted elsewhere: a store's rollup at
        start (spike baselines). Only count, sum, extrema and numerator: no histograms or regression sums."""
        slot = b % self.n
        cur = self.idx[slot]
        if cur != b:
            if b < cur != EMPTY:
                return
            self._reset(slot, b)
            if b > self.newest:
                self.newest = b
        self.cnt[slot] += n
        self.sm[slot] += total
        if self.lo is not None:
            self.lo[slot] = min(self.lo[slot], lo)
            self.hi[slot] = max(self.hi[slot], hi)  # type: ignore[index]
        if self.num is not None:
            self.num[slot] += numerator

    def _reset(self, slot: int, b: int) -> None:
        self.idx[slot] = b
        self.cnt[slot] = 0
        self.sm[slot] = 0.0
        if self.lo is not None:
            self.lo[slot] = math.inf
            self.hi[slot] = -math.inf  # type: ignore[index]
        if self.num is not None:
            self.num[slot] = 0
        if self.su is not None:
            self.su[slot] = self.suu[slot] = self.suv[slot] = 0.0  # type: ignore[index]
        if self.hist is not None:
            self.hist[slot] = None
        for le in self.le:
            le[slot] = 0

    def expire(self, t: int) -> None:
        """Empties the buckets that are out of the window ending at ``t``."""
        lo = t // self.bucket_us - self.n
        idx = self.idx
        if min(idx) <= lo:
            for s in range(self.n):
                if idx[s] <= lo:
                    self._reset(s, EMPTY)

    def live(self, t: int) -> list[int]:
        """Slots inside the window ending at event time ``t``."""
        self.expire(t)
        return [s for s, b in enumerate(self.idx) if b != EMPTY]

    def count(self, t: int) -> int:
        self.expire(t)
        return sum(self.cnt)

    def total(self, t: int) -> float:
        self.expire(t)
        return sum(self.sm)

    def numerator(self, t: int) -> int:
        if self.num is None:
            return 0
        self.expire(t)
        return sum(self.num)

    def count_le(self, j: int, t: int) -> int:
        """Samples in the window whose key is at or below ``threshold_keys[j]``."""
        self.expire(t)
        return sum(self.le[j])

    def minimum(self, t: int) -> float | None:
        if self.lo is None:
            raise ValueError("this window does not keep extrema (extrema=False)")
        self.expire(t)
        v = min(self.lo)
        return None if v == math.inf else v

    def maximum(self, t: int) -> float | None:
        if self.hi is None:
            raise ValueError("this window does not keep extrema (extrema=False)")
        self.expire(t)
        v = max(self.hi)
        return None if v == -math.inf else v

    def nbytes(self) -> int:
        """Approximate payload size of the ring (for memory reports)."""
        arrays = [a for a in (self.idx, self.cnt, self.sm, self.lo, self.hi, self.num, self.su, self.suu, self.suv,
                              *self.le) if a is not None]
        return sum(8 * len(a) for a in arrays) + sum(h.nbytes() for h in self.hist or () if h is not None)

    def linear(self, t: int) -> tuple[float, float] | None:
        """Least-squares line through the window's samples: (slope per second, value at ``t``), as Prometheus'
        ``deriv``/``predict_linear`` (x = sample time relative to ``t``); None with fewer than two distinct times.
        """
        if self.su is None:
            raise ValueError("this window does not keep regression sums (regression=False)")
        self.expire(t)
        n = sx = sxx = sxy = sy = 0.0
        bucket_us, su, suu, suv = self.bucket_us, self.su, self.suu, self.suv
        for s, b in enumerate(self.idx):
            c = self.cnt[s]
            if b == EMPTY or not c:
                continue
            d = (b * bucket_us - t) / 1e6  # the bucket's start, seconds before t
            n += c
            sx += c * d + su[s]
            sxx += c * d * d + 2 * d * su[s] + suu[s]
            sxy += d * self.sm[s] + suv[s]
            sy += self.sm[s]
        if n < 2:
            return None
        var = n * sxx - sx * sx
        if var <= 1e-9 * n * n:  # all samples at one instant: no slope
            return None
        slope = (n * sxy - sx * sy) / var
        return slope, (sy - slope * sx) / n

    def span_us(self, t: int) -> int:
        """Event time from the start of the oldest bucket in the window to its newest sample (0 if empty)."""
        self.expire(t)
        oldest = min(self.idx)
        return 0 if oldest == EMPTY or self.last_ts < 0 else self.last_ts - oldest * self.bucket_us

    def latest(self, t: int) -> float | None:
        """The value of the newest sample, if it is inside the window."""
        if self.last_ts < 0 or self.last_ts // self.bucket_us <= t // self.bucket_us - self.n:
            return None
        return self.last_value

    def quantile(self, q: float, t: int) -> float | None:
        if self.hist is None:
            return None
        self.expire(t)
        return merged(self.hist, self.mapping).quantile(q)

    def empty(self, t: int) -> bool:
        self.expire(t)
        return not any(self.cnt)
