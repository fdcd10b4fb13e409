"""Sliding windows from a ring of buckets, and the percentile sketch (1 % relative error)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.processors.windows import DEFAULT_MAPPING, LogHistogram, SlidingWindow, merged

S = 1_000_000


def test_bucket_boundaries_decide_what_is_inside_the_window():
    w = SlidingWindow(bucket_us=10 * S, buckets=6)  # 60 s window, 10 s buckets
    w.add(0, 1.0)
    w.add(10 * S - 1, 2.0)  # last microsecond of bucket 0
    assert w.count(10 * S - 1) == 2
    w.add(10 * S, 4.0)  # first microsecond of bucket 1
    assert w.total(10 * S) == 7.0
    # At t in bucket 5 the window is buckets 0..5; at t in bucket 6 bucket 0 has slid out, bucket 1 not.
    assert w.count(59 * S) == 3
    assert w.count(60 * S) == 1 and w.total(60 * S) == 4.0
    assert w.count(70 * S) == 0 and w.empty(70 * S)


def test_ring_reuses_slots_and_refuses_buckets_that_left_it():
    w = SlidingWindow(bucket_us=S, buckets=3)
    for t in range(10):
        assert w.add(t * S, float(t))
    assert w.count(9 * S) == 3 and w.total(9 * S) == 7 + 8 + 9
    assert not w.add(2 * S, 100.0), "bucket 2 was overwritten by bucket 8: too old to keep"
    assert w.add(7 * S + 5, 1.0), "bucket 7 is still in the ring"
    assert w.count(9 * S) == 4


def test_min_max_latest_and_numerator():
    w = SlidingWindow(bucket_us=S, buckets=5, numerator=True)
    w.add(1 * S, 5.0, is_numerator=True)
    w.add(2 * S, -3.0)
    w.add(3 * S, 9.0, is_numerator=True)
    w.add(2 * S + 1, 7.0)  # out of order: not the latest
    assert (w.minimum(3 * S), w.maximum(3 * S), w.latest(3 * S)) == (-3.0, 9.0, 9.0)
    assert w.numerator(3 * S) == 2 and w.count(3 * S) == 4
    assert w.latest(8 * S) is None, "the newest sample left the window"
    assert w.minimum(8 * S) is None and w.maximum(8 * S) is None


def test_memory_is_bounded_by_buckets_not_events():
    w = SlidingWindow(bucket_us=S, buckets=10, quantiles=True)
    rng = random.Random(1)
    for i in range(200_000):
        w.add(i * 50, rng.uniform(50, 5000))  # 10 s of events, 20,000 per bucket
    assert len(w.idx) == 10 and all(h is not None for h in w.hist)
    # Dense keys between 50 and 5000 at 1 %: ~230 counters per bucket, whatever the rate.
    assert max(h.nbytes() for h in w.hist) < 4 * 300


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "pareto"])
def test_sketch_quantiles_within_one_percent_on_a_million_samples(dist):
    rng = random.Random(42)
    n = 1_000_000
    draw = {"lognormal": lambda: rng.lognormvariate(4.0, 1.5), "uniform": lambda: rng.uniform(0.5, 3000.0),
            "pareto": lambda: rng.paretovariate(1.5) * 20}[dist]
    xs = [draw() for _ in range(n)]
    h = LogHistogram()
    for x in xs:
        h.add(x)
    exact = sorted(xs)
    for q in (0.5, 0.95, 0.99):
        rank = q * (n - 1)
        want = exact[math.floor(rank)]  # the sample of the sketch's rank
        got = h.quantile(q)
        assert abs(got - want) / want <= 0.01, (q, got, want)
        lo, hi = exact[math.floor(rank)], exact[math.ceil(rank)]
        interpolated = lo + (hi - lo) * (rank - math.floor(rank))  # the usual linear interpolation
        assert abs(got - interpolated) / interpolated <= 0.01


def test_merged_bucket_sketches_equal_one_sketch_of_everything():
    rng = random.Random(7)
    values = [rng.expovariate(1 / 200) for _ in range(50_000)]
    parts = [LogHistogram() for _ in range(10)]
    whole = LogHistogram()
    for i, v in enumerate(values):
        parts[i % 10].add(v)
        whole.add(v)
    m = merged(parts)
    assert m.total == whole.total == len(values)
    for q in (0.01, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert m.quantile(q) == whole.quantile(q)


def test_sketch_handles_zero_and_negative_values():
    h = LogHistogram()
    for v in (-10.0, -1.0, 0.0, 0.0, 1.0, 10.0):
        h.add(v)
    assert h.quantile(0.0) == pytest.approx(-10.0, rel=0.01)
    assert h.quantile(0.4) == 0.0
    assert h.quantile(1.0) == pytest.approx(10.0, rel=0.01)
    assert LogHistogram().quantile(0.5) is None


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=0.01, max_value=1e5), min_size=1, max_size=300),
       threshold=st.floats(min_value=0.02, max_value=1e5), q=st.sampled_from([0.5, 0.95, 0.99]))
def test_threshold_counts_agree_with_the_sketch_quantile(values, threshold, q):
    """The rule's cheap test ("samples at or below key(T) <= rank") is exactly "sketch quantile > T"."""
    keys = (DEFAULT_MAPPING.threshold_key(threshold, True), DEFAULT_MAPPING.threshold_key(threshold, False))
    w = SlidingWindow(bucket_us=S, buckets=4, quantiles=True, threshold_keys=keys)
    for i, v in enumerate(values):
        w.add(i % 4 * S, v)
    t = 3 * S
    p = w.quantile(q, t)
    rank = q * (w.count(t) - 1)
    assert (w.count_le(0, t) <= rank) == (p > threshold)
    assert (w.count_le(1, t) > rank) == (p < threshold)
