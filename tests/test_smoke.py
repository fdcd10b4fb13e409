"""Smoke test across the real parts: Kafka producer -> consumer group -> Avro decode -> ClickHouse."""

from __future__ import annotations

import time

from kafka import TopicPartition

from tests.kafkautil import produce
from tocsin.core import kafka as kafka_api
from tocsin.core.events import LOG_EVENT, now_us
from tocsin.schemas.codec import default_codec

N = 10_000
SERVICES = [f"svc-{i}" for i in range(8)]


def test_ten_thousand_log_events_land_in_clickhouse_exactly_once(tocsin_config, clickhouse_client):
    cfg = tocsin_config
    topic = cfg.kafka.topics.logs
    base = now_us()
    records = [
        {"event_id": f"smoke-{i}", "ts": base + i, "service": SERVICES[i % len(SERVICES)], "host": "h1",
         "level": "ERROR" if i % 10 == 0 else "INFO", "logger": "shop", "message": f"line {i}",
         "trace_id": None, "attrs": {"i": str(i)}}
        for i in range(N)
    ]
    assert produce(cfg.kafka, topic, LOG_EVENT, records) == N

    db = cfg.clickhouse.database
    clickhouse_client.command(
        f"CREATE TABLE `{db}`.smoke_logs (event_id String, ts DateTime64(6, 'UTC'), service LowCardinality(String),"
        " level LowCardinality(String), message String) ENGINE = MergeTree ORDER BY (service, ts)"
    )
    codec = default_codec()
    consumer = kafka_api.consumer(cfg.kafka, topic, group_id=f"{db}-smoke")
    seen_partitions: set[int] = set()
    consumed = 0
    deadline = time.monotonic() + 90
    while consumed < N and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=1000)
        rows = []
        for tp, msgs in batch.items():
            seen_partitions.add(tp.partition)
            for m in msgs:
                name, ev = codec.decode(m.value)
                assert name == LOG_EVENT and m.key == ev["service"].encode()
                rows.append([ev["event_id"], ev["ts"],  # int micros = DateTime64(6) ticks
                              ev["service"], ev["level"], ev["message"]])
        if rows:
            clickhouse_client.insert(f"`{db}`.smoke_logs", rows,
                                     column_names=["event_id", "ts", "service", "level", "message"])
            consumer.commit()  # only after ClickHouse acknowledged
            consumed += len(rows)
    committed = {p: consumer.committed(TopicPartition(topic, p)) for p in seen_partitions}
    consumer.close()

    assert consumed == N
    assert len(seen_partitions) > 1, "keyed by service, the events must spread over partitions"
    assert sum(committed.values()) == N
    total, distinct = clickhouse_client.query(
        f"SELECT count(), uniqExact(event_id) FROM `{db}`.smoke_logs").result_rows[0]
    assert (total, distinct) == (N, N)
    errors = clickhouse_client.query(f"SELECT count() FROM `{db}`.smoke_logs WHERE level = 'ERROR'").result_rows[0][0]
    assert errors == N // 10
