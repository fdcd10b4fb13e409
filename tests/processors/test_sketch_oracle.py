"""The processor's percentile sketch against the reference DDSketch (the ``ddsketch`` package) as an oracle.

Both use the logarithmic mapping with the same gamma and DDSketch's rank ``q * (n - 1)``, so on the same
samples they must report the same quantiles (up to float rounding), not merely both within 1 %.
"""

from __future__ import annotations

import math

from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.processors.windows import RELATIVE_ACCURACY, LogHistogram, merged

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
values = st.one_of(
    st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.just(0.0),
    st.floats(min_value=-1e6, max_value=-1e-6, allow_nan=False, allow_infinity=False),
)


def _same(a: float | None, b: float | None) -> bool:
    assert a is not None and b is not None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=400))
def test_quantiles_equal_ddsketch(samples):
    ours, ref = LogHistogram(), DDSketch(relative_accuracy=RELATIVE_ACCURACY)
    for v in samples:
        ours.add(v)
        ref.add(v)
    for q in QUANTILES:
        assert _same(ours.quantile(q), ref.get_quantile_value(q)), (q, ours.quantile(q), ref.get_quantile_value(q))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(values, min_size=0, max_size=100), min_size=1, max_size=8))
def test_merged_buckets_equal_merged_ddsketches(parts):
    ref = DDSketch(relative_accuracy=RELATIVE_ACCURACY)
    ours = []
    for part in parts:
        h, d = LogHistogram(), DDSketch(relative_accuracy=RELATIVE_ACCURACY)
        for v in part:
            h.add(v)
            d.add(v)
        ours.append(h)
        ref.merge(d)
    got = merged(ours)
    if ref.count == 0:
        assert got.quantile(0.5) is None
        return
    for q in QUANTILES:
        assert _same(got.quantile(q), ref.get_quantile_value(q))
