"""The ClickHouse schema: idempotent versioned migrations on the real engine, and the cluster rendering."""

from __future__ import annotations

import json
import re

import pytest

from tocsin.core.events import LOG_EVENT, now_us
from tocsin.schemas.codec import HEADER_LEN, default_codec
from tocsin.sinks.clickhouse.ingest import container
from tocsin.sinks.clickhouse.schema import (
    EVENT_TABLES,
    INGEST,
    MIGRATIONS,
    QUARANTINE_TABLE,
    ROLLUP_TABLES,
    ingest_columns,
    migrate,
    render,
)

NOTIFICATIONS_COLUMNS = [
    ("event_id", "String"), ("ts", "DateTime64(6, 'UTC')"), ("alert_event_id", "String"), ("alert_id", "String"),
    ("fingerprint", "String"), ("rule", "LowCardinality(String)"), ("service", "LowCardinality(String)"),
    ("severity", "LowCardinality(String)"), ("state", "LowCardinality(String)"),
    ("receiver", "LowCardinality(String)"), ("receiver_type", "LowCardinality(String)"), ("attempt", "UInt16"),
    ("status", "LowCardinality(String)"), ("http_status", "UInt16"), ("error", "String"), ("duration_ms", "Float64"),
    ("group_key", "String"),
]


@pytest.fixture
def db(clickhouse_client, tocsin_config):
    return tocsin_config.clickhouse.database


def test_migrate_twice_creates_every_table_once_and_each_answers(clickhouse_client, db):
    applied = migrate(clickhouse_client, db)
    assert applied, "the first run must create the schema"
    assert migrate(clickhouse_client, db) == []
    tables = {r[0]: r[1] for r in clickhouse_client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": db}).result_rows}
    for table in EVENT_TABLES:
        assert tables[table] == "ReplacingMergeTree"
    for table in ROLLUP_TABLES:
        assert tables[table] == "AggregatingMergeTree"
        assert tables[f"{table}_mv"] == "MaterializedView"
    for ingest, _, _ in INGEST.values():
        assert tables[ingest] == "Null"
    for table in (*EVENT_TABLES, *ROLLUP_TABLES, QUARANTINE_TABLE):
        assert clickhouse_client.query(f"SELECT count() FROM `{db}`.`{table}`").result_rows == [(0,)]
    versions = clickhouse_client.query(f"SELECT version FROM `{db}`.schema_migrations ORDER BY version").result_rows
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]


def test_changed_retention_becomes_modify_ttl_once(clickhouse_client, db):
    migrate(clickhouse_client, db, retention_days=30)
    applied = migrate(clickhouse_client, db, retention_days=7)
    assert len(applied) == len(EVENT_TABLES) + len(ROLLUP_TABLES) + 1  # and quarantine
    assert all("MODIFY TTL" in s and "toIntervalDay(7)" in s for s in applied)
    assert migrate(clickhouse_client, db, retention_days=7) == []
    engine = clickhouse_client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'logs'",
        parameters={"db": db}).result_rows[0][0]
    assert "toIntervalDay(7)" in engine and "ttl_only_drop_parts = 1" in engine


def test_notifications_table_has_the_columns_the_notifier_inserts(clickhouse_client, db):
    migrate(clickhouse_client, db)
    described = clickhouse_client.query(f"DESCRIBE TABLE `{db}`.notifications").result_rows
    assert [(r[0], r[1]) for r in described] == NOTIFICATIONS_COLUMNS


def test_same_token_twice_is_stored_once_in_table_and_rollup(clickhouse_client, db):
    migrate(clickhouse_client, db)
    base = now_us()
    cols = ["event_id", "ts", "service", "host", "level", "message"]
    rows = [[f"e{i}", base + i, "shop", "h", "ERROR" if i % 2 else "INFO", "boom"] for i in range(100)]
    for _ in range(2):
        clickhouse_client.insert(f"`{db}`.logs", rows, column_names=cols,
                                 settings={"insert_deduplication_token": "t-1"})
    assert clickhouse_client.query(f"SELECT count() FROM `{db}`.logs").result_rows == [(100,)]
    assert clickhouse_client.query(f"SELECT uniqExactMerge(events) FROM `{db}`.log_counts_1m").result_rows == [(100,)]


def test_ingest_tables_follow_the_avro_schemas_and_unnest_batches(clickhouse_client, db):
    migrate(clickhouse_client, db)
    codec = default_codec()
    for record in INGEST:
        fields = [f["name"] for f in codec.registry.latest(record).source["fields"]]
        described = clickhouse_client.query(f"DESCRIBE TABLE `{db}`.`{INGEST[record][0]}`").result_rows
        assert [r[0] for r in described] == fields == [name for name, _ in ingest_columns(record)]
    base = now_us()
    events = [{"event_id": f"b{i}", "ts": base + i, "service": "shop", "host": "h", "level": "INFO",
               "message": "ok", "trace_id": "t" if i % 2 else None, "attrs": {"k": str(i)}} for i in range(10)]
    body = codec.encode_batch(LOG_EVENT, events)[HEADER_LEN:]
    schema = codec.registry.latest("LogBatch").source
    clickhouse_client.raw_insert(f"`{db}`.logs_batch_in", None, container(json.dumps(schema), [body]), fmt="Avro")
    got = clickhouse_client.query(
        f"SELECT event_id, trace_id, attrs['k'], toUnixTimestamp64Micro(ts) FROM `{db}`.logs ORDER BY event_id"
    ).result_rows
    assert got == [(f"b{i}", "t" if i % 2 else "", str(i), base + i) for i in range(10)]


def test_implausible_event_times_go_to_quarantine_with_the_reason(clickhouse_client, db):
    migrate(clickhouse_client, db)
    codec = default_codec()
    now = now_us()
    times = {"ok": now, "ms-not-us": now // 1000, "ns-not-us": now * 1000, "tomorrow+": now + 2 * 86_400_000_000}
    events = [{"event_id": k, "ts": v, "service": "shop", "host": "h", "level": "INFO", "message": "m"}
              for k, v in times.items()]
    body = codec.encode_batch(LOG_EVENT, events)[HEADER_LEN:]
    schema = json.dumps(codec.registry.latest("LogBatch").source)
    clickhouse_client.raw_insert(f"`{db}`.logs_batch_in", None, container(schema, [body]), fmt="Avro")
    assert clickhouse_client.query(f"SELECT event_id FROM `{db}`.logs").result_rows == [("ok",)]
    got = clickhouse_client.query(f"SELECT event_id, target, service, ts_us, reason FROM `{db}`.quarantine "
                                  "ORDER BY event_id").result_rows
    assert got == [
        ("ms-not-us", "logs", "shop", times["ms-not-us"], "event time before 2000"),
        ("ns-not-us", "logs", "shop", times["ns-not-us"], "event time more than a day ahead"),
        ("tomorrow+", "logs", "shop", times["tomorrow+"], "event time more than a day ahead"),
    ]


def test_cluster_rendering_is_replicated_with_distributed_tables():
    stmts = render("hist", retention_days=14, cluster="prod")
    ddl = "\n".join(stmts)
    creates = [s for s in stmts if s.startswith("CREATE TABLE")]
    # INSERTs (the v4 backfill) go through the Distributed tables and have no ON CLUSTER
    assert all(" ON CLUSTER `prod`" in s for s in stmts if not s.startswith("INSERT"))
    for table in EVENT_TABLES:
        local = next(s for s in creates if s.startswith(f"CREATE TABLE IF NOT EXISTS `hist`.`{table}_local`"))
        assert re.search(rf"ENGINE = ReplicatedReplacingMergeTree\('/clickhouse/tables/{{shard}}/hist/{table}_local', "
                         r"'\{replica\}'\)", local)
        assert "TTL toDateTime(ts) + toIntervalDay(14)" in local and "ttl_only_drop_parts = 1" in local
        dist = next(s for s in creates if s.startswith(f"CREATE TABLE IF NOT EXISTS `hist`.`{table}` "))
        assert f"ENGINE = Distributed(`prod`, `hist`, `{table}_local`, cityHash64(event_id))" in dist
    for table in ROLLUP_TABLES:
        assert f"`hist`.`{table}_local`" in ddl and "ReplicatedAggregatingMergeTree" in ddl
        mv = next(s for s in stmts if s.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS `hist`.`{table}_mv`"))
        assert f"TO `hist`.`{table}_local`" in mv and "_local`" in mv.split("FROM")[1]
    for ingest, target, _ in INGEST.values():
        mv = next(s for s in stmts if s.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS `hist`.`{ingest}_mv`"))
        assert f"TO `hist`.`{target}`\n" in mv  # into the Distributed table, which shards by event_id
        assert "WHERE toUnixTimestamp64Micro(" in mv
    assert "non_replicated_deduplication_window" not in ddl


def test_single_server_rendering_has_dedup_window_codecs_and_indexes():
    ddl = "\n".join(render("hist"))
    assert "Replicated" not in ddl and "Distributed" not in ddl
    # the rollups twice: v2 created them, v4 re-created them with exact counts
    assert ddl.count("non_replicated_deduplication_window = 10000") == len(EVENT_TABLES) + 2 * len(ROLLUP_TABLES) + 1
    assert ddl.count("PARTITION BY toDate(ts)") == len(EVENT_TABLES)
    assert "`ts` DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))" in ddl
    assert "INDEX idx_message message TYPE tokenbf_v1" in ddl
    assert "ORDER BY (service, level, ts, event_id)" in ddl
    assert "`attrs` Map(LowCardinality(String), String)" in ddl


def test_db_migrate_print_renders_the_cluster_ddl_without_a_store():
    from typer.testing import CliRunner

    from tocsin.app.cli.app import app

    result = CliRunner().invoke(app, ["db", "migrate", "--cluster", "prod", "--print"])
    assert result.exit_code == 0, result.output
    assert result.output.count(";\n") == len(render("tocsin", 30, "prod"))
    assert "ENGINE = Distributed(`prod`, `tocsin`, `logs_local`, cityHash64(event_id))" in result.output
