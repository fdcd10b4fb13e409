"""Reading the compacted alerts topic (the processor's only recovered state) and where a service's events go."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError as _KafkaError
from kafka.partitioner.default import murmur2

from tocsin.core import kafka as kafka_api
from tocsin.core.errors import DecodeError, KafkaError, ReadTimeout
from tocsin.core.events import ALERT_EVENT
from tocsin.processors.config import ProcessorSettings
from tocsin.schemas.codec import default_codec


def partition_for(key: str, partitions: int) -> int:
    """The partition kafka-python's (and Java's) default partitioner gives a key: murmur2, positive, modulo."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def read_alert_changelog(cfg: ProcessorSettings, timeout_s: float = 60.0, *,
                         retry: Callable[[Exception, int], bool] | None = None) -> dict[str, dict[str, Any]]:
    """The latest AlertEvent per fingerprint on the (compacted) alerts topic, read to its current end.

    Raises ``ReadTimeout`` (a ``KafkaError``) when the end is not reached within ``timeout_s``, unless
    ``retry(error, attempt)`` says to go on: then the same reader goes on from where it stopped (records read
    stay read), toward the end offsets of that moment.
    """
    codec = default_codec()
    latest: dict[str, dict[str, Any]] = {}
    topic = cfg.kafka.topics.alerts

    def handle(_tp: TopicPartition, m: Any) -> None:
        if m.value is None:
            latest.pop(m.key.decode() if m.key else "", None)
            return
        try:
            name, rec = codec.decode(m.value)
        except DecodeError:
            return  # not ours to judge here; the alerts sinks dead-letter it
        if name == ALERT_EVENT:
            latest[rec["fingerprint"]] = rec

    attempt = 0
    client = None
    parts: list[TopicPartition] | None = None
    try:
        while True:
            try:
                if client is None:
                    client = kafka_api.consumer(cfg.kafka, group_id=None)
                if parts is None:
                    try:
                        found = client.partitions_for_topic(topic)
                    except _KafkaError as exc:
                        raise ReadTimeout(f"reading {topic}: no metadata: {exc}") from exc
                    if not found:
                        return latest
                    parts = [TopicPartition(topic, q) for q in sorted(found)]
                    client.assign(parts)
                    client.seek_to_beginning(*parts)
                kafka_api.read_to_end(client, handle, timeout_s=timeout_s, what=topic, partitions=parts)
                return latest
            except KafkaError as exc:
                attempt += 1
                if retry is None or not retry(exc, attempt):
                    raise
    finally:
        if client is not None:
            client.close(autocommit=False)
