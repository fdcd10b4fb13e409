"""``read_to_end``/``read_topic`` over the real broker: the end is reached, or ReadTimeout says what is left."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition

from tests.kafkautil import produce
from tocsin.core import kafka as kafka_api
from tocsin.core.errors import KafkaError, ReadTimeout
from tocsin.core.events import LOG_EVENT


def _logs(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "ts": 1_700_000_000_000_000 + i, "service": f"s{i % 3}", "host": "h",
             "level": "INFO", "logger": "t", "message": f"m{i}", "trace_id": None, "attrs": {}} for i in range(n)]


def test_reads_every_record_to_the_end(tocsin_config):
    kcfg = tocsin_config.kafka
    assert produce(kcfg, kcfg.topics.logs, LOG_EVENT, _logs(300)) == 300
    seen: list[tuple[int, int]] = []
    n = kafka_api.read_topic(kcfg, kcfg.topics.logs, lambda tp, r: seen.append((tp.partition, r.offset)),
                             timeout_s=30)
    assert n == 300 == len(set(seen))


def test_timeout_is_an_error_naming_what_is_left(tocsin_config):
    kcfg = tocsin_config.kafka
    produce(kcfg, kcfg.topics.logs, LOG_EVENT, _logs(50))
    with pytest.raises(ReadTimeout) as info:
        kafka_api.read_topic(kcfg, kcfg.topics.logs, lambda tp, r: None, timeout_s=0)
    assert sum(info.value.behind.values()) == 50
    assert "50 records left" in str(info.value)


def test_until_bounds_each_partition(tocsin_config):
    kcfg = tocsin_config.kafka
    produce(kcfg, kcfg.topics.logs, LOG_EVENT, _logs(90))
    client = kafka_api.consumer(kcfg, group_id=None)
    try:
        parts = [TopicPartition(kcfg.topics.logs, p) for p in sorted(client.partitions_for_topic(kcfg.topics.logs))]
        client.assign(parts)
        client.seek_to_beginning(*parts)
        ends = client.end_offsets(parts)
        until = {tp: end // 2 for tp, end in ends.items()}
        seen: list[tuple[TopicPartition, int]] = []
        kafka_api.read_to_end(client, lambda tp, r: seen.append((tp, r.offset)), timeout_s=30, until=until,
                              what="test")
    finally:
        client.close()
    assert len(seen) == sum(until.values())
    assert all(off < until[tp] for tp, off in seen)


def test_missing_topic(tocsin_config):
    kcfg = tocsin_config.kafka
    assert kafka_api.read_topic(kcfg, "no-such-topic-x1", lambda tp, r: None, timeout_s=5, missing_ok=True) == 0
    with pytest.raises(KafkaError, match="does not exist"):
        kafka_api.read_topic(kcfg, "no-such-topic-x2", lambda tp, r: None, timeout_s=5)
