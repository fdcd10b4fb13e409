"""The README's main job: the pipeline on the local Kafka and the embedded ClickHouse.

Today it runs the smoke pipeline end to end: starts the local broker (or uses
KAFKA_BOOTSTRAP_SERVERS), creates the topics, produces LogEvents of three shop
services, consumes them as a consumer group, stores them in ClickHouse and
reports per-service counts with SQL. The operations issue grows it into the
full demo (processor, sinks, agents, an injected incident).
"""

from __future__ import annotations

import os
import sys
import time

from kafka import TopicPartition

from schemas.codec import default_codec
from tocsin import kafka as kafka_api
from tocsin import localkafka
from tocsin.clickhouse import connect
from tocsin.config import load_config
from tocsin.events import HOSTNAME, LOG_EVENT, now_us

SERVICES = ("storefront", "checkout", "payments")
EVENTS = 30_000


def main() -> int:
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        print("starting the local Kafka broker...", flush=True)
        print(f"kafka bootstrap={localkafka.up().bootstrap}")
    cfg = load_config()
    kafka_api.create_topics(cfg.kafka)
    codec = default_codec()
    topic = cfg.kafka.topics.logs
    run = f"demo-{int(time.time())}"
    producer = kafka_api.producer(cfg.kafka)
    base = now_us()
    for service in SERVICES:
        batch = [
            {"event_id": f"{run}-{service}-{i}", "ts": base + i, "service": service, "host": HOSTNAME,
             "level": "ERROR" if (service == "payments" and i % 50 == 0) else "INFO", "logger": f"shop.{service}",
             "message": f"request {i} handled", "trace_id": None, "attrs": {"run": run}}
            for i in range(EVENTS // len(SERVICES))
        ]
        for start in range(0, len(batch), 500):
            producer.send(topic, key=service.encode(), value=codec.encode_batch(LOG_EVENT, batch[start:start + 500]))
    producer.flush(60)
    producer.close()
    print(f"produced {EVENTS} log events to {topic}")

    client = connect(cfg.clickhouse)
    db = cfg.clickhouse.database
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{db}`.demo_logs (event_id String, ts DateTime64(6, 'UTC'),"
        " service LowCardinality(String), level LowCardinality(String), message String, run String)"
        " ENGINE = ReplacingMergeTree ORDER BY (service, event_id)"
    )
    consumer = kafka_api.consumer(cfg.kafka, topic, group_id=f"tocsin-demo-{run}")
    stored, deadline = 0, time.monotonic() + 120
    while stored < EVENTS and time.monotonic() < deadline:
        rows = []
        for msgs in consumer.poll(timeout_ms=1000).values():
            for m in msgs:
                _, events = codec.decode_events(m.value)
                rows.extend([e["event_id"], e["ts"], e["service"], e["level"], e["message"], e["attrs"].get("run", "")]
                            for e in events if e["attrs"].get("run") == run)
        if rows:
            client.insert(f"`{db}`.demo_logs", rows,
                          column_names=["event_id", "ts", "service", "level", "message", "run"])
            consumer.commit()
            stored += len(rows)
    committed = sum(consumer.committed(TopicPartition(topic, p)) or 0
                    for p in consumer.partitions_for_topic(topic) or [])
    consumer.close()
    sql = (f"SELECT service, count() AS events, countIf(level = 'ERROR') AS errors "
           f"FROM `{db}`.demo_logs WHERE run = '{run}' GROUP BY service ORDER BY service")
    print(f"stored {stored} events in ClickHouse ({cfg.clickhouse.resolved_url()}); "
          f"{committed} Kafka messages committed (batches of 500)")
    for service, events, errors in client.query(sql).result_rows:
        print(f"  {service:<12} {events:>7} events {errors:>5} errors")
    print(f"explore: tocsin query \"{sql}\"")
    return 0 if stored == EVENTS else 1


if __name__ == "__main__":
    sys.exit(main())
