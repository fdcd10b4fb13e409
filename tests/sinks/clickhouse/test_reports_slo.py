"""The report's error budget section: the processor's budget MetricEvents as stored, on the real engine."""

from __future__ import annotations

import datetime as dt

from tocsin.processors.slo import BUDGET_METRIC
from tocsin.sinks.clickhouse.reports import SLO_BUDGET_METRIC, build_report, render_report
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.clickhouse.store_access import QueryLimits, readonly_client, run_query


def test_error_budgets_left_at_the_end_and_start_of_the_period(clickhouse_client, tocsin_config):
    assert SLO_BUDGET_METRIC == BUDGET_METRIC  # the sink names the processor's metric without importing it
    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db)
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=5)
    rows = []
    for i, (slo, left) in enumerate([("checkout_availability", v) for v in (0.9, 0.8, 0.42)]
                                    + [("checkout_latency", v) for v in (1.0, 0.97)]):
        ts = end - dt.timedelta(minutes=50 - i * 10)
        rows.append([f"b{i}", ts, "<shop>", "h1", BUDGET_METRIC, left, "ratio",
                     {"slo": slo, "objective": "99.5" if "avail" in slo else "95", "covers": "store+stream",
                      "service": "<shop>"}])
    rows.append(["old", end - dt.timedelta(hours=3), "<shop>", "h1", BUDGET_METRIC, 0.1, "ratio",
                 {"slo": "checkout_availability", "objective": "99.5", "covers": "store+stream"}])  # before
    clickhouse_client.insert(f"`{db}`.metrics", rows,
                             column_names=["event_id", "ts", "service", "host", "name", "value", "unit", "labels"])
    reader = readonly_client(tocsin_config.clickhouse, QueryLimits(max_result_rows=1_000_000))
    doc = build_report(lambda sql, p=None: run_query(reader, sql, p), db, 1, end=end)
    assert [(b["slo"], b["remaining"], b["remaining_at_start"]) for b in doc["error_budgets"]] == [
        ("checkout_availability", 0.42, 0.9), ("checkout_latency", 0.97, 1.0)]
    text = render_report(doc, "text")
    assert "checkout_availability [<shop>] objective 99.5 %: 42.00 % left" in text
    assert "&lt;shop&gt;" in render_report(doc, "html")
