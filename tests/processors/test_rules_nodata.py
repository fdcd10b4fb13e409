"""The ``no_data`` policy of threshold rules (resolve, keep, fire), driven by an injected clock.

An empty window is what a stopped exporter looks like: Grafana's NoData
options are OK (resolve, the default), KeepLast (keep) and Alerting (fire).
"""

from __future__ import annotations

import pytest

from tocsin.core.errors import RuleError
from tocsin.processors.alerts import FIRING, RESOLVED

from .helpers import T0, FakeWall, S, engine, metric, rules, states

CPU = {"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"}, "aggregate": "avg",
       "window": "10s", "slices": 5, "warning": 80, "resolve_after": "2s"}


def _run(policy: str | None, values: list[tuple[int, int, float]], idle_until_s: int, **extra):
    """Feeds ``(start_s, end_s, value)`` runs (one sample a second), then lets the tick move the clock."""
    spec = {**CPU, **extra} if policy is None else {**CPU, "no_data": policy, **extra}
    wall = FakeWall()
    eng = engine(rules(spec), wall=wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    for start, end, v in values:
        for t in range(start, end):
            wall.t = T0 + t * S
            eng.ingest(ps, "metrics", metric(T0 + t * S, v, "cpu_usage"))
    for t in range(values[-1][1], idle_until_s):  # the processing-time tick, once a second, no events
        wall.t = T0 + t * S
        eng.advance_idle(ps, wall.t)
    return eng, ps, eng.take_transitions()


def test_default_resolves_when_the_window_empties():
    _, _, out = _run(None, [(0, 10, 90)], 60)
    assert states(out) == [("inactive", FIRING, "warning"), (FIRING, RESOLVED, "none")]
    # The last sample (9 s) is in bucket [8, 10), which leaves the 10 s window at 18 s; 2 s hysteresis.
    assert (out[1].ts - T0) // S == 20


def test_keep_holds_the_alert_while_no_data_comes_and_resolves_on_clear_data():
    eng, ps, out = _run("keep", [(0, 10, 90)], 120)
    assert states(out) == [("inactive", FIRING, "warning")]
    assert len(eng.open_alerts()) == 1
    for t in range(120, 130):  # the exporter is back, and the value is fine
        eng.ingest(ps, "metrics", metric(T0 + t * S, 10, "cpu_usage"))
    assert states(eng.take_transitions()) == [(FIRING, RESOLVED, "none")]


def test_keep_does_not_raise_a_clear_series():
    _, _, out = _run("keep", [(0, 10, 10)], 60)
    assert out == []


def test_fire_raises_a_clear_series_whose_data_stops_and_resolves_when_it_returns():
    eng, ps, out = _run("fire", [(0, 10, 10)], 60, severity="warning", **{"for": "3s"})
    assert states(out) == [("inactive", "pending", "warning"), ("pending", FIRING, "warning")]
    assert (out[0].ts - T0) // S == 18 and (out[1].ts - T0) // S == 21
    assert out[1].value is None
    for t in range(60, 70):
        eng.ingest(ps, "metrics", metric(T0 + t * S, 10, "cpu_usage"))
    assert states(eng.take_transitions()) == [(FIRING, RESOLVED, "none")]


def test_keep_survives_a_restart_from_the_alerts_topic():
    """A restarted processor has the firing record and no data: keep holds it, resolve lets it go."""
    _, _, out = _run("keep", [(0, 10, 90)], 30)
    record = out[0].as_record()
    for policy, expected in (("keep", []), ("resolve", [(FIRING, RESOLVED, "none")])):
        wall = FakeWall(T0 + 40 * S)
        eng = engine(rules({**CPU, "no_data": policy}), wall=wall, grace_s=1)
        ps = eng.add_partition("metrics", 0, "metrics")
        assert eng.restore([record], lambda _r, _s, p=ps: p) == 1
        for t in range(40, 80):
            wall.t = T0 + t * S
            eng.advance_idle(ps, wall.t)
        assert states(eng.take_transitions()) == expected, policy


@pytest.mark.parametrize("aggregate", ["count", "rate_per_min"])
def test_counts_reject_a_no_data_policy(aggregate):
    with pytest.raises(RuleError, match="no_data"):
        rules({**CPU, "aggregate": aggregate, "no_data": "fire"})
