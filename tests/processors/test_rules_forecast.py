"""``kind: forecast``: the least-squares line over the window, read ``predict`` ahead (Prometheus' predict_linear)."""

from __future__ import annotations

import random
import statistics

import pytest

from tocsin.core.errors import RuleError
from tocsin.processors.alerts import FIRING, RESOLVED
from tocsin.processors.rules import load_rules
from tocsin.processors.windows import SlidingWindow

from .helpers import T0, FakeWall, S, engine, metric, rules, states

DISK = {"name": "disk_full", "kind": "forecast", "source": "metrics", "filter": {"name": "disk_usage"},
        "window": "20s", "slices": 10, "predict": "60s", "group_by": ["service", "host"], "critical": 100,
        "resolve_after": "4s"}


def test_the_line_is_ordinary_least_squares_over_the_samples_in_the_window():
    rng = random.Random(7)
    w = SlidingWindow(bucket_us=2 * S, buckets=10, regression=True)
    samples = []
    for i in range(200):
        ts = T0 + i * S // 4 + rng.randrange(S // 4)
        v = 30 + 0.7 * i / 4 + rng.gauss(0, 2)
        w.add(ts, v)
        samples.append((ts, v))
    t = T0 + 50 * S
    lo_bucket = t // (2 * S) - 10  # the sliced window: buckets whose start is in (t - 20 s, t]
    inside = [(ts, v) for ts, v in samples if ts // (2 * S) > lo_bucket]
    slope, intercept = statistics.linear_regression([(ts - t) / S for ts, _ in inside], [v for _, v in inside])
    got = w.linear(t)
    assert got == pytest.approx((slope, intercept), rel=1e-9)
    # predict_linear(v[20s], 60) = intercept at t + 60 s of slope
    assert got[1] + got[0] * 60 == pytest.approx(intercept + slope * 60, rel=1e-9)


def test_one_sample_or_one_instant_has_no_line():
    w = SlidingWindow(bucket_us=S, buckets=5, regression=True)
    w.add(T0, 10.0)
    assert w.linear(T0) is None
    w.add(T0, 12.0)
    assert w.linear(T0) is None


def _feed(eng, ps, wall, start_s, end_s, value_at):
    for t in range(start_s, end_s):
        wall.t = T0 + t * S
        eng.ingest(ps, "metrics", metric(T0 + t * S, value_at(t), "disk_usage"))


def test_a_filling_disk_fires_before_it_is_full_and_resolves_when_it_stops_filling():
    wall = FakeWall()
    eng = engine(rules(DISK), wall=wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    _feed(eng, ps, wall, 0, 100, lambda t: 40 + 0.5 * t)  # +0.5 %/s: 100 % at 120 s
    _feed(eng, ps, wall, 100, 160, lambda t: 90.0)  # cleaned up: flat
    out = eng.take_transitions()
    assert states(out) == [("inactive", FIRING, "critical"), (FIRING, RESOLVED, "none")]
    # v(t) + 60 s x 0.5 %/s > 100 from t > 60 s (the line through exact samples is v itself)
    assert (out[0].ts - T0) // S == 62  # judged at bucket boundaries (2 s)
    assert out[0].value == pytest.approx(101, abs=0.01) and out[0].threshold == 100
    assert 100 < (out[1].ts - T0) // S < 125


def test_a_full_but_flat_disk_does_not_fire():
    wall = FakeWall()
    eng = engine(rules(DISK), wall=wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    _feed(eng, ps, wall, 0, 100, lambda t: 97.0 + (0.3 if t % 2 else -0.3))
    assert eng.take_transitions() == []


def test_forecast_rules_are_validated():
    bad = [{**DISK, "predict": None}, {**DISK, "aggregate": "avg"}, {**DISK, "source": "logs", "filter": {}},
           {"name": "t", "source": "metrics", "aggregate": "avg", "warning": 1, "predict": "1h"}]
    for spec, needle in zip(bad, ("predict: a forecast rule needs predict", "aggregate: a forecast rule",
                                  "source: a forecast reads values", "predict: only forecast rules"), strict=True):
        with pytest.raises(RuleError, match=needle):
            rules(spec)


def test_the_default_disk_rule_forecasts_full_within_4_hours():
    spec = load_rules().by_name["disk_full_in_4h"].spec
    assert (spec.kind, spec.predict, spec.critical, spec.direction) == ("forecast", 4 * 3600, 100, "above")
    assert spec.group_by == ["service", "host", "mount"]


def test_min_current_reads_only_a_line_that_is_already_high():
    wall = FakeWall()
    eng = engine(rules({**DISK, "min_current": 85}), wall=wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    _feed(eng, ps, wall, 0, 100, lambda t: 20 + 0.5 * t)  # steep, but at 70 % at most: quiet
    assert eng.take_transitions() == []
    _feed(eng, ps, wall, 100, 140, lambda t: 70 + 0.5 * (t - 100))  # the line reaches 85 % at 130 s
    out = eng.take_transitions()
    assert states(out) == [("inactive", FIRING, "critical")] and (out[0].ts - T0) // S == 130
