"""``kind: spike``: the window's aggregate against a baseline (an earlier window, or the median of previous ones)."""

from __future__ import annotations

import pytest

from tocsin.core.errors import RuleError
from tocsin.processors.alerts import FIRING, RESOLVED

from .helpers import T0, FakeWall, S, engine, log, metric, rules, states

ERRORS = {"name": "err_spike", "kind": "spike", "source": "logs", "filter": {"level": "ERROR"},
          "aggregate": "count", "window": "10s", "slices": 5, "baseline": {"median_of": 3},
          "warning": 5, "resolve_after": "2s"}


def _run(spec: dict, per_10s: list[int], tail_s: int = 0, source: str = "logs"):
    """Feeds ``per_10s[i]`` events spread over the i-th 10 s, then ``tail_s`` of idle ticks; returns transitions."""
    wall = FakeWall()
    eng = engine(rules(spec), wall=wall, grace_s=1)
    ps = eng.add_partition(source, 0, source)
    for i, n in enumerate(per_10s):
        for k in range(n):
            ts = T0 + i * 10 * S + k * (10 * S // n)
            wall.t = ts
            eng.ingest(ps, source, log(ts) if source == "logs" else metric(ts, 1.0, "orders"))
        wall.t = T0 + (i + 1) * 10 * S
        eng.advance_idle(ps, wall.t + S)
    end = T0 + len(per_10s) * 10 * S
    for t in range(tail_s):
        eng.advance_idle(ps, end + (t + 2) * S)
    return eng.take_transitions()


def test_five_times_the_median_of_previous_windows_fires_and_resolves():
    out = _run(ERRORS, [4, 5, 4, 4, 30, 4, 4, 4])
    assert states(out) == [("inactive", FIRING, "warning"), (FIRING, RESOLVED, "none")]
    assert out[0].value > 20 and out[0].threshold == 20  # 5 x median(4, 5, 4)
    # fires inside the fifth 10 s, before its end: the sliding window outgrows 20 in it
    assert 40 < (out[0].ts - T0) // S < 50


def test_the_same_count_at_the_usual_level_does_not_fire():
    assert _run(ERRORS, [30, 30, 30, 30, 30, 30]) == []


def test_zero_against_zero_and_few_against_few_never_fire():
    assert _run(ERRORS, [0, 0, 0, 0, 3, 0, 0]) == []  # 3 against 0: 3 < 5 x min_baseline (1)
    assert _run(ERRORS, [1, 0, 1, 1, 0, 4, 0]) == []
    down = {**ERRORS, "direction": "down", "min_baseline": 10}
    assert _run(down, [3, 3, 3, 3, 1, 0, 0]) == []  # 1 against 3 is a third, but 3 is under the floor


def test_no_verdict_while_learning():
    # 30 errors in the second window: only one previous window was watched, median_of 3 needs three
    assert _run(ERRORS, [2, 30, 30, 2]) == []


def test_offset_baseline_compares_with_the_same_window_earlier():
    spec = {**ERRORS, "baseline": {"offset": "60s"}}
    # the 7th window (60-70 s) against the 1st (0-10 s): 30 against 2 fires; against the 0-10 s of 30, not
    assert states(_run(spec, [2, 30, 30, 30, 30, 30, 30])) == [("inactive", FIRING, "warning")]
    assert _run(spec, [30, 2, 2, 2, 2, 2, 30]) == []


def test_down_fires_when_orders_drop_to_a_fraction_of_their_level():
    orders = {"name": "orders_drop", "kind": "spike", "source": "metrics", "filter": {"name": "orders"},
              "aggregate": "count", "window": "10s", "slices": 5, "baseline": {"median_of": 3},
              "direction": "down", "warning": 4, "min_baseline": 10}
    out = _run(orders, [40, 40, 40, 40, 0, 0], tail_s=5, source="metrics")
    assert states(out)[0] == ("inactive", FIRING, "warning")
    assert out[0].threshold == 10  # 40 / 4
    assert out[0].value < 10


@pytest.mark.parametrize(("patch", "needle"), [
    ({"baseline": None}, "baseline: a spike rule needs"),
    ({"baseline": {"offset": "1d", "median_of": 3}}, "baseline: a spike rule needs"),
    ({"aggregate": "p95", "source": "metrics"}, "aggregate: a spike compares"),
    ({"warning": 0.5}, "warning: a spike threshold is a ratio"),
    ({"baseline": {"offset": "30d"}, "window": "1m"}, "baseline: reaches more than"),
])
def test_spike_rules_are_validated(patch, needle):
    with pytest.raises(RuleError, match=needle):
        rules({**ERRORS, **patch})


def test_a_threshold_rule_takes_no_baseline():
    with pytest.raises(RuleError, match="only spike rules take a baseline"):
        rules({"name": "t", "source": "logs", "aggregate": "count", "warning": 1, "baseline": {"median_of": 2}})
