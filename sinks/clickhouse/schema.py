"""The ClickHouse schema of Tocsin's history, as versioned, idempotent migrations.

Tables (one row per event; ``alerts`` one row per transition, ``notifications``
one row per delivery attempt), all ``ReplacingMergeTree`` keyed so a row's
``event_id`` is the last sorting column: the sink stores every Kafka record
once (per-partition insert_deduplication_token, see ``sinks/clickhouse/sink.py``)
and a record an agent re-shipped with the same event_id collapses at merge.

* ``PARTITION BY toDate(ts)``: cleanup and TTL drop whole days.
* ``ORDER BY (service, ...)``: every report filters or groups by service first.
* ``TTL toDateTime(ts) + retention`` with ``ttl_only_drop_parts`` (parts never
  straddle a day, so expiry drops parts instead of rewriting them).
* ``non_replicated_deduplication_window`` so a retried insert with the same
  token is stored once (replicated tables keep their own window).
* Rollups by materialized view: ``metrics_1m`` (samples, sum, min, max and a
  DDSketch quantile state per service, name, host and minute) and
  ``log_counts_1m`` (events per service, level and minute). Since v4 the counts
  are ``uniqExact(event_id)`` states: a duplicate counts once before any merge,
  and ``repair_rollups`` re-aggregates minutes a killed insert left short.
* Ingest: one ``Null`` table per Avro record the sink stores (``logs_in``,
  ``logs_batch_in`` ...), columns named and typed after the Avro schema, and a
  view from each into its table. The sink hands ClickHouse the Avro bodies
  (``FORMAT Avro``) and ClickHouse decodes, unnests batches and fills the
  tables, so Python never touches a row. Rows whose event time is implausible
  (before 2000, or more than a day ahead) go to ``quarantine`` with the reason.

``render(...)`` gives the DDL (``--cluster NAME`` turns each table into a
``ReplicatedReplacingMergeTree`` ``<name>_local`` plus a ``Distributed`` table of
the plain name); ``migrate(...)`` applies what ``schema_migrations`` lacks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tocsin.schemas.codec import default_codec

# ClickHouse keeps this many recent block hashes per non-replicated table; a
# retried batch must land within it. The sink inserts one block per topic
# partition and flush, so 10,000 covers hours of inserts (ClickHouse's own
# replicated default is 10,000 too).
DEDUP_WINDOW_BLOCKS = 10_000
# Relative accuracy of the DDSketch quantile states in metrics_1m (1 %); reports
# built on them state this error.
QUANTILE_ACCURACY = 0.01
QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99)
QUANTILES_FN = f"quantilesDD({QUANTILE_ACCURACY}, {', '.join(map(str, QUANTILE_LEVELS))})"

MIGRATIONS_TABLE = "schema_migrations"
BATCH_RECORDS = frozenset({"LogBatch", "MetricBatch"})
QUARANTINE_TABLE = "quarantine"
# Event times outside [2000-01-01, now + 1 day] are agent bugs (a clock years off,
# milliseconds or nanoseconds sent as microseconds): TTL would drop them on
# arrival or keep them forever, and clients cannot read dates past year 9999.
# The ingest views send such rows to ``quarantine`` with the reason instead.
MIN_EVENT_TS_US = 946_684_800_000_000
MAX_FUTURE_US = 86_400_000_000
EVENT_TABLES = ("logs", "metrics", "health_checks", "alerts", "notifications")
ROLLUP_TABLES = ("metrics_1m", "log_counts_1m")
# Avro record name -> (ingest Null table, table it feeds, SELECT from the ingest table).
INGEST: dict[str, tuple[str, str, str]] = {
    "LogEvent": (
        "logs_in", "logs",
        "SELECT event_id, ts, service, host, level, logger, message, ifNull(trace_id, '') AS trace_id, attrs",
    ),
    "LogBatch": (
        "logs_batch_in", "logs",
        "SELECT e.event_id AS event_id, e.ts AS ts, e.service AS service, e.host AS host, e.level AS level, "
        "e.logger AS logger, e.message AS message, ifNull(e.trace_id, '') AS trace_id, e.attrs AS attrs",
    ),
    "MetricEvent": ("metrics_in", "metrics", "SELECT event_id, ts, service, host, name, value, unit, labels"),
    "MetricBatch": (
        "metrics_batch_in", "metrics",
        "SELECT e.event_id AS event_id, e.ts AS ts, e.service AS service, e.host AS host, e.name AS name, "
        "e.value AS value, e.unit AS unit, e.labels AS labels",
    ),
    "HealthEvent": (
        "health_in", "health_checks",
        "SELECT event_id, ts, service, host, check, status, response_time_ms, details, ifNull(error, '') AS error",
    ),
    "AlertEvent": (
        "alerts_in", "alerts",
        "SELECT event_id, ts, alert_id, fingerprint, rule, labels['service'] AS service, severity, "
        "previous_severity, state, previous_state, value, threshold, labels, annotations, started_at, ended_at, "
        "ifNull(resolved_by, '') AS resolved_by",
    ),
}

_TS = "DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))"
_LC = "LowCardinality(String)"
_MAP = "Map(LowCardinality(String), String) CODEC(ZSTD(1))"
_STR = "String CODEC(ZSTD(1))"

_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "logs": [
        ("event_id", _STR), ("ts", _TS), ("service", _LC), ("host", _LC), ("level", _LC), ("logger", _LC),
        ("message", "String CODEC(ZSTD(3))"), ("trace_id", _STR), ("attrs", _MAP),
    ],
    "metrics": [
        ("event_id", _STR), ("ts", _TS), ("service", _LC), ("host", _LC), ("name", _LC),
        ("value", "Float64 CODEC(Gorilla, ZSTD(1))"), ("unit", _LC), ("labels", _MAP),
    ],
    "health_checks": [
        ("event_id", _STR), ("ts", _TS), ("service", _LC), ("host", _LC), ("check", _LC), ("status", _LC),
        ("response_time_ms", "Nullable(Float64) CODEC(ZSTD(1))"), ("details", _MAP), ("error", _STR),
    ],
    "alerts": [
        ("event_id", _STR), ("ts", _TS), ("alert_id", _STR), ("fingerprint", _STR), ("rule", _LC),
        ("service", _LC), ("severity", _LC), ("previous_severity", _LC), ("state", _LC), ("previous_state", _LC),
        ("value", "Nullable(Float64)"), ("threshold", "Nullable(Float64)"), ("labels", _MAP), ("annotations", _MAP),
        ("started_at", _TS), ("ended_at", "Nullable(DateTime64(6, 'UTC'))"), ("resolved_by", _LC),
    ],
    # Written by sinks/notify/sink: one row per delivery attempt. status is one of
    # sent|failed|retrying|silenced|inhibited|muted|already_sent|dropped|unrouted (a LowCardinality string:
    # new statuses need no migration); http_status 0 when there was none.
    "notifications": [
        ("event_id", _STR), ("ts", _TS), ("alert_event_id", _STR), ("alert_id", _STR), ("fingerprint", _STR),
        ("rule", _LC), ("service", _LC), ("severity", _LC), ("state", _LC), ("receiver", _LC),
        ("receiver_type", _LC), ("attempt", "UInt16"), ("status", _LC), ("http_status", "UInt16"),
        ("error", _STR), ("duration_ms", "Float64 CODEC(ZSTD(1))"), ("group_key", _STR),
    ],
}

# Data-skipping indexes, each with the query it serves.
_INDEXES: dict[str, list[str]] = {
    "logs": [
        # `tocsin query "... WHERE hasToken(message, 'timeout')"` and the report's
        # drill-down into one error message: skips granules without the token.
        "INDEX idx_message message TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1",
        # "all lines of trace X" (trace_id = '...'): ids are random, so sorting cannot help.
        "INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 1",
    ],
    "alerts": [
        # `tocsin alerts` history of one incident (alert_id = '...') across services.
        "INDEX idx_alert_id alert_id TYPE bloom_filter(0.01) GRANULARITY 1",
    ],
    "notifications": [
        # The notifier's restart check "was transition T already sent to receiver R?"
        # (alert_event_id = '...'), which must not scan the whole log.
        "INDEX idx_alert_event_id alert_event_id TYPE bloom_filter(0.01) GRANULARITY 1",
    ],
}

_ORDER_BY: dict[str, str] = {
    # level second: the report's error queries read only ERROR/CRITICAL ranges.
    "logs": "(service, level, ts, event_id)",
    "metrics": "(service, name, host, ts, event_id)",
    "health_checks": "(service, check, ts, event_id)",
    "alerts": "(service, rule, ts, event_id)",
    "notifications": "(service, receiver, ts, event_id)",
}

_ROLLUP_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "metrics_1m": [
        ("minute", "DateTime('UTC') CODEC(Delta, ZSTD(1))"), ("service", _LC), ("name", _LC), ("host", _LC),
        ("samples", "SimpleAggregateFunction(sum, UInt64)"),
        ("value_sum", "SimpleAggregateFunction(sum, Float64)"),
        ("value_min", "SimpleAggregateFunction(min, Float64)"),
        ("value_max", "SimpleAggregateFunction(max, Float64)"),
        ("value_quantiles", f"AggregateFunction({QUANTILES_FN}, Float64)"),
    ],
    "log_counts_1m": [
        ("minute", "DateTime('UTC') CODEC(Delta, ZSTD(1))"), ("service", _LC), ("level", _LC),
        ("events", "SimpleAggregateFunction(sum, UInt64)"),
    ],
}
_ROLLUP_ORDER_BY = {"metrics_1m": "(service, name, host, minute)", "log_counts_1m": "(service, level, minute)"}
_ROLLUP_SELECT = {
    "metrics_1m": (
        "metrics",
        "SELECT toStartOfMinute(ts) AS minute, service, name, host, count() AS samples, sum(value) AS value_sum, "
        f"min(value) AS value_min, max(value) AS value_max, {QUANTILES_FN.replace('(', 'State(', 1)}(value) "
        "AS value_quantiles FROM {src} GROUP BY minute, service, name, host",
    ),
    "log_counts_1m": (
        "logs",
        "SELECT toStartOfMinute(ts) AS minute, service, level, count() AS events FROM {src} "
        "GROUP BY minute, service, level",
    ),
}


@dataclass(frozen=True)
class SchemaContext:
    """What the DDL depends on: database, retention and an optional cluster."""

    database: str
    retention_days: int = 30
    cluster: str | None = None

    def q(self, table: str) -> str:
        """Fully qualified name of the table queries and inserts use."""
        return f"`{self.database}`.`{table}`"

    def storage(self, table: str) -> str:
        """Name of the table that holds the data (``<name>_local`` on a cluster)."""
        return f"{table}_local" if self.cluster else table

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""


def ttl_clause(column_expr: str, days: int) -> str:
    return f"TTL {column_expr} + toIntervalDay({days})"


def _engine(ctx: SchemaContext, family: str, storage_name: str) -> str:
    if not ctx.cluster:
        return family
    # {shard}/{replica} are per-server macros: one ZooKeeper path per shard and table.
    return f"Replicated{family}('/clickhouse/tables/{{shard}}/{ctx.database}/{storage_name}', '{{replica}}')"


def _settings(ctx: SchemaContext) -> str:
    items = ["ttl_only_drop_parts = 1"]
    if not ctx.cluster:
        items.insert(0, f"non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}")
    return "SETTINGS " + ", ".join(items)


def _create(ctx: SchemaContext, table: str, columns: list[tuple[str, str]], indexes: list[str], family: str,
            partition_by: str, order_by: str, ttl_expr: str, shard_key: str) -> list[str]:
    storage = ctx.storage(table)
    body = ",\n    ".join([f"`{name}` {typ}" for name, typ in columns] + indexes)
    stmts = [
        f"CREATE TABLE IF NOT EXISTS {ctx.q(storage)}{ctx.on_cluster}\n(\n    {body}\n)\n"
        f"ENGINE = {_engine(ctx, family, storage)}\nPARTITION BY {partition_by}\nORDER BY {order_by}\n"
        f"{ttl_clause(ttl_expr, ctx.retention_days)}\n{_settings(ctx)}"
    ]
    if ctx.cluster:
        stmts.append(
            f"CREATE TABLE IF NOT EXISTS {ctx.q(table)}{ctx.on_cluster} AS {ctx.q(storage)}\n"
            f"ENGINE = Distributed(`{ctx.cluster}`, `{ctx.database}`, `{storage}`, {shard_key})"
        )
    return stmts


def _v1_event_tables(ctx: SchemaContext) -> list[str]:
    stmts: list[str] = []
    for table in EVENT_TABLES:
        # Sharding by event_id keeps every copy of one event on one shard, where
        # ReplacingMergeTree can collapse it.
        stmts += _create(ctx, table, _COLUMNS[table], _INDEXES.get(table, []), "ReplacingMergeTree",
                         "toDate(ts)", _ORDER_BY[table], "toDateTime(ts)", "cityHash64(event_id)")
    return stmts


def _v2_rollups(ctx: SchemaContext) -> list[str]:
    stmts: list[str] = []
    for table in ROLLUP_TABLES:
        src_table, select = _ROLLUP_SELECT[table]
        stmts += _create(ctx, table, _ROLLUP_COLUMNS[table], [], "AggregatingMergeTree", "toDate(minute)",
                         _ROLLUP_ORDER_BY[table], "minute", "rand()")
        # On a cluster each server's view reads its local inserts into its local rollup.
        stmts.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ctx.q(table + '_mv')}{ctx.on_cluster} "
            f"TO {ctx.q(ctx.storage(table))}\nAS {select.format(src=ctx.q(ctx.storage(src_table)))}"
        )
    return stmts


_AVRO_PRIMITIVES = {
    "string": "String", "double": "Float64", "float": "Float32", "long": "Int64", "int": "Int32",
    "boolean": "Bool", "bytes": "String",
}


def avro_to_clickhouse(avro_type: Any) -> str:
    """The ClickHouse type ``FORMAT Avro`` reads an Avro type into (timestamps as DateTime64)."""
    if isinstance(avro_type, str):
        return _AVRO_PRIMITIVES[avro_type]
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        if len(rest) != 1:
            raise ValueError(f"unsupported union {avro_type!r}")
        inner = avro_to_clickhouse(rest[0])
        return f"Nullable({inner})" if len(rest) < len(avro_type) else inner
    kind = avro_type["type"]
    if avro_type.get("logicalType") == "timestamp-micros":
        return "DateTime64(6, 'UTC')"
    if kind == "map":
        return f"Map(String, {avro_to_clickhouse(avro_type['values'])})"
    if kind == "array":
        return f"Array({avro_to_clickhouse(avro_type['items'])})"
    if kind == "record":
        return "Tuple(" + ", ".join(f"{f['name']} {avro_to_clickhouse(f['type'])}" for f in avro_type["fields"]) + ")"
    return avro_to_clickhouse(kind)


def ingest_columns(record_name: str) -> list[tuple[str, str]]:
    """Columns of an ingest table: the newest Avro schema's fields, in order, as ClickHouse types."""
    source = default_codec().registry.latest(record_name).source
    return [(f["name"], avro_to_clickhouse(f["type"])) for f in source["fields"]]


_QUARANTINE_COLUMNS = [
    ("received_at", "DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))"), ("target", _LC),
    ("event_id", _STR), ("service", _LC), ("ts_us", "Int64"), ("reason", _LC),
]


def _v3_ingest(ctx: SchemaContext) -> list[str]:
    stmts = _create(ctx, QUARANTINE_TABLE, _QUARANTINE_COLUMNS, [], "MergeTree", "toDate(received_at)",
                    "(target, received_at)", "toDateTime(received_at)", "rand()")
    for record, (ingest, target, select) in INGEST.items():
        body = ",\n    ".join(f"`{name}` {typ}" for name, typ in ingest_columns(record))
        stmts.append(f"CREATE TABLE IF NOT EXISTS {ctx.q(ingest)}{ctx.on_cluster}\n(\n    {body}\n)\nENGINE = Null")
        batch = record in BATCH_RECORDS
        source = ctx.q(ingest) + (" ARRAY JOIN events AS e" if batch else "")
        ev = "e." if batch else ""
        ts_us = f"toUnixTimestamp64Micro({ev}ts)"
        plausible = f"{ts_us} BETWEEN {MIN_EVENT_TS_US} AND toUnixTimestamp64Micro(now64(6)) + {MAX_FUTURE_US}"
        service = "labels['service']" if record == "AlertEvent" else f"{ev}service"
        # On a cluster the view writes into the Distributed table, which shards by event_id.
        stmts.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ctx.q(ingest + '_mv')}{ctx.on_cluster} "
            f"TO {ctx.q(target)}\nAS {select} FROM {source} WHERE {plausible}"
        )
        stmts.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ctx.q(ingest + '_quarantine_mv')}{ctx.on_cluster} "
            f"TO {ctx.q(QUARANTINE_TABLE)}\nAS SELECT '{target}' AS target, {ev}event_id AS event_id, "
            f"{service} AS service, {ts_us} AS ts_us, if({ts_us} < {MIN_EVENT_TS_US}, "
            f"'event time before 2000', 'event time more than a day ahead') AS reason FROM {source} "
            f"WHERE NOT ({plausible})"
        )
    return stmts


# v4: rollup counts are sets of event ids (uniqExact states), so an event stored twice (a line re-shipped
# after a crash: same event_id, another Kafka record) counts once in its minute, and re-aggregating a minute
# from the base table (the repair below) adds nothing that was there. min and max are idempotent too; the
# sum and the quantile sketch are not: a duplicate weighs twice there until the base table has merged it.
_ROLLUP_V4_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "metrics_1m": [
        ("minute", "DateTime('UTC') CODEC(Delta, ZSTD(1))"), ("service", _LC), ("name", _LC), ("host", _LC),
        ("samples", "AggregateFunction(uniqExact, String)"),
        ("value_sum", "SimpleAggregateFunction(sum, Float64)"),
        ("value_min", "SimpleAggregateFunction(min, Float64)"),
        ("value_max", "SimpleAggregateFunction(max, Float64)"),
        ("value_quantiles", f"AggregateFunction({QUANTILES_FN}, Float64)"),
    ],
    "log_counts_1m": [
        ("minute", "DateTime('UTC') CODEC(Delta, ZSTD(1))"), ("service", _LC), ("level", _LC),
        ("events", "AggregateFunction(uniqExact, String)"),
    ],
}
_QUANTILES_STATE = QUANTILES_FN.replace("(", "State(", 1)
_ROLLUP_V4_SELECT = {
    "metrics_1m": (
        "metrics",
        "SELECT toStartOfMinute(ts) AS minute, service, name, host, uniqExactState(event_id) AS samples, "
        f"sum(value) AS value_sum, min(value) AS value_min, max(value) AS value_max, {_QUANTILES_STATE}(value) "
        "AS value_quantiles FROM {src}{where} GROUP BY minute, service, name, host",
    ),
    "log_counts_1m": (
        "logs",
        "SELECT toStartOfMinute(ts) AS minute, service, level, uniqExactState(event_id) AS events FROM {src}{where} "
        "GROUP BY minute, service, level",
    ),
}
# What a repair adds to a minute the rollup under-counts: ids, min and max (all idempotent), no sum and no
# sketch (re-adding those would count the minute's other samples twice).
_ROLLUP_REPAIR_SELECT = {
    "metrics_1m": (
        "metrics",
        "SELECT toStartOfMinute(ts) AS minute, service, name, host, uniqExactState(event_id) AS samples, "
        f"toFloat64(0) AS value_sum, min(value) AS value_min, max(value) AS value_max, "
        f"{QUANTILES_FN.replace('(', 'StateIf(', 1)}(value, 0) AS value_quantiles FROM {{src}}{{where}} "
        "GROUP BY minute, service, name, host",
    ),
    "log_counts_1m": _ROLLUP_V4_SELECT["log_counts_1m"],
}
# The count each rollup keeps, for comparing it with its base table.
ROLLUP_COUNTS = {"metrics_1m": ("metrics", "samples", ("service", "name", "host")),
                 "log_counts_1m": ("logs", "events", ("service", "level"))}


def _v4_exact_rollups(ctx: SchemaContext) -> list[str]:
    """Replaces the v2 rollups by ones whose counts are sets of event ids, rebuilt from the base tables.

    The new view is created before the backfill: a row inserted meanwhile reaches the rollup twice,
    through the view and the backfill, and counts once.
    """
    stmts: list[str] = []
    for table in ROLLUP_TABLES:
        src_table, select = _ROLLUP_V4_SELECT[table]
        stmts.append(f"DROP VIEW IF EXISTS {ctx.q(table + '_mv')}{ctx.on_cluster}")
        if ctx.cluster:
            stmts.append(f"DROP TABLE IF EXISTS {ctx.q(table)}{ctx.on_cluster} SYNC")
        stmts.append(f"DROP TABLE IF EXISTS {ctx.q(ctx.storage(table))}{ctx.on_cluster} SYNC")
        stmts += _create(ctx, table, _ROLLUP_V4_COLUMNS[table], [], "AggregatingMergeTree", "toDate(minute)",
                         _ROLLUP_ORDER_BY[table], "minute", "rand()")
        stmts.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ctx.q(table + '_mv')}{ctx.on_cluster} "
            f"TO {ctx.q(ctx.storage(table))}\nAS {select.format(src=ctx.q(ctx.storage(src_table)), where='')}"
        )
        stmts.append(f"INSERT INTO {ctx.q(table)} {select.format(src=ctx.q(src_table), where='')}")
    return stmts


def repair_rollups(client: Any, database: str, since_us: int, cluster: str | None = None) -> dict[str, int]:
    """Re-aggregates, from the base tables, the minutes since ``since_us`` a rollup counts short.

    A SIGKILL between the base table's part and the view's part (a materialized view is not atomic
    with its insert) leaves such minutes, and a store whose sink never retries that batch keeps them.
    The repair is idempotent (see ``_ROLLUP_REPAIR_SELECT``); returns the minutes repaired per rollup.
    """
    ctx = SchemaContext(database, cluster=cluster)
    since = "toDateTime(intDiv({since:Int64}, 1000000), 'UTC')"
    repaired: dict[str, int] = {}
    for table, (src, count_col, keys) in ROLLUP_COUNTS.items():
        key = ", ".join(keys)
        short = client.query(
            f"SELECT minute FROM (SELECT toStartOfMinute(ts) AS minute, {key}, uniqExact(event_id) AS n "
            f"FROM {ctx.q(src)} WHERE ts >= {since} GROUP BY minute, {key}) AS b "
            f"LEFT JOIN (SELECT minute, {key}, uniqExactMerge({count_col}) AS n FROM {ctx.q(table)} "
            f"WHERE minute >= toStartOfMinute({since}) GROUP BY minute, {key}) AS r USING (minute, {key}) "
            "WHERE r.n < b.n GROUP BY minute ORDER BY minute",
            parameters={"since": since_us},
        ).result_rows
        minutes = [r[0] for r in short]
        if minutes:
            _src, select = _ROLLUP_REPAIR_SELECT[table]
            where = " WHERE toStartOfMinute(ts) IN {minutes:Array(DateTime('UTC'))}"
            client.command(f"INSERT INTO {ctx.q(table)} {select.format(src=ctx.q(src), where=where)}",
                           parameters={"minutes": minutes})
        repaired[table] = len(minutes)
    return repaired


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    render: Callable[[SchemaContext], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "event tables: logs, metrics, health_checks, alerts, notifications", _v1_event_tables),
    Migration(2, "minute rollups: metrics_1m, log_counts_1m and their materialized views", _v2_rollups),
    Migration(3, "ingest: Null tables in the Avro schemas' shape, views into the event tables and quarantine",
              _v3_ingest),
    Migration(4, "exact rollup counts: metrics_1m.samples and log_counts_1m.events as uniqExact(event_id) "
                 "states, rebuilt from the base tables", _v4_exact_rollups),
)
TTL_TABLES: dict[str, str] = {
    **{t: "toDateTime(ts)" for t in EVENT_TABLES}, **{t: "minute" for t in ROLLUP_TABLES},
    QUARANTINE_TABLE: "toDateTime(received_at)",
}


def _migrations_table(ctx: SchemaContext) -> str:
    engine = _engine(ctx, "ReplacingMergeTree", MIGRATIONS_TABLE)
    return (
        f"CREATE TABLE IF NOT EXISTS {ctx.q(MIGRATIONS_TABLE)}{ctx.on_cluster}\n"
        "(\n    `version` UInt32,\n    `name` String,\n    `checksum` String,\n"
        "    `applied_at` DateTime64(3, 'UTC') DEFAULT now64(3)\n)\n"
        f"ENGINE = {engine}\nORDER BY version"
    )


def render(database: str, retention_days: int = 30, cluster: str | None = None) -> list[str]:
    """Every DDL statement of the current schema, in order (what ``tocsin db migrate --print`` shows)."""
    ctx = SchemaContext(database, retention_days, cluster)
    stmts = [f"CREATE DATABASE IF NOT EXISTS `{database}`{ctx.on_cluster}", _migrations_table(ctx)]
    for m in MIGRATIONS:
        stmts += m.render(ctx)
    return stmts


def checksum(migration: Migration) -> str:
    """Fingerprint of a migration's DDL independent of retention (TTL is reconciled separately)."""
    text = "\n".join(migration.render(SchemaContext("db", 30)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_TTL_DAYS_RE = re.compile(r"TTL .*?toIntervalDay\((\d+)\)")


def _current_ttl_days(client: Any, ctx: SchemaContext, table: str) -> int | None:
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": ctx.database, "t": ctx.storage(table)},
    ).result_rows
    if not rows:
        return None
    m = _TTL_DAYS_RE.search(rows[0][0])
    return int(m.group(1)) if m else None


def migrate(client: Any, database: str, retention_days: int = 30, cluster: str | None = None) -> list[str]:
    """Applies the migrations ``schema_migrations`` lacks and reconciles TTLs; returns the statements run.

    Idempotent: every statement is ``IF NOT EXISTS`` (a run interrupted half way
    is finished by the next) and a second run returns ``[]`` unless
    ``retention_days`` changed, in which case it returns the ``MODIFY TTL``s.
    """
    ctx = SchemaContext(database, retention_days, cluster)
    applied: list[str] = []

    def run(stmt: str) -> None:
        client.command(stmt)
        applied.append(stmt)

    if not client.query(
        "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
    ).result_rows[0][0]:
        run(f"CREATE DATABASE IF NOT EXISTS `{database}`{ctx.on_cluster}")
    if not client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": MIGRATIONS_TABLE},
    ).result_rows[0][0]:
        run(_migrations_table(ctx))
    done = {
        int(r[0]) for r in client.query(f"SELECT version FROM {ctx.q(MIGRATIONS_TABLE)} FINAL").result_rows
    }
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for stmt in m.render(ctx):
            run(stmt)
        client.insert(
            f"{ctx.q(MIGRATIONS_TABLE)}", [[m.version, m.name, checksum(m)]],
            column_names=["version", "name", "checksum"],
        )
    # TTL follows the config: a changed retention_days becomes a MODIFY TTL.
    for table, expr in TTL_TABLES.items():
        current = _current_ttl_days(client, ctx, table)
        if current is not None and current != retention_days:
            run(
                f"ALTER TABLE {ctx.q(ctx.storage(table))}{ctx.on_cluster} MODIFY {ttl_clause(expr, retention_days)}"
            )
    return applied
