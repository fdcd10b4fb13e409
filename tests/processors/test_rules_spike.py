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


# --- baselines from the store at start ------------------------------------------------------------------------

DAY = 24 * 3600 * S
DAILY = {**ERRORS, "window": "10m", "slices": 10, "baseline": {"offset": "1d"}}


def _seeded_run(seeds: dict | None, now_count: int, replayed_before_cutoff: int = 0):
    """A rule comparing 10 minutes with the same 10 minutes a day earlier, a day longer than the replay: the
    day-old period only from the store's seeds. Feeds ``now_count`` errors into the current window (and
    ``replayed_before_cutoff`` errors just before the cutoff, as a replay that starts early would)."""
    ruleset = rules(DAILY)
    (rule,) = ruleset.rules
    cutoff = T0 - 20 * 60 * S
    if seeds is not None:
        rule.spike_seeds, rule.spike_known_from, rule.spike_cutoff_us = seeds, T0 - 2 * DAY, cutoff
    wall = FakeWall(cutoff)
    eng = engine(ruleset, wall=wall, grace_s=1)
    ps = eng.add_partition("logs", 0, "logs")
    ps.complete_from = cutoff - 60 * S  # the replay began a minute before the cutoff
    for k in range(replayed_before_cutoff):
        wall.t = ts = cutoff - 30 * S + k
        eng.ingest(ps, "logs", log(ts))
    for k in range(now_count):
        wall.t = ts = T0 + k * (10 * 60 * S // now_count)
        eng.ingest(ps, "logs", log(ts))
    eng.advance_idle(ps, T0 + 10 * 60 * S)
    return rule, ps, eng.take_transitions()


def _period(t: int) -> int:
    return t // (10 * 60 * S)


def test_a_baseline_a_day_back_comes_from_the_store_seed():
    day_ago = {("shop",): [(_period(T0 - DAY) + i, 4, 4.0, 1.0, 1.0, 0) for i in range(-1, 2)]}
    _, _, out = _seeded_run(day_ago, 40)
    assert states(out)[:1] == [("inactive", FIRING, "warning")]
    assert out[0].threshold == 20  # 5 x the day-old period's 4
    _, _, quiet = _seeded_run(day_ago, 12)  # 12 against 4: under five times
    assert quiet == []


def test_without_a_seed_a_day_offset_has_no_verdict_while_learning():
    _, _, out = _seeded_run(None, 40)
    assert out == []  # the processor watched no day-old period: learning, not zero


def test_seeded_periods_and_the_replay_meet_at_the_cutoff_without_counting_twice():
    cutoff = T0 - 20 * 60 * S
    # The replay's 25 errors before the cutoff are the seed's already: the period holds the seed's 7 only.
    last = _period(cutoff - 30 * S)  # the period the replayed errors fall in, the seed's last
    rule, ps, _ = _seeded_run({("shop",): [(last, 7, 7.0, 1.0, 1.0, 0)]}, 1, replayed_before_cutoff=25)
    (series,) = ps.tables[rule.index].values()
    h = series.history
    assert h.idx[last % h.n] == last and h.cnt[last % h.n] == 7


def test_a_seeded_rule_replays_only_its_window_and_an_unseeded_one_its_whole_baseline():
    (rule,) = rules(DAILY).rules
    long_horizon = rule.horizon_us
    rule.spike_seeds = {}
    assert rule.horizon_us < long_horizon / 50  # 10 minutes and a slice, not a day and 20 minutes


def test_spike_seed_sql_counts_and_quotes_hostile_filter_values():
    from tocsin.processors import baseline

    (rule,) = rules({**DAILY, "filter": {"level": "ERROR", "logger": "x'); DROP TABLE t; --"}}).rules
    sql = baseline.seed_sql("db", rule, T0 - DAY, T0)
    assert "'x\\'); DROP TABLE t; --'" in sql and "intDiv(toUnixTimestamp64Micro(ts), 600000000)" in sql


def test_load_seeds_reads_the_logs_table_per_group_and_period(clickhouse_client, tocsin_config):
    import datetime as dt

    from tocsin.core.events import now_us
    from tocsin.processors import baseline
    from tocsin.sinks.clickhouse.schema import migrate

    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db)
    (rule,) = rules({**DAILY, "baseline": {"offset": "1h"}}).rules
    period = 10 * 60 * S
    now = now_us() // period * period
    cutoff = now - 20 * 60 * S
    rows = []
    for i in range(120):  # two hours of ERROR lines, one a minute, and INFO lines the filter leaves out
        ts = now - 2 * 3600 * S + i * 60 * S
        for level in ("ERROR", "INFO"):
            rows.append([f"e{i}{level}", dt.datetime.fromtimestamp(ts / S, dt.UTC), "shop", "h1", level,
                         "shop.pay", "payment failed", "", {}])
    clickhouse_client.insert(f"`{db}`.logs", rows, column_names=["event_id", "ts", "service", "host", "level",
                                                                 "logger", "message", "trace_id", "attrs"])
    seeds = baseline.load_seeds(lambda sql: clickhouse_client.query(sql).result_rows, db, [rule], cutoff)
    known_from, groups = seeds["err_spike"]
    assert list(groups) == [("shop",)]
    got = {q: n for q, n, *_ in groups[("shop",)]}
    assert all(n == 10 for n in got.values()), got  # ten ERROR lines a 10-minute period, no INFO
    assert min(got) * period >= known_from and (max(got) + 1) * period <= cutoff
    assert known_from >= cutoff - (rule.periods + 1) * period  # no more than the ring holds
