"""Test helpers that move events across the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import TopicPartition

from tocsin.app.config import KafkaConfig
from tocsin.core import kafka as kafka_api
from tocsin.schemas.codec import default_codec


def produce(cfg: KafkaConfig, topic: str, name: str, records: Iterable[dict[str, Any]],
            key_field: str = "service") -> int:
    """Encodes and produces records keyed by ``key_field``; returns how many were acknowledged."""
    codec = default_codec()
    producer = kafka_api.producer(cfg)
    futures = [
        producer.send(topic, key=str(r[key_field]).encode(), value=codec.encode(name, r)) for r in records
    ]
    producer.flush(60)
    n = sum(1 for f in futures if f.get(timeout=60))
    producer.close()
    return n


def consume_all(cfg: KafkaConfig, topic: str, expect: int | None = None, timeout_s: float = 60.0,
                idle_s: float = 3.0) -> list[Any]:
    """Reads a topic from the start without a group: until ``expect`` records, or ``idle_s`` of silence."""
    consumer = kafka_api.consumer(cfg, group_id=None, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500)
        for records in batch.values():
            out.extend(records)
        if batch:
            last = time.monotonic()
        if expect is not None and len(out) >= expect:
            break
        if expect is None and time.monotonic() - last > idle_s:
            break
    consumer.close()
    return out


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5,
             ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """The predicate's first truthy result; AssertionError naming ``what`` (and the last result) after
    ``timeout_s``. Exceptions of the ``ignore`` types count as a falsy result (a server still starting)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")
