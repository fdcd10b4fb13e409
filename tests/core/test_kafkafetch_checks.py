"""The lean reader checks kafka-python's internals once per process and, where they differ, warns and leaves
consumers with kafka-python's own reader, which still reads every record."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from kafka import KafkaProducer
from kafka.admin import NewTopic

from tocsin.app.config import KafkaConfig
from tocsin.core import kafka as kafka_api
from tocsin.core import kafkafetch, kafkainternals


def test_the_installed_kafka_python_matches_the_readers_surface() -> None:
    assert kafkainternals.differences(kafkafetch.SURFACE, kafkafetch.installed_surface()) == []


def test_a_changed_record_tuple_is_named_in_the_warning(caplog) -> None:
    """A fake description of the installed side: ConsumerRecord grew a field, the header struct changed."""
    actual = dict(kafkafetch.installed_surface())
    actual["ConsumerRecord._fields"] += ", serialized_size"
    actual["DefaultRecordBatch.HEADER_STRUCT.format"] = ">qiibIhiqqqhiii"
    with caplog.at_level(logging.WARNING, logger="tocsin.core.kafkainternals"):
        assert not kafkainternals.verify("the lean record reader", kafkafetch.SURFACE, actual, "kafka-python's")
    (record,) = caplog.records
    assert [d.split(":")[0] for d in record.differences] == [  # type: ignore[attr-defined]
        "ConsumerRecord._fields", "DefaultRecordBatch.HEADER_STRUCT.format"]


def test_a_changed_reader_signature_falls_back_to_kafka_pythons_reader(kafka_bootstrap: str, monkeypatch,
                                                                       caplog) -> None:
    base = kafkafetch._Base
    original = base._unpack_records

    def _unpack_records(self: Any, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any,
                        header_deserializer: Any = None) -> Any:
        return original(self, tp, records, key_deserializer, value_deserializer)

    monkeypatch.setattr(base, "_unpack_records", _unpack_records)
    kafkafetch.supported.cache_clear()  # the check runs once per process: run it again (and after)
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic = f"test.fetch.check.{uuid.uuid4().hex[:6]}"
    kafka_api.admin(cfg).create_topics([NewTopic(topic, 2, 1)])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(100):
        producer.send(topic, key=b"k%d" % (i % 5), value=b"v%d" % i, headers=[("n", b"%d" % i)])
    producer.flush()
    producer.close()
    try:
        with caplog.at_level(logging.WARNING, logger="tocsin.core.kafkainternals"):
            consumer = kafka_api.consumer(cfg, group_id=None)  # lean_reader is on by default
        consumer.close()
        assert consumer._fetcher.PartitionRecords is not kafkafetch.LeanPartitionRecords
        (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert record.differences == [  # type: ignore[attr-defined]
            "PartitionRecords._unpack_records: expected (self, tp, records, key_deserializer, value_deserializer), "
            "found (self, tp, records, key_deserializer, value_deserializer, header_deserializer=…)"]
        got: list[tuple[bytes, bytes, list[Any]]] = []
        kafka_api.read_topic(cfg, topic, lambda tp, r: got.append((r.key, r.value, r.headers)), timeout_s=60)
    finally:
        kafkafetch.supported.cache_clear()
    assert sorted(got, key=lambda r: int(r[1][1:])) == [
        (b"k%d" % (i % 5), b"v%d" % i, [("n", b"%d" % i)]) for i in range(100)]
