"""A duplicate counts once everywhere: lines re-shipped with the same event ids (the shipper's state lost),
metrics and health checks sent twice, through the real sink into the real engine; and rollup minutes a
killed insert left short are re-aggregated when the sink starts.

Before the merge that collapses them, the base tables hold both copies (asserted, so the test can fail):
``logs`` read with FINAL, the rollups (uniqExact states), ``tocsin report`` (the store's report, what the
CLI calls) and the daily summary built on it count each event once.
"""

from __future__ import annotations

import datetime as dt
import json

from kafka import TopicPartition

from tests.kafkautil import produce, wait_for
from tests.producers.shiputil import FAST_SHIP
from tests.sinks.clickhouse import test_sink
from tests.sinks.clickhouse.test_sink import _committed, running
from tocsin.core.clickhouse import connect
from tocsin.core.events import HEALTH_EVENT, METRIC_EVENT, now_us
from tocsin.producers.config import LogInputConfig, LogShipConfig
from tocsin.producers.logship import LogShipper
from tocsin.sinks.clickhouse.schema import migrate, repair_rollups
from tocsin.sinks.clickhouse.sink import ClickHouseSink
from tocsin.sinks.clickhouse.store_access import open_store
from tocsin.sinks.notify.summary import render_summary

sink_config = test_sink.sink_config  # the fixture
N_LINES, N_ERRORS, N_REQUESTS, N_CHECKS = 400, 40, 50, 6


def _lines(ts: dt.datetime) -> str:
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "".join(json.dumps({"timestamp": stamp, "level": "error" if i % 10 == 0 else "info", "logger": "t",
                               "message": f"payment failed for order {i}" if i % 10 == 0 else f"line {i}"}) + "\n"
                   for i in range(N_LINES))


def _ship_without_state(cfg, path) -> None:
    """One shipper run to EOF with no state file: a second run re-ships every line with the same ids."""
    shipper = LogShipper(cfg, inputs=[LogInputConfig(paths=[str(path)], service="shop")], state_file=False,
                         exit_at_eof=True, settings=LogShipConfig(**FAST_SHIP))
    with shipper:
        shipper.run()
    assert shipper.finished and shipper.stats.acked == N_LINES


def test_reshipped_lines_and_resent_events_count_once_in_logs_rollups_report_and_summary(sink_config, tmp_path):
    cfg = sink_config
    db = f"`{cfg.clickhouse.database}`"
    # Ten minutes ago, so the report's period (whole minutes, ending now) holds it.
    when = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=10)
    log_file = tmp_path / "app.log"
    log_file.write_text(_lines(when))
    base_us = int(when.timestamp() * 1e6)
    metrics = [{"event_id": f"req-{i}", "ts": base_us + i * 1000, "service": "shop", "host": "web-1",
                "name": "api_response_time", "value": float(100 + i), "unit": "ms", "labels": {}}
               for i in range(N_REQUESTS)]
    checks = [{"event_id": f"hc-{i}", "ts": base_us + i * 1000, "service": "db", "host": "web-1",
               "check": "database", "status": "unhealthy", "response_time_ms": None, "details": {},
               "error": "connection refused"} for i in range(N_CHECKS)]
    client = connect(cfg.clickhouse)
    with running(ClickHouseSink(cfg)):
        for _ in range(2):
            _ship_without_state(cfg, log_file)
            produce(cfg.kafka, cfg.kafka.topics.metrics, METRIC_EVENT, metrics, key_field="service")
            produce(cfg.kafka, cfg.kafka.topics.health, HEALTH_EVENT, checks, key_field="service")

        # Every copy consumed and committed (the base tables may have merged the copies away already).
        topics = {cfg.kafka.topics.logs: 2 * N_LINES, cfg.kafka.topics.metrics: 2 * N_REQUESTS,
                  cfg.kafka.topics.health: 2 * N_CHECKS}
        tps = [TopicPartition(t, p) for t in topics for p in range(cfg.kafka.topics.partitions)]

        def consumed() -> bool:
            got = _committed(cfg, tps)
            return all(sum(got.get(TopicPartition(t, p), 0) for p in range(cfg.kafka.topics.partitions)) >= n
                       for t, n in topics.items())

        wait_for(consumed, 90, "every copy stored and committed", every_s=0.5)

    counts = client.query(
        f"SELECT (SELECT count() FROM {db}.logs FINAL), (SELECT uniqExactMerge(events) FROM {db}.log_counts_1m),"
        f" (SELECT uniqExactMergeIf(events, level = 'ERROR') FROM {db}.log_counts_1m),"
        f" (SELECT uniqExactMerge(samples) FROM {db}.metrics_1m WHERE service = 'shop'),"
        f" (SELECT count() FROM {db}.health_checks FINAL)").result_rows[0]
    assert counts == (N_LINES, N_LINES, N_ERRORS, N_REQUESTS, N_CHECKS)

    store = open_store(cfg)
    try:
        doc = store.report(1.0)
    finally:
        store.close()
    shop = next(s for s in doc["services"] if s["service"] == "shop")
    assert (shop["log_events"], shop["errors"], shop["requests"]) == (N_LINES, N_ERRORS, N_REQUESTS)
    assert shop["error_rate"] == N_ERRORS / N_REQUESTS
    assert sum(e["count"] for e in doc["top_errors"]) == N_ERRORS
    assert doc["health"]["failures"] == N_CHECKS
    summary = render_summary(doc)
    assert f"{N_REQUESTS:,} requests" in summary.subject and f"{N_ERRORS:,} errors" in summary.subject


def test_rollup_minutes_left_short_are_reaggregated_once(clickhouse_client, tocsin_config):
    """The view's part lost (what a SIGKILL between the two parts leaves) is rebuilt; a second repair and
    the minutes that were complete change nothing."""
    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db)
    base = now_us() - 30 * 60 * 1_000_000
    base -= base % 60_000_000
    rows = [[f"l{m}-{i}", base + m * 60_000_000 + i, "shop", "h", "INFO", "m"] for m in range(3) for i in range(20)]
    cols = ["event_id", "ts", "service", "host", "level", "message"]
    clickhouse_client.insert(f"`{db}`.logs", rows, column_names=cols)
    clickhouse_client.insert(f"`{db}`.logs", rows[:20], column_names=cols)  # minute 0 stored twice
    metrics = [[f"m{i}", base + 60_000_000 + i, "shop", "h", "api_response_time", float(i)] for i in range(10)]
    clickhouse_client.insert(f"`{db}`.metrics", metrics, column_names=["event_id", "ts", "service", "host", "name",
                                                                       "value"])
    minute1 = f"toDateTime({(base + 60_000_000) // 1_000_000}, 'UTC')"
    for table in ("log_counts_1m", "metrics_1m"):
        clickhouse_client.command(f"ALTER TABLE `{db}`.{table} DELETE WHERE minute = {minute1}",
                                  settings={"mutations_sync": 2})

    def counts() -> tuple:
        return tuple(clickhouse_client.query(
            f"SELECT (SELECT groupArray(n) FROM (SELECT minute, uniqExactMerge(events) AS n "
            f"FROM `{db}`.log_counts_1m GROUP BY minute ORDER BY minute)),"
            f" (SELECT uniqExactMerge(samples) FROM `{db}`.metrics_1m), (SELECT max(value_max) FROM `{db}`.metrics_1m)"
        ).result_rows[0])

    assert counts() == ([20, 20], 0, 0.0)
    assert repair_rollups(clickhouse_client, db, base) == {"metrics_1m": 1, "log_counts_1m": 1}
    assert counts() == ([20, 20, 20], 10, 9.0)
    assert repair_rollups(clickhouse_client, db, base) == {"metrics_1m": 0, "log_counts_1m": 0}
    assert counts() == ([20, 20, 20], 10, 9.0)
