"""No commit past a failed publish: transitions and dead letters are confirmed record by record.

kafka-python's ``flush()`` returns normally for batches that failed. Here the
broker refuses every write to this test's alerts and dead-letter topics
(``max.message.bytes`` below any record: MESSAGE_TOO_LARGE, each record's
future fails) while the input keeps being read, so the processor computes its
transitions and cannot publish them. (A broker killed for longer than the
delivery timeout fails the futures the same way, but then there is no input
to read meanwhile, and event time is held, so nothing is computed to fail.)
It must commit no input offset past them, send them again, and once the
topics take writes again each transition is on the alerts topic exactly once,
in order, as the processor computed it.
"""

from __future__ import annotations

import os

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.structs import TopicPartition

from tests.kafkautil import consume_all, produce, wait_for
from tocsin.core import kafka as kafka_api
from tocsin.core.events import METRIC_EVENT, now_us
from tocsin.schemas.codec import MAGIC

from .kafkaproc import alert_events, processor_config, running
from .test_service import _slow_then_fast

S = 1_000_000
SERVICES = ["pay", "cart", "search"]
POISON = 5


REFUSE_BYTES = 64
"""A topic's max.message.bytes below any AlertEvent or dead letter: the broker rejects every batch."""
KAFKA_DEFAULT_BYTES = 1_048_588


def _max_message_bytes(cfg, n: int) -> None:
    admin = kafka_api.admin(cfg.kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs={"max.message.bytes": str(n)})
                             for t in (cfg.kafka.topics.alerts, cfg.kafka.topics.deadletter)])
    finally:
        admin.close()


def _committed(cfg) -> dict[int, int]:
    """The processor group's committed offsets on the metrics topic (-1: none)."""
    consumer = kafka_api.consumer(cfg.kafka, group_id=cfg.processor.group_id)
    try:
        topic = cfg.kafka.topics.metrics
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        found = {p: consumer.committed(TopicPartition(topic, p)) for p in parts}
        return {p: -1 if c is None else c for p, c in found.items()}
    finally:
        consumer.close(autocommit=False)


def _ends(cfg) -> dict[int, int]:
    consumer = kafka_api.consumer(cfg.kafka)
    try:
        topic = cfg.kafka.topics.metrics
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: n for tp, n in consumer.end_offsets(parts).items()}
    finally:
        consumer.close(autocommit=False)


def test_failed_transitions_and_dead_letters_are_sent_again_and_never_committed_past(
        kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path)
    start = now_us() - 10 * S
    events = sorted((e for svc in SERVICES for e in _slow_then_fast(svc, start, slow_s=10, fast_s=0.1)),
                    key=lambda e: e["ts"])  # in time order: services sharing a partition share its clock
    produce(cfg.kafka, cfg.kafka.topics.metrics, METRIC_EVENT, events)
    poison = [MAGIC + os.urandom(8) + b"body" for _ in range(POISON)]
    producer = kafka_api.producer(cfg.kafka)
    for value in poison:
        producer.send(cfg.kafka.topics.metrics, key=b"pay", value=value)
    producer.flush(30)
    producer.close()
    _max_message_bytes(cfg, REFUSE_BYTES)  # every write to the alerts and dead-letter topics now fails
    ends = _ends(cfg)
    with running(cfg) as view:
        svc = view.service

        def computed() -> list[dict] | None:
            history = view.refresh().history
            return history if len(history) >= 3 * len(SERVICES) else None

        history = wait_for(computed, 60, "the transitions computed")
        wait_for(lambda: svc.outbox.failures >= 3 * len(SERVICES), 60, "their publishing failed")
        assert view.refresh().counters.dead_lettered == POISON
        assert view.refresh().counters.processed[cfg.kafka.topics.metrics] == len(events)
        # Nothing reached the topics and no offset was committed past the records that produced them.
        assert alert_events(cfg, idle_s=1) == []
        committed = _committed(cfg)
        assert all(committed[p] < ends[p] for p in ends if ends[p] > 0), (committed, ends)
        failures_while_down = svc.outbox.failures

        _max_message_bytes(cfg, KAFKA_DEFAULT_BYTES)  # the topics take writes again
        wait_for(lambda: svc.outbox.pending == 0, 60, "everything acknowledged")
        wait_for(lambda: _committed(cfg) == ends, 30, "offsets committed to the end")
    on_topic = alert_events(cfg)
    expected = list(reversed(history))  # what the processor computed, oldest first
    print(f"\npublish failure: {failures_while_down} failed deliveries sent again; {len(on_topic)} transitions "
          f"on the alerts topic for {len(expected)} computed")
    assert sorted(e["event_id"] for e in on_topic) == sorted(e["event_id"] for e in expected)  # each exactly once
    by_fp: dict[str, list[str]] = {}
    for e in on_topic:
        by_fp.setdefault(e["fingerprint"], []).append(e["state"])
    assert len(by_fp) == len(SERVICES)
    assert all(states == ["pending", "firing", "resolved"] for states in by_fp.values()), by_fp
    letters = consume_all(cfg.kafka, cfg.kafka.topics.deadletter, expect=POISON, timeout_s=30)
    assert sorted(m.value for m in letters) == sorted(poison)  # each exactly once
