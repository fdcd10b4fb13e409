"""Batched messages (LogBatch/MetricBatch, several events of one service per Kafka message) are processed
event by event; a bad event inside a good batch is dead-lettered alone, re-encoded, with its reason."""

from __future__ import annotations

from tests.kafkautil import consume_all, wait_for
from tocsin.core import kafka as kafka_api
from tocsin.core.events import METRIC_EVENT, now_us
from tocsin.schemas.codec import default_codec

from .kafkaproc import processor_config, running


def test_a_batch_is_processed_event_by_event_and_its_bad_event_dead_lettered_alone(
        kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path)
    topics = cfg.kafka.topics
    codec = default_codec()
    base = now_us()
    good = [{"event_id": f"b{i}", "ts": base + i, "service": "shop", "host": "h", "name": "api_response_time",
             "value": 100.0 + i, "unit": "ms", "labels": {}} for i in range(50)]
    bad = {**good[0], "event_id": "nan", "value": float("nan")}
    producer = kafka_api.producer(cfg.kafka)
    producer.send(topics.metrics, key=b"shop", value=codec.encode_batch(METRIC_EVENT, [*good[:25], bad]))
    producer.send(topics.metrics, key=b"shop", value=codec.encode_batch(METRIC_EVENT, good[25:]))
    producer.flush(30)
    producer.close()
    with running(cfg) as view:
        wait_for(lambda: view.refresh().counters.processed.get(topics.metrics, 0) >= len(good), 60, "batched events")
        wait_for(lambda: view.refresh().counters.dead_lettered >= 1, 30, "the bad event")
        assert view.refresh().counters.processed[topics.metrics] == len(good)
    (letter,) = consume_all(cfg.kafka, topics.deadletter, expect=1, timeout_s=30)
    assert "absurd metric value" in dict(letter.headers)["error"].decode()
    name, record = codec.decode(letter.value)
    assert name == METRIC_EVENT and record["event_id"] == "nan"
