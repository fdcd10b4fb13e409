"""Kafka -> ClickHouse: the sink's rows/s for N log events, beside (a) clickhouse-connect inserting the
same rows directly and (b) kafka-python consuming and decoding the same topic, all in one run.

Events are produced the way agents send them: LogBatch messages of ``EVENTS_PER_MESSAGE``
events of one service. The store is the embedded engine (chdb) in the harness's
scratch directory, unless CLICKHOUSE_URL names a server. Also reported: the
on-disk bytes per log row after ClickHouse's compression.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from bench.harness import BenchContext
from bench.kafka import consume_decode
from tocsin.app.config import TocsinConfig
from tocsin.core import kafka as kafka_api
from tocsin.core.clickhouse import connect
from tocsin.core.events import LOG_EVENT, now_us
from tocsin.schemas.codec import default_codec
from tocsin.sinks.clickhouse import ClickHouseSink, migrate

DESCRIPTION = "Kafka -> ClickHouse log events: sink vs direct insert (a) vs consume+decode (b)"
RATIOS = {
    "sink / min(a, b) (target >= 0.7)": ("sink.rows_per_s", "baseline_min.rows_per_s"),
    "sink / direct insert (a)": ("sink.rows_per_s", "direct_insert.rows_per_s"),
    "sink / consume+decode (b)": ("sink.rows_per_s", "consume_decode.rows_per_s"),
}
PARTITIONS = 6
EVENTS_PER_MESSAGE = 100
INSERT_ROWS = 100_000  # the sink's default batch_max_rows, so (a) inserts in the same block size
COLUMNS = ["event_id", "ts", "service", "host", "level", "logger", "message", "trace_id", "attrs"]
LEVELS = ["INFO"] * 15 + ["DEBUG", "WARNING", "WARNING", "ERROR", "CRITICAL"]


def _events(n: int) -> list[dict[str, Any]]:
    base = now_us() - n  # one event per microsecond, ending now (inside the retention)
    return [
        {
            "event_id": uuid.UUID(int=i + 1).hex, "ts": base + i, "service": f"svc-{i % 20}",
            "host": f"web-{i % 7}", "level": LEVELS[i % len(LEVELS)], "logger": "shop.checkout",
            "message": f"GET /api/orders/{i % 977} completed in {i % 300} ms",
            "trace_id": uuid.UUID(int=i // 4 + 7).hex if i % 3 else None,
            "attrs": {"route": "/api/orders/{id}", "status": "500" if i % 40 == 0 else "200"},
        }
        for i in range(n)
    ]


def _config(ctx: BenchContext, topic: str, database: str) -> TocsinConfig:
    url = os.environ.get("CLICKHOUSE_URL") or f"chdb://{ctx.workdir / 'chdb'}"
    return TocsinConfig.model_validate({
        "kafka": {"bootstrap_servers": ctx.bootstrap,
                  "topics": {"logs": topic, "metrics": f"{topic}.m", "health": f"{topic}.h",
                             "alerts": f"{topic}.a", "deadletter": f"{topic}.dl", "partitions": PARTITIONS}},
        "clickhouse": {"url": url, "database": database},
        "sink_clickhouse": {"group_id": f"bench-sink-{uuid.uuid4().hex[:8]}"},
    })


def prepare(ctx: BenchContext) -> None:
    n = ctx.n(1_000_000, 100_000)
    events = _events(n)
    codec = default_codec()
    topic = f"bench.sink.{uuid.uuid4().hex[:8]}"
    cfg = _config(ctx, topic, "bench_prepare")
    kafka_api.create_topics(cfg.kafka)
    producer = kafka_api.producer(cfg.kafka)
    for i in range(0, n, EVENTS_PER_MESSAGE):
        chunk = events[i:i + EVENTS_PER_MESSAGE]
        producer.send(topic, key=chunk[0]["service"].encode(), value=codec.encode_batch(LOG_EVENT, chunk))
    producer.flush(300)
    producer.close()
    columns = [[e[c] for e in events] for c in COLUMNS]
    columns[COLUMNS.index("trace_id")] = [t or "" for t in columns[COLUMNS.index("trace_id")]]
    ctx.state.update(n=n, topic=topic, columns=columns)


def _direct_insert(cfg: TocsinConfig, columns: list[list[Any]], n: int) -> float:
    client = connect(cfg.clickhouse)
    migrate(client, cfg.clickhouse.database)
    table = f"`{cfg.clickhouse.database}`.`logs`"
    started = time.perf_counter()
    for i in range(0, n, INSERT_ROWS):
        client.insert(table, [col[i:i + INSERT_ROWS] for col in columns], column_names=COLUMNS,
                      column_oriented=True, settings={"insert_deduplication_token": f"direct-{i}"})
    return time.perf_counter() - started


def _sink(cfg: TocsinConfig, n: int) -> tuple[float, float]:
    sink = ClickHouseSink(cfg)
    sink.start()  # connects and migrates: not part of the rate
    thread = threading.Thread(target=sink.run, name="bench-sink")
    thread.start()
    deadline = time.monotonic() + 600
    while sink.stats["events"] < n and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.005)
    # From the first record polled (the group join is start-up, not throughput) to the last commit.
    elapsed = time.monotonic() - (sink.first_record_at or deadline)
    sink.stop()
    thread.join(120)
    sink.close()
    if sink.stats["events"] < n:
        raise RuntimeError(f"sink stored {sink.stats['events']} of {n} events")
    client = connect(cfg.clickhouse)
    db = cfg.clickhouse.database
    client.command(f"OPTIMIZE TABLE `{db}`.`logs` FINAL")
    rows, nbytes = client.query(
        "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} "
        "AND table = 'logs' AND active", parameters={"db": db},
    ).result_rows[0]
    if rows != n:
        raise RuntimeError(f"logs holds {rows} rows, expected {n}")
    return elapsed, nbytes / rows


def run(ctx: BenchContext) -> dict[str, float]:
    n, topic, columns = ctx.state["n"], ctx.state["topic"], ctx.state["columns"]
    rep = f"r{ctx.repetition}_{uuid.uuid4().hex[:6]}"
    consume_s, consumed = consume_decode(_config(ctx, topic, f"bench_b_{rep}").kafka, topic, n, PARTITIONS)
    direct = _direct_insert(_config(ctx, topic, f"bench_a_{rep}"), columns, n)
    sink, bytes_per_row = _sink(_config(ctx, topic, f"bench_sink_{rep}"), n)
    client = connect(_config(ctx, topic, "bench_prepare").clickhouse)
    for db in (f"bench_a_{rep}", f"bench_sink_{rep}"):
        client.command(f"DROP DATABASE IF EXISTS `{db}`")
    return {
        "sink.rows_per_s": n / sink,
        "direct_insert.rows_per_s": n / direct,
        "consume_decode.rows_per_s": consumed / consume_s,
        "baseline_min.rows_per_s": min(n / direct, consumed / consume_s),
        "sink.on_disk_bytes_per_log_row": bytes_per_row,
    }
