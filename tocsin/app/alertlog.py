"""Reading the alert changelog (the compacted ``tocsin.alerts`` topic) and writing control events.

The alerts topic holds one AlertEvent per state change, keyed by fingerprint;
compaction keeps at least the latest per fingerprint, so reading it from the
start yields every alert's current state. That is all a subscriber needs:
``tocsin alerts`` and ``tocsin alerts --follow`` are built on this module and
nothing else, as a third-party subscriber would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kafka import TopicPartition

from tocsin.core import kafka as kafka_api
from tocsin.core.config import KafkaConfig
from tocsin.core.errors import DecodeError
from tocsin.core.events import ALERT_EVENT, CONTROL_EVENT, new_event_id, now_us
from tocsin.schemas.codec import default_codec

ACTIVE_STATES = ("pending", "firing")


def _assigned_consumer(cfg: KafkaConfig, topic: str, from_beginning: bool):
    consumer = kafka_api.consumer(cfg, group_id=None)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    if from_beginning:
        consumer.seek_to_beginning(*parts)
    else:
        consumer.seek_to_end(*parts)
    return consumer, parts


def read_transitions(cfg: KafkaConfig, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every AlertEvent still on the topic, in (partition, offset) order, to the topic's current end.

    Raises ``ReadTimeout`` when the end is not reached in time (never a silent partial list).
    """
    codec = default_codec()
    out: list[dict[str, Any]] = []

    def handle(_tp: TopicPartition, m: Any) -> None:
        if m.value is None:
            return
        try:
            name, event = codec.decode(m.value)
        except DecodeError:
            return  # the processor dead-letters bad records; a reader skips them
        if name == ALERT_EVENT:
            out.append(event)

    kafka_api.read_topic(cfg, cfg.topics.alerts, handle, timeout_s=timeout_s, missing_ok=True)
    return out


def latest_by_fingerprint(transitions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The current state of every alert: its newest transition by event time."""
    latest: dict[str, dict[str, Any]] = {}
    for ev in transitions:
        cur = latest.get(ev["fingerprint"])
        if cur is None or ev["ts"] >= cur["ts"]:
            latest[ev["fingerprint"]] = ev
    return latest


def active_alerts(cfg: KafkaConfig) -> list[dict[str, Any]]:
    current = latest_by_fingerprint(read_transitions(cfg))
    return sorted((a for a in current.values() if a["state"] in ACTIVE_STATES), key=lambda a: a["started_at"])


def follow(cfg: KafkaConfig, from_beginning: bool = False, poll_ms: int = 500) -> Iterator[dict[str, Any]]:
    """Alert transitions as they are published; runs until the caller stops iterating."""
    consumer, _ = _assigned_consumer(cfg, cfg.topics.alerts, from_beginning)
    codec = default_codec()
    try:
        while True:
            for records in consumer.poll(timeout_ms=poll_ms).values():
                for m in records:
                    try:
                        name, event = codec.decode(m.value)
                    except DecodeError:
                        continue
                    if name == ALERT_EVENT:
                        yield event
    finally:
        consumer.close()


def publish_control(cfg: KafkaConfig, action: str, *, alert_id: str | None = None, fingerprint: str | None = None,
                    reason: str = "", actor: str = "cli", silence_id: str | None = None,
                    matchers: list[dict[str, str]] | None = None, ends_at: int | None = None) -> dict[str, Any]:
    """Publishes one ControlEvent (resolve, silence_create, silence_expire) and waits for the ack."""
    event = {
        "event_id": new_event_id(), "ts": now_us(), "action": action, "alert_id": alert_id,
        "fingerprint": fingerprint, "silence_id": silence_id, "matchers": matchers or [],
        "ends_at": ends_at, "reason": reason, "actor": actor,
    }
    producer = kafka_api.producer(cfg)
    try:
        key = (fingerprint or alert_id or silence_id or "").encode()
        producer.send(cfg.topics.control, key=key, value=default_codec().encode(CONTROL_EVENT, event)).get(30)
    finally:
        producer.close()
    return event
