"""``kind: slo``: multiwindow burn-rate alerts and error budgets, with an injected clock (and the store's seed)."""

from __future__ import annotations

import pytest

from tocsin.core.errors import RuleError
from tocsin.processors import slo
from tocsin.processors.alerts import FIRING, RESOLVED

from .helpers import T0, FakeWall, S, engine, metric, rules, states

M = 60 * S
H = 3600 * S
AVAILABILITY = {"name": "checkout_availability", "kind": "slo", "source": "metrics",
                "filter": {"name": "api_response_time"}, "good": {"status~": "^[1-4]"}, "objective": 99.5,
                "annotations": {"summary": "{{ labels.service }} burning {{ value | round(1) }}x"}}
LATENCY = {"name": "checkout_latency", "kind": "slo", "source": "metrics", "filter": {"name": "api_response_time"},
           "good_below": 500, "objective": 95}


def _run(spec: dict, phases: list[tuple[int, float]], every_s: int = 10):
    """Phases of (seconds, bad fraction): one request every ``every_s``, the bad ones spread evenly (status
    503 or 900 ms). Returns (engine, transitions)."""
    wall = FakeWall()
    eng = engine(rules(spec), wall=wall, eval_s=10, grace_s=5)
    ps = eng.add_partition("metrics", 0, "metrics")
    t, debt = T0, 0.0
    for seconds, bad in phases:
        for _ in range(seconds // every_s):
            debt += bad
            is_bad = debt >= 1
            debt -= is_bad
            wall.t = t
            value, status = (900.0, "503") if is_bad else (100.0, "200")
            eng.ingest(ps, "metrics", metric(t, value if spec is LATENCY else 100.0, status=status))
            t += every_s * S
    eng.advance_idle(ps, t + 10 * S)
    return eng, ps, eng.take_transitions()


def _minutes_after(t, start_us: int) -> float:
    return (t.ts - start_us) / M


def test_a_fast_burn_fires_critical_within_the_hour():
    # 2 h fine, then 20 % errors: 40x the 0.5 % budget. The 1 h window passes 14.4x after ~22 min.
    _, _, out = _run(AVAILABILITY, [(2 * 3600, 0.0), (3600, 0.2)])
    assert states(out)[0] == ("inactive", FIRING, "critical"), states(out)
    assert 18 < _minutes_after(out[0], T0 + 2 * H) < 26
    assert out[0].value > 14.4 and out[0].threshold == 14.4
    assert out[0].annotations["budget_covers"].startswith("only what was replayed")
    assert float(out[0].annotations["budget_remaining"].rstrip("%")) < 100
    assert "burning" in out[0].annotations["summary"]


def test_a_slow_burn_fires_warning_and_never_critical():
    # 6 h fine, then 4 % errors (8x): over 6 h the long window passes 6x after ~4.5 h; 8x never reaches 14.4x.
    _, _, out = _run(AVAILABILITY, [(6 * 3600, 0.0), (6 * 3600, 0.04)], every_s=20)
    assert [s for s in states(out)] == [("inactive", FIRING, "warning")], states(out)
    assert 4.2 * 60 < _minutes_after(out[0], T0 + 6 * H) < 4.8 * 60


def test_a_short_blip_does_not_fire():
    # Two minutes of nothing but errors: the 5 min window burns 80x, the 1 h one under 7x: no page.
    _, _, out = _run(AVAILABILITY, [(2 * 3600, 0.0), (120, 1.0), (3600, 0.0)])
    assert out == []


def test_each_pair_lets_go_once_its_short_window_is_clear():
    # 30 min of 50 % errors, then fine. When it stops, the 1 h and 6 h windows still burn above their rates;
    # the 5 min window clears within minutes (critical -> warning), the 30 min one within half an hour.
    _, _, out = _run(AVAILABILITY, [(2 * 3600, 0.0), (1800, 0.5), (3600, 0.0)])
    assert states(out) == [("inactive", FIRING, "warning"), (FIRING, FIRING, "critical"),
                           (FIRING, FIRING, "warning"), (FIRING, RESOLVED, "none")], states(out)
    stopped = T0 + 2 * H + 30 * M
    assert _minutes_after(out[2], stopped) < 6
    assert 25 < _minutes_after(out[3], stopped) < 31


def test_latency_objective_counts_requests_over_the_threshold_as_bad():
    _, _, out = _run(LATENCY, [(3600, 0.0), (3600, 0.9)])  # 90 % slow against a 5 % budget: 18x
    assert ("inactive", FIRING, "warning") in states(out) and (FIRING, FIRING, "critical") in states(out)


def test_budget_arithmetic_over_the_period():
    _, ps, _ = _run(AVAILABILITY, [(10_000, 0.002)], every_s=10)  # 1,000 requests, 2 bad; 5 allowed
    (b,) = slo.budgets([ps])
    assert (b["total"], b["bad"]) == (1000, 2)
    assert b["allowed_bad"] == pytest.approx(5.0)
    assert b["remaining"] == pytest.approx(0.6)  # 3 of the 5 bad requests the objective allows are left
    assert b["covers"] == "replay only (no store)"


def test_seeds_and_stream_meet_at_the_cutoff_without_counting_twice():
    ruleset = rules(AVAILABILITY)
    (rule,) = ruleset.rules
    cutoff = T0 + 10 * H
    rule.slo_seeds = {("shop",): [(T0 - 20 * 24 * H, 10_000, 9_990), (T0, 1_000, 1_000)]}  # 10 bad of 11,000
    rule.slo_cutoff_us = cutoff
    wall = FakeWall(cutoff)
    eng = engine(ruleset, wall=wall)
    ps = eng.add_partition("metrics", 0, "metrics")
    for k in range(100):  # replay from before the cutoff: the first 50 are in the seed already
        wall.t = ts = cutoff - 50 * S + k * S
        eng.ingest(ps, "metrics", metric(ts, 100.0, status="500" if k % 10 == 0 else "200"))
    (b,) = slo.budgets([ps])
    assert (b["total"], b["bad"]) == (11_050, 15)
    assert b["covers"] == "store+stream"
    # 30 days after the oldest seeded hour it has left the period
    eng.ingest(ps, "metrics", metric(T0 + 10 * 24 * H + H, 100.0, status="200"))
    (b,) = slo.budgets([ps])
    assert b["total"] == 1_051


@pytest.mark.parametrize("change, field", [
    ({"objective": None}, "objective"),
    ({"good": {}}, "good"),
    ({"good_below": 500}, "good"),
    ({"aggregate": "count"}, "aggregate"),
    ({"window": "5m"}, "window"),
    ({"burn_rates": [{"long": "1h", "short": "2h", "burn_rate": 14.4, "severity": "critical"}]}, "burn_rates[0].short"),
    ({"burn_rates": [{"long": "3d", "short": "6h", "burn_rate": 1, "severity": "warning"}]}, "burn_rate"),
    ({"burn_rates": [{"long": "1d", "short": "2h", "burn_rate": 3, "severity": "warning"}]}, "burn_rates[0].long"),
])
def test_bad_slo_rules_name_the_field(change, field):
    spec = {**AVAILABILITY, **change}
    with pytest.raises(RuleError) as err:
        rules({k: v for k, v in spec.items() if v is not None})
    assert field in str(err.value), str(err.value)


def test_seed_sql_quotes_hostile_filter_values():
    (rule,) = rules({**AVAILABILITY, "filter": {"name": "api_response_time", "route": "x'); DROP TABLE t; --"}}).rules
    sql = slo.seed_sql("db", rule.spec, T0, T0 + H, H)
    assert "'x\\'); DROP TABLE t; --'" in sql


def test_load_seeds_reads_the_raw_table_per_group_and_bucket(clickhouse_client, tocsin_config):
    from tocsin.sinks.clickhouse.schema import migrate

    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db)
    (rule,) = rules({**AVAILABILITY, "filter": {"name": "api_response_time", "route": "/checkout"}}).rules
    from tocsin.core.events import now_us

    now = now_us() // H * H  # recent: the tables' TTL drops rows older than the retention at insert
    rows = []
    for i in range(200):
        ts = now - 3 * 24 * H + i * M
        rows.append([f"e{i}", ts // S, "shop", "h1", "api_response_time", 10.0, "ms",
                     {"route": "/checkout" if i % 4 else "/other", "status": "503" if i % 20 == 1 else "200"}])
    rows.append(["late", (now - 60 * S) // S, "shop", "h1", "api_response_time", 10.0, "ms",
                 {"route": "/checkout", "status": "503"}])  # after the cutoff: the stream's
    import datetime as dt

    for r in rows:
        r[1] = dt.datetime.fromtimestamp(r[1], dt.UTC)
    clickhouse_client.insert(f"`{db}`.metrics", rows,
                             column_names=["event_id", "ts", "service", "host", "name", "value", "unit", "labels"])
    seeds = slo.load_seeds(lambda sql: clickhouse_client.query(sql).result_rows, db, [rule], now - 10 * M)
    assert list(seeds["checkout_availability"]) == [("shop",)], seeds
    got = seeds["checkout_availability"][("shop",)]
    assert sum(t for _, t, _ in got) == 150  # the /checkout ones in the period, before the cutoff
    assert sum(t - g for _, t, g in got) == 10  # i % 20 == 1 is never a multiple of 4: all /checkout
    assert all(b % (rule.period_us // slo.BUDGET_BUCKETS) == 0 for b, _, _ in got)
