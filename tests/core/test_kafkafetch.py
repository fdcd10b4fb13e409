"""The lean record reader returns exactly kafka-python's records, across the real broker."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tocsin.app.config import KafkaConfig
from tocsin.core import kafka as kafka_api
from tocsin.core import kafkafetch

PARTITIONS = 3


def _read(cfg: KafkaConfig, topic: str, lean: bool, expect: int, seek: dict[int, int] | None = None,
          **overrides: Any) -> list[tuple[Any, ...]]:
    consumer = kafka_api.consumer(cfg.model_copy(update={"lean_reader": lean}), group_id=None, **overrides)
    assert (consumer._fetcher.PartitionRecords is kafkafetch.LeanPartitionRecords) == lean
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, (seek or {}).get(tp.partition, 0))
    out: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 60
    while len(out) < expect and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(tuple(r) for r in records)
    consumer.close()
    return sorted(out, key=lambda r: (r[1], r[3]))


def _fill(bootstrap: str, topic: str, compression: str | None, n: int) -> None:
    rng = random.Random(3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, linger_ms=20,
                             batch_size=64 * 1024)
    for i in range(n):
        # Keys and values of 0..300 bytes cross the one-byte varint boundary; some null, some with headers.
        key = None if i % 7 == 0 else rng.randbytes(rng.choice((1, 20, 63, 64, 200)))
        value = None if i % 11 == 0 and key is not None else rng.randbytes(rng.choice((0, 10, 63, 64, 65, 300)))
        headers = [] if i % 5 else [("reason", b"x" * (i % 130)), ("empty", b""), ("ü", b"\xff")][: 1 + i % 3]
        producer.send(topic, key=key, value=value, headers=headers, partition=i % PARTITIONS,
                      timestamp_ms=1_700_000_000_000 + rng.randrange(0, 10**9) if i % 3 else None)
        if i % 500 == 0:
            producer.flush()  # several batches per partition
    producer.flush()
    producer.close()


@pytest.mark.parametrize("compression", [None, "gzip", "lz4"])
def test_lean_reader_returns_kafka_pythons_records(kafka_bootstrap: str, compression: str | None) -> None:
    if compression == "lz4":
        pytest.importorskip("lz4")
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic = f"test.fetch.{compression}.{uuid.uuid4().hex[:6]}"
    kafka_api.admin(cfg).create_topics([NewTopic(topic, PARTITIONS, 1)])
    n = 3000
    _fill(kafka_bootstrap, topic, compression, n)

    standard = _read(cfg, topic, lean=False, expect=n)
    lean = _read(cfg, topic, lean=True, expect=n)
    assert len(standard) == n
    assert lean == standard  # every field: offsets, timestamps, keys, values, headers, sizes

    # Small polls stop inside batches, and a seek into the middle of a (compressed) batch must skip its head.
    seek = {0: 101, 1: 7, 2: 555}
    expect = n - sum(seek.values())
    assert (_read(cfg, topic, lean=True, expect=expect, seek=seek, max_poll_records=37)
            == _read(cfg, topic, lean=False, expect=expect, seek=seek, max_poll_records=37))


def test_lean_reader_skips_transaction_markers_like_kafka_python(kafka_bootstrap: str) -> None:
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic = f"test.fetch.txn.{uuid.uuid4().hex[:6]}"
    kafka_api.admin(cfg).create_topics([NewTopic(topic, PARTITIONS, 1)])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"t-{uuid.uuid4().hex[:6]}")
    producer.init_transactions()
    for round_ in range(3):
        producer.begin_transaction()
        for i in range(50):
            producer.send(topic, value=f"{round_}-{i}".encode(), partition=i % PARTITIONS)
        producer.commit_transaction()
    producer.close()
    standard = _read(cfg, topic, lean=False, expect=150)
    assert len(standard) == 150
    assert _read(cfg, topic, lean=True, expect=150) == standard


def test_install_leaves_consumers_with_deserializers_alone(kafka_bootstrap: str) -> None:
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    consumer = kafka_api.consumer(cfg, group_id=None, value_deserializer=bytes.decode)
    try:
        assert consumer._fetcher.PartitionRecords is not kafkafetch.LeanPartitionRecords
    finally:
        consumer.close()
