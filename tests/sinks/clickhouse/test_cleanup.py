"""``cleanup --days N`` on the real engine: exactly the rows older than N days go, whole days by partition."""

from __future__ import annotations

import datetime as dt

import pytest

from tocsin.sinks.clickhouse.cleanup import cleanup
from tocsin.sinks.clickhouse.schema import migrate

NOW = dt.datetime(2026, 3, 15, 10, 30, 0, tzinfo=dt.UTC)  # fixed: ages below are relative to it
HOUR_US = 3_600_000_000


def us(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


@pytest.fixture
def history(clickhouse_client, tocsin_config):
    """Logs every 6 hours from 20 days before NOW to NOW, metrics hourly for 12 days; kept for 10 years."""
    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db, retention_days=3650)  # or TTL would drop the old fixture rows at insert
    start = us(NOW) - 20 * 24 * HOUR_US
    logs = [[f"l{i}", start + i * 6 * HOUR_US + 17, "shop", "h", "INFO", "m"] for i in range(20 * 4 + 1)]
    for days in (7, 3):  # one microsecond either side of each cutoff the tests use
        edge = us(NOW - dt.timedelta(days=days))
        logs += [[f"edge-{days}-{d}", edge + d, "shop", "h", "INFO", "m"] for d in (-1, 0)]
    logs.sort(key=lambda r: r[1])
    clickhouse_client.insert(f"`{db}`.logs", logs, column_names=["event_id", "ts", "service", "host", "level",
                                                                 "message"])
    mstart = us(NOW) - 12 * 24 * HOUR_US
    metrics = [[f"m{i}", mstart + i * HOUR_US, "shop", "h", "cpu_usage", 1.0] for i in range(12 * 24 + 1)]
    clickhouse_client.insert(f"`{db}`.metrics", metrics, column_names=["event_id", "ts", "service", "host", "name",
                                                                       "value"])
    return db, [r[1] for r in logs], [r[1] for r in metrics]


def _ts(client, db: str, table: str) -> list[int]:
    return [r[0] for r in client.query(
        f"SELECT toUnixTimestamp64Micro(ts) FROM `{db}`.`{table}` ORDER BY ts").result_rows]


@pytest.mark.parametrize("days", [7, 3])
def test_cleanup_removes_exactly_the_rows_older_than_n_days(clickhouse_client, history, days):
    db, log_ts, metric_ts = history
    cutoff = us(NOW - dt.timedelta(days=days))
    dry = cleanup(clickhouse_client, db, days, dry_run=True, now=NOW)
    assert _ts(clickhouse_client, db, "logs") == log_ts  # a dry run changes nothing
    result = cleanup(clickhouse_client, db, days, now=NOW)
    assert _ts(clickhouse_client, db, "logs") == [t for t in log_ts if t >= cutoff]
    assert _ts(clickhouse_client, db, "metrics") == [t for t in metric_ts if t >= cutoff]
    removed = {t: sum(a.rows for a in result.actions if a.table == t) for t in ("logs", "metrics")}
    assert removed == {"logs": sum(t < cutoff for t in log_ts), "metrics": sum(t < cutoff for t in metric_ts)}
    assert [(a.table, a.action, a.day, a.rows) for a in dry.actions] == \
        [(a.table, a.action, a.day, a.rows) for a in result.actions]
    boundary = (NOW - dt.timedelta(days=days)).date().isoformat()
    logs = [a for a in result.actions if a.table == "logs"]
    assert all(a.action == "drop_partition" and a.day < boundary for a in logs[:-1])
    assert (logs[-1].action, logs[-1].day) == ("delete_rows", boundary)
    # Rollups lose the minutes before the cutoff too.
    left = clickhouse_client.query(f"SELECT min(minute) >= toDateTime({cutoff // 1_000_000} - 59, 'UTC') "
                                   f"FROM `{db}`.log_counts_1m").result_rows[0][0]
    assert left
    assert cleanup(clickhouse_client, db, days, now=NOW).actions == []  # nothing left to remove


def test_cleanup_of_an_empty_store_and_bad_arguments(clickhouse_client, tocsin_config):
    from tocsin.core.errors import StoreError

    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db)
    assert cleanup(clickhouse_client, db, 30).to_dict()["rows_removed"] == 0
    with pytest.raises(StoreError):
        cleanup(clickhouse_client, db, -1)
