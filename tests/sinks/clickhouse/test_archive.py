"""Alert history older than N days goes to one Parquet file per day, readable by ClickHouse itself."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tocsin.sinks.clickhouse.archive import archive_days


def test_archive_writes_one_parquet_per_old_day_and_is_idempotent(clickhouse_client, tocsin_config,
                                                                   tmp_path: Path) -> None:
    db = tocsin_config.clickhouse.database
    clickhouse_client.command(f"CREATE TABLE `{db}`.alerts (ts DateTime64(6, 'UTC'), alert_id String, "
                              "state LowCardinality(String)) ENGINE = MergeTree ORDER BY ts")
    today = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    rows = []
    for age_days, n in ((40, 3), (35, 2), (5, 4)):
        day = today - dt.timedelta(days=age_days)
        rows += [[int(day.timestamp() * 1e6) + i, f"a{age_days}-{i}", "firing"] for i in range(n)]
    clickhouse_client.insert(f"`{db}`.alerts", rows, column_names=["ts", "alert_id", "state"])

    first = archive_days(clickhouse_client, db, 30, tmp_path / "archive", root=tmp_path)
    assert [(a.day, a.rows, a.skipped) for a in first] == [
        ((today - dt.timedelta(days=40)).date(), 3, False), ((today - dt.timedelta(days=35)).date(), 2, False)]
    for a in first:
        data = a.path.read_bytes()
        assert data[:4] == data[-4:] == b"PAR1"
        if tocsin_config.clickhouse.url.startswith("chdb://"):  # file() reads the server's disk otherwise
            back = clickhouse_client.query(f"SELECT alert_id FROM file('{a.path}', Parquet) ORDER BY alert_id")
            assert len(back.result_rows) == a.rows
    again = archive_days(clickhouse_client, db, 30, tmp_path / "archive", root=tmp_path)
    assert all(a.skipped for a in again) and len(again) == 2
    assert not list((tmp_path / "archive").glob("*.tmp"))


def test_store_upkeep_jobs_run_beside_the_sink(clickhouse_client, tocsin_config, tmp_path: Path) -> None:
    """The sink's scheduler runs cleanup and the weekly archive (days older than retention - 8)."""
    from tocsin.core.events import now_us
    from tocsin.sinks.clickhouse.schema import migrate
    from tocsin.sinks.clickhouse.sink import maintenance_jobs

    cfg = tocsin_config.model_copy(update={"jobs": tocsin_config.jobs.model_copy(
        update={"archive_dir": str(tmp_path / "weekly")})})
    db = cfg.clickhouse.database
    migrate(clickhouse_client, db)
    ts = now_us() - 25 * 86_400_000_000
    clickhouse_client.insert(f"`{db}`.alerts", [["e1", ts, "a1", "fp", "error_rate", "firing"]],
                             column_names=["event_id", "ts", "alert_id", "fingerprint", "rule", "state"])
    sched = maintenance_jobs(cfg)
    for job in sched.jobs:
        job.next_due = 0
    assert sorted(sched.run_due()) == ["archive", "cleanup"]
    assert all(job.failures == 0 for job in sched.jobs), [job.last_error for job in sched.jobs]
    assert len(list((tmp_path / "weekly").glob("alerts-*.parquet"))) == 1
