"""``kind: new_pattern``: an error whose normalized message the service did not log within ``unseen_for``."""

from __future__ import annotations

import pytest

from tocsin.core.errors import RuleError
from tocsin.core.patterns import normalize_message
from tocsin.processors.alerts import FIRING, RESOLVED
from tocsin.processors.patterns import PatternMemory
from tocsin.sinks.clickhouse import reports

from .helpers import T0, FakeWall, S, engine, log, rules, states

NEW = {"name": "new_error", "kind": "new_pattern", "source": "logs", "filter": {"level": ["ERROR", "CRITICAL"]},
       "window": "10s", "slices": 5, "unseen_for": "60s", "learn_for": "20s", "severity": "warning",
       "resolve_after": "0s"}


def test_the_reports_and_the_rules_share_one_normalizer():
    assert reports.normalize_message is normalize_message
    assert normalize_message("order 123 for 'bob' failed: id 3f2a9c1e-0b7d-4c1e-9a2b-1c2d3e4f5a6b at 0xdeadbeef") \
        == "order <n> for '<str>' failed: id <uuid> at <hex>"


def _engine(spec=NEW):
    wall = FakeWall()
    eng = engine(rules(spec), wall=wall, grace_s=1)
    return eng, eng.add_partition("logs", 0, "logs"), wall


def _feed(eng, ps, wall, t_s: float, message: str, service: str = "shop", level: str = "ERROR"):
    ts = T0 + int(t_s * S)
    wall.t = ts
    eng.ingest(ps, "logs", log(ts, level, service=service, message=message))


def test_a_new_error_after_the_learning_period_fires_with_pattern_example_and_count():
    eng, ps, wall = _engine()
    for t in range(0, 30):  # learnt: the usual error (ids differ, the pattern is one)
        _feed(eng, ps, wall, t, f"payment 4{t:02d} declined")
        if t == 5:
            _feed(eng, ps, wall, t, "cache miss storm")  # new, but during learning: learnt, not alerted
    _feed(eng, ps, wall, 30, "KeyError: 'coupon_code' in checkout id=991")
    _feed(eng, ps, wall, 31, "KeyError: 'coupon_code' in checkout id=992")
    _feed(eng, ps, wall, 32, "payment 777 declined")
    _feed(eng, ps, wall, 33, "cache miss storm")
    for t in range(34, 60):
        _feed(eng, ps, wall, t, "payment 1 declined")
    out = eng.take_transitions()
    assert states(out) == [("inactive", FIRING, "warning"), (FIRING, RESOLVED, "none")]
    first = out[0]
    assert first.annotations["pattern"] == "KeyError: '<str>' in checkout id=<n>"
    assert first.annotations["example"] == "KeyError: 'coupon_code' in checkout id=991"
    assert first.value == 1  # occurrences in the window at the instant it fires: the first one
    assert out[1].annotations["count"] == "2"  # occurrences since it appeared
    assert first.labels["service"] == "shop" and len(first.labels["pattern_id"]) == 16


def test_patterns_are_per_service_and_new_again_after_unseen_for():
    eng, ps, wall = _engine()
    _feed(eng, ps, wall, 0, "disk quota exceeded", service="a")
    _feed(eng, ps, wall, 25, "disk quota exceeded", service="a")  # seen by a: nothing
    _feed(eng, ps, wall, 26, "disk quota exceeded", service="b")  # b never logged it
    _feed(eng, ps, wall, 100, "disk quota exceeded", service="a")  # 75 s unseen > 60 s: new again
    _feed(eng, ps, wall, 130, "info only", level="INFO", service="a")
    fired = [(t.labels["service"], (t.ts - T0) // S) for t in eng.take_transitions() if t.state == FIRING]
    # learning runs from the partition's first event (0 s) for 20 s, for every service in it
    assert fired == [("b", 26), ("a", 100)]


def test_the_allow_list_keeps_a_pattern_quiet():
    eng, ps, wall = _engine({**NEW, "allow": ["^client disconnected"]})
    _feed(eng, ps, wall, 0, "x")
    _feed(eng, ps, wall, 30, "client disconnected after 30 s")
    _feed(eng, ps, wall, 31, "client gone")
    _feed(eng, ps, wall, 50, "x")
    fired = [t.annotations["pattern"] for t in eng.take_transitions() if t.state == FIRING]
    assert fired == ["client gone"]


def test_memory_is_bounded_per_service_and_counts_what_it_forgot():
    m = PatternMemory(unseen_us=10**12, max_per_service=3)
    assert all(m.observe("s", f"p{i}", i) for i in range(5))
    assert m.size() == 3 and m.evicted == 2
    assert not m.observe("s", "p4", 10)
    assert m.observe("s", "p0", 11)  # forgotten: new again (the cost of the bound)
    m2 = PatternMemory(unseen_us=10**12, max_per_service=3)
    m2.load(m.snapshot())
    assert sorted(m2.snapshot()) == sorted(m.snapshot())


def test_hostile_messages_are_bounded():
    long_line = "E" + "9" * 5_000_000
    assert len(normalize_message(long_line)) <= 300


@pytest.mark.parametrize(("patch", "needle"), [
    ({"source": "metrics"}, "source: new_pattern reads log messages"),
    ({"warning": 3}, "warning: a new_pattern rule takes severity"),
    ({"allow": ["("]}, r"allow\[0\]: bad regular expression"),
])
def test_new_pattern_rules_are_validated(patch, needle):
    with pytest.raises(RuleError, match=needle):
        rules({**NEW, **patch})
