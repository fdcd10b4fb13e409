"""The engine end to end without Kafka: event time, lateness, ticks, absence, recovery by replay."""

from __future__ import annotations

import random

import pytest

from tocsin.processors.alerts import FIRING, PENDING, RESOLVED
from tocsin.processors.rules import load_rules

from .helpers import T0, FakeWall, S, engine, health, log, metric, rules, states

LATENCY = {"name": "lat", "source": "metrics", "filter": {"name": "api_response_time"}, "aggregate": "p95",
           "window": "10s", "slices": 5, "warning": 500, "critical": 2000, "for": "2s", "resolve_after": "2s"}
ERRORS = {"name": "errors", "source": "logs", "filter": {"level": ["ERROR", "CRITICAL"]},
          "aggregate": "rate_per_min", "window": "10s", "warning": 6, "critical": 30}
SILENT = {"name": "silent", "kind": "absence", "source": "metrics", "group_by": ["service", "host"],
          "absent_for": "5s"}


def feed_latency(eng, ps, start_s: int, end_s: int, value: float, service: str = "shop", per_s: int = 10):
    for t in range(start_s, end_s):
        for k in range(per_s):
            eng.ingest(ps, "metrics", metric(T0 + t * S + k * (S // per_s), value, service=service))


def test_latency_rule_fires_escalates_and_resolves_with_its_value():
    eng = engine(rules(LATENCY))
    ps = eng.add_partition("metrics", 0, "metrics")
    feed_latency(eng, ps, 0, 10, 100)
    feed_latency(eng, ps, 10, 20, 900)
    feed_latency(eng, ps, 20, 30, 5000)
    feed_latency(eng, ps, 30, 50, 100)
    out = eng.take_transitions()
    assert states(out) == [("inactive", PENDING, "warning"), (PENDING, FIRING, "warning"),
                           (FIRING, FIRING, "critical"), (FIRING, RESOLVED, "none")]
    # Instant 10 holds one slow sample of ~50: p95 turns at 11. Fast from 30: the last 5 s bucket of 5000s
    # ([28, 30)) leaves the 10 s window at 38, and 2 s of hysteresis resolve at 40.
    assert [(t.ts - T0) // S for t in out] == [11, 13, 21, 40]
    assert out[1].value == pytest.approx(900, rel=0.01) and out[1].threshold == 500
    assert out[2].value == pytest.approx(5000, rel=0.01) and out[2].threshold == 2000
    assert {t.alert_id for t in out} == {out[0].alert_id}
    assert out[0].labels == {"alertname": "lat", "service": "shop"}
    assert out[3].ended_at == out[3].ts and out[3].resolved_by == "auto"


def test_late_events_are_counted_and_not_windowed():
    eng = engine(rules(LATENCY), grace_s=2)
    ps = eng.add_partition("metrics", 0, "metrics")
    eng.ingest(ps, "metrics", metric(T0 + 10 * S, 100))
    eng.ingest(ps, "metrics", metric(T0 + 9 * S, 100))  # 1 s late: within grace
    eng.ingest(ps, "metrics", metric(T0 + 7 * S, 100))  # 3 s late: beyond grace
    assert eng.counters.late == 1 and eng.counters.processed == 2
    s = next(iter(ps.tables[0].values()))
    assert s.window.count(T0 + 10 * S) == 2


def test_future_timestamps_are_capped_or_rejected_and_one_bad_clock_harms_no_one():
    wall = FakeWall(T0 + 100 * S)
    eng = engine(rules(LATENCY), wall, grace_s=2)
    ps = eng.add_partition("metrics", 0, "metrics")
    bad = metric(T0 + 10_000 * S, 100, service="broken-clock")
    assert eng.check("metrics", bad) is None
    assert bad["ts"] == wall.t and eng.counters.future_capped == 1
    eng.ingest(ps, "metrics", bad)
    good = metric(T0 + 99 * S, 100)
    assert eng.check("metrics", good) is None
    eng.ingest(ps, "metrics", good)
    assert eng.counters.late == 0, "a capped clock must not make everyone else late"
    reason = eng.check("metrics", metric(T0 + 10_000 * S, 1), future_policy="deadletter")
    assert reason and "future" in reason


@pytest.mark.parametrize(("source", "record", "needle"), [
    ("metrics", metric(T0, float("nan")), "absurd metric value"),
    ("metrics", metric(T0, 1e300), "absurd metric value"),
    ("metrics", metric(0, 1.0), "absurd timestamp"),
    ("metrics", {**metric(T0, 1.0), "service": ""}, "empty service"),
    ("health", health(T0, rt=-5.0), "absurd response_time_ms"),
])
def test_absurd_values_are_rejected_with_a_reason(source, record, needle):
    eng = engine(rules(LATENCY), FakeWall(T0 + 10 * S))
    assert needle in (eng.check(source, record) or "")


def test_error_rate_from_logs_fires_warning_then_critical():
    eng = engine(rules(ERRORS))
    ps = eng.add_partition("logs", 0, "logs")
    for t in range(0, 30):
        per_s = 0 if t < 5 else 2 if t < 15 else 10  # 12/min then 60/min over a 10 s window
        for k in range(per_s):
            eng.ingest(ps, "logs", log(T0 + t * S + k * 1000))
        eng.ingest(ps, "logs", log(T0 + t * S + 500_000, "INFO"))  # INFO lines keep time moving, count nothing
    out = eng.take_transitions()
    assert states(out)[:2] == [("inactive", FIRING, "warning"), (FIRING, FIRING, "critical")]
    assert out[1].value > 30


def test_absence_fires_on_the_processing_time_tick_and_resolves_when_data_returns():
    wall = FakeWall(T0)
    eng = engine(rules(SILENT), wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    for t in range(0, 5):
        eng.ingest(ps, "metrics", metric(T0 + t * S, 1, "cpu_usage", service="quiet"))
    # The service goes silent; no event arrives at all. Only the wall clock moves.
    for t in range(5, 15):
        wall.t = T0 + t * S
        eng.advance_idle(ps, wall.t)
    out = eng.take_transitions()
    assert states(out) == [("inactive", FIRING, "critical")]
    assert out[0].ts == T0 + 9 * S, "last seen at 4 s + 5 s of silence: deterministic, not when the tick ran"
    assert out[0].labels["host"] == "h1" and out[0].value == pytest.approx(5.0)
    eng.ingest(ps, "metrics", metric(T0 + 16 * S, 1, "cpu_usage", service="quiet"))
    eng.ingest(ps, "metrics", metric(T0 + 17 * S + 1, 1, "cpu_usage", service="quiet"))
    assert states(eng.take_transitions()) == [(FIRING, RESOLVED, "none")]


def test_ticks_resolve_a_cleared_condition_without_new_events():
    wall = FakeWall(T0)
    eng = engine(rules({**LATENCY, "resolve_after": "3s"}), wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    feed_latency(eng, ps, 0, 5, 900)  # fires, then the service stops sending
    assert [t.state for t in eng.take_transitions()] == [PENDING, FIRING]
    for t in range(5, 30):
        wall.t = T0 + t * S
        eng.advance_idle(ps, wall.t)
    out = eng.take_transitions()
    assert states(out) == [(FIRING, RESOLVED, "none")]
    # Window 10 s in 2 s buckets: the last slow bucket [4, 6) leaves at 14 s; clear for 3 s: 17 s.
    assert out[0].ts == T0 + 17 * S


def test_health_rule_counts_unhealthy_checks_and_keeps_the_latest_per_check():
    eng = engine(rules({"name": "unhealthy", "source": "health", "filter": {"status": "unhealthy"},
                        "aggregate": "count", "window": "10s", "group_by": ["service", "check"], "warning": 2}))
    ps = eng.add_partition("health", 0, "health")
    for t in range(6):
        eng.ingest(ps, "health", health(T0 + t * S, status="unhealthy" if t >= 2 else "healthy"))
    out = eng.take_transitions()
    assert [(t.state, t.labels["check"]) for t in out] == [(FIRING, "database")]
    assert eng.latest_health[("shop", "database")]["status"] == "unhealthy"


def _incident_stream(seed: int = 3) -> list[tuple[str, dict]]:
    """Five services over 120 s: latency spikes and error bursts at different times, plus a silent host."""
    rng = random.Random(seed)
    events = []
    for t in range(120):
        for i, svc in enumerate(["a", "b", "c", "d", "e"]):
            if svc == "e" and t >= 60:
                continue  # the host of e goes silent
            slow = 20 + 15 * i <= t < 45 + 15 * i
            for k in range(5):
                ts = T0 + t * S + k * 200_000 + i
                events.append(("metrics", metric(ts, rng.uniform(800, 3000) if slow else rng.uniform(20, 200),
                                                 service=svc)))
            events.append(("metrics", metric(T0 + t * S + 7, 30, "cpu_usage", service=svc)))
            if 30 + 10 * i <= t < 40 + 10 * i:
                events.append(("logs", log(T0 + t * S + 3, service=svc)))
    return events


ALL = [LATENCY, {**ERRORS, "resolve_after": "3s", "cooldown": "20s"}, SILENT]


def _run(eng, events):
    parts = {"metrics": eng.partitions.get(("metrics", 0)) or eng.add_partition("metrics", 0, "metrics"),
             "logs": eng.partitions.get(("logs", 0)) or eng.add_partition("logs", 0, "logs")}
    for source, rec in events:
        eng.ingest(parts[source], source, dict(rec))
    return eng.take_transitions()


def test_replay_after_a_crash_emits_each_transition_exactly_once():
    events = _incident_stream()
    ruleset = rules(*ALL)
    clean = _run(engine(ruleset), events)
    assert {t.rule for t in clean} == {"lat", "errors", "silent"}
    assert len(clean) >= 15

    for cut in (len(events) // 4, len(events) // 2, 3 * len(events) // 4):
        first = engine(ruleset)
        emitted = _run(first, events[:cut])  # then kill -9: the engine's memory is gone
        latest = {}
        for t in emitted:  # what the compacted alerts topic keeps
            latest[t.fingerprint] = t.as_record()
        cut_ts = events[cut][1]["ts"]
        replay_from = cut_ts - ruleset.horizon_us - 5 * S
        second = engine(ruleset)
        for source in ("metrics", "logs"):  # sought by time: windows are whole one window after the seek
            second.add_partition(source, 0, source).complete_from = replay_from + second.grace_us
        second.restore(latest.values(), lambda rule, service, eng=second: eng.partitions[(rule.source, 0)])
        again = _run(second, [e for e in events if e[1]["ts"] >= replay_from])
        combined = [t.identity for t in emitted + again]
        assert sorted(combined) == sorted(t.identity for t in clean), f"cut at {cut}"
        ids = [t.event_id for t in emitted + again]
        assert len(set(ids)) == len(ids), "no transition twice"
        assert set(ids) == {t.event_id for t in clean}


def test_a_half_rebuilt_window_gives_no_spurious_resolve():
    ruleset = rules({**ERRORS, "resolve_after": "0s"})
    eng = engine(ruleset)
    ps = eng.add_partition("logs", 0, "logs")
    for t in range(30):
        for k in range(10):
            eng.ingest(ps, "logs", log(T0 + t * S + k * 1000))
    fired = eng.take_transitions()
    assert states(fired) == [("inactive", FIRING, "critical")]
    # Restart: restore "firing critical", replay from 3 s before the end: the window holds 3 s of 10.
    fresh = engine(ruleset)
    ps2 = fresh.add_partition("logs", 0, "logs")
    ps2.awaiting_first_event = True
    fresh.restore([fired[-1].as_record()], lambda rule, service: ps2)
    for t in range(27, 36):
        for k in range(10):
            fresh.ingest(ps2, "logs", log(T0 + t * S + k * 1000))
    assert fresh.take_transitions() == [], "3/10 of a window must not read as a drop in the error rate"


def test_idle_series_are_forgotten_so_memory_follows_live_series():
    eng = engine(rules(LATENCY))
    ps = eng.add_partition("metrics", 0, "metrics")
    for svc in range(100):
        eng.ingest(ps, "metrics", metric(T0 + S + svc, 100, service=f"s{svc}"))
    assert ps.series_count() == 100
    for t in range(2, 30):
        eng.ingest(ps, "metrics", metric(T0 + t * S, 100, service="s0"))
    assert ps.series_count() == 1


def test_the_default_rules_run_on_a_mixed_stream():
    eng = engine(load_rules())
    m = eng.add_partition("metrics", 0, "metrics")
    for t in range(0, 400):
        eng.ingest(m, "metrics", metric(T0 + t * S, 97, "memory_usage", service="db"))
        eng.ingest(m, "metrics", metric(T0 + t * S + 1, 50, "cpu_usage", service="db"))
    out = eng.take_transitions()
    mem = [t for t in out if t.rule == "memory_usage"]
    assert [(t.state, t.severity) for t in mem] == [(PENDING, "critical"), (FIRING, "critical")]
    assert mem[1].ts - mem[0].ts == 60 * S
    assert not [t for t in out if t.rule == "cpu_usage"]


def test_a_restored_pending_that_cleared_is_not_recomputed_by_the_replay():
    ruleset = rules({**LATENCY, "for": "15s"})  # the slow samples leave the 10 s window before 15 s
    eng = engine(ruleset)
    ps = eng.add_partition("metrics", 0, "metrics")
    feed_latency(eng, ps, 0, 10, 100)
    feed_latency(eng, ps, 10, 13, 900)  # pending, then clear before `for`
    feed_latency(eng, ps, 13, 30, 100)
    clean = eng.take_transitions()
    assert [t.state for t in clean] == [PENDING, "inactive"]
    # Restart after both are on the topic: the latest is "inactive"; replay everything from the start.
    again = engine(ruleset)
    ps2 = again.add_partition("metrics", 0, "metrics")
    again.restore([clean[-1].as_record()], lambda rule, service: ps2)
    feed_latency(again, ps2, 0, 10, 100)
    feed_latency(again, ps2, 10, 13, 900)
    feed_latency(again, ps2, 13, 30, 100)
    assert again.take_transitions() == []
