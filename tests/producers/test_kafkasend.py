"""The batch appender writes what KafkaProducer.send writes, survives kafka-python splitting a refused batch,
and falls back to send() when kafka-python's internals differ from those it was written for."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
from kafka.admin import NewTopic

from tocsin.app.config import KafkaConfig
from tocsin.core import kafka as kafka_api
from tocsin.core import kafkainternals
from tocsin.producers import kafkasend
from tocsin.producers.kafkasend import RecordSender, batch_failure

PARTITIONS = 3
# A topic limit far below the producer's batch_size (256 KiB), so that kafka-python must split batches.
SMALL_MAX_MESSAGE_BYTES = 20_000
ACK_DEADLINE_S = 60.0  # well under the shipper's stall deadline (delivery timeout + 30 s = 150 s)


def _topic(cfg: KafkaConfig, name: str, **configs: str) -> str:
    topic = f"test.send.{name}.{uuid.uuid4().hex[:6]}"
    kafka_api.admin(cfg).create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=configs)])
    return topic


def _read(cfg: KafkaConfig, topic: str) -> list[tuple[int, bytes | None, bytes | None, list[Any]]]:
    """(partition, key, value, headers) of the whole topic, per partition in offset order."""
    out: list[tuple[int, int, Any, Any, Any]] = []
    kafka_api.read_topic(cfg, topic, lambda tp, r: out.append((tp.partition, r.offset, r.key, r.value, r.headers)),
                         timeout_s=60)
    return [(p, k, v, list(h)) for p, _, k, v, h in sorted(out, key=lambda r: (r[0], r[1]))]


def _wait_acked(futures: list[Any], deadline_s: float = ACK_DEADLINE_S) -> None:
    """Every future done and successful within the deadline (the shipper's view of 'acknowledged')."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and not all(f.is_done for f in futures):
        time.sleep(0.05)
    pending = sum(1 for f in futures if not f.is_done)
    assert pending == 0, f"{pending} of {len(futures)} futures still pending after {deadline_s:g} s"
    errors = [batch_failure(f) for f in futures if batch_failure(f) is not None]
    assert not errors, errors


def _records(n: int, value_bytes: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Keys spread over the partitions; values of several sizes; some records with headers."""
    out = []
    for i in range(n):
        key = f"svc-{i % 7}".encode()
        value = f"{i:06d}".encode() + b"v" * (i % 5 * value_bytes // 4)
        headers = [] if i % 3 else [("seq", str(i).encode()), ("empty", b""), ("ü", b"\xff")][: 1 + i % 2]
        out.append((key, value, headers))
    return out


def _send_runs(sender: RecordSender, topic: str, records: list[tuple[bytes, bytes, list[Any]]]) -> list[Any]:
    """Through the appender, in runs of one key (as the shipper sends a file's lines), order kept."""
    futures: list[Any] = []
    i = 0
    while i < len(records):
        j = i
        while j < len(records) and records[j][0] == records[i][0] and j - i < 50:
            j += 1
        run = records[i:j]
        futures += sender.send_many(topic, run[0][0], [v for _, v, _ in run], [h for _, _, h in run])
        i += len(run)
    return futures


def _sorted_by_key(records: list[tuple[bytes, bytes, list[Any]]]) -> list[tuple[bytes, bytes, list[Any]]]:
    # Runs of equal keys make the partition order of both paths comparable: the same records, same order.
    return sorted(records, key=lambda r: r[0])


@pytest.mark.parametrize("max_message_bytes", [None, SMALL_MAX_MESSAGE_BYTES])
def test_appender_writes_what_send_writes(kafka_bootstrap: str, max_message_bytes: int | None) -> None:
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    records = _sorted_by_key(_records(1500, 400))
    via_appender = _topic(cfg, "appender", **configs)
    via_send = _topic(cfg, "send", **configs)

    producer = kafka_api.producer(cfg, linger_ms=200)  # batches fill up to well past the small topic limit
    sender = RecordSender(producer)
    assert sender.fast
    futures = _send_runs(sender, via_appender, records)
    assert len(futures) < len(records) // 10  # one future per batch, not per record
    _wait_acked(futures)
    producer.close()

    producer = kafka_api.producer(cfg, linger_ms=200)
    _wait_acked([producer.send(via_send, key=k, value=v, headers=h) for k, v, h in records])
    producer.close()

    got, want = _read(cfg, via_appender), _read(cfg, via_send)
    assert len(want) == len(records)
    assert got == want  # partitions, keys, values, headers, order: nothing lost, nothing twice
    assert {p for p, *_ in got} == set(range(PARTITIONS))


def test_split_of_a_refused_batch_acknowledges_every_record_once(kafka_bootstrap: str, caplog) -> None:
    """kafka-python 3.0 splits a batch the broker refuses (MESSAGE_TOO_LARGE) and re-sends the parts, but never
    completes the refused batch's own future: the appender's acks must follow the parts."""
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic = _topic(cfg, "split", **{"max.message.bytes": str(SMALL_MAX_MESSAGE_BYTES)})
    producer = kafka_api.producer(cfg, linger_ms=500)
    sender = RecordSender(producer)
    values = [f"{i:06d}".encode() + b"x" * 300 for i in range(600)]  # ~190 KB: one batch, ~10x the limit
    caplog.set_level(logging.INFO, logger="tocsin.producers.kafkasend")
    started = time.monotonic()
    futures = sender.send_many(topic, b"one-key", values)
    assert len(futures) == 1  # one batch; the broker refuses it and kafka-python splits it (several times)
    _wait_acked(futures)
    elapsed = time.monotonic() - started
    producer.close()
    assert any("too large" in r.getMessage() for r in caplog.records)
    got = _read(cfg, topic)
    assert [v for _, _, v, _ in got] == values, "lost, duplicated or reordered records"
    assert elapsed < ACK_DEADLINE_S


# -- the internals check ---------------------------------------------------------------------------------------------


def test_check_names_each_difference_of_a_fake_surface(caplog) -> None:
    expected = {"ConsumerRecord._fields": "topic, partition, offset", "Sender.wakeup": "(self)"}
    actual = {"ConsumerRecord._fields": "topic, partition, offset, extra"}
    with caplog.at_level(logging.WARNING, logger="tocsin.core.kafkainternals"):
        assert not kafkainternals.verify("a fast path", expected, actual, "the public API")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.differences == [  # type: ignore[attr-defined]
        "ConsumerRecord._fields: expected topic, partition, offset, found topic, partition, offset, extra",
        "Sender.wakeup: expected (self), found missing",
    ]
    assert kafkainternals.verify("a fast path", expected, dict(expected), "the public API")


def test_the_installed_kafka_python_matches_the_appenders_surface() -> None:
    assert kafkainternals.differences(kafkasend.SURFACE, kafkasend.installed_surface()) == []


def test_a_changed_signature_falls_back_to_send_with_a_warning(kafka_bootstrap: str, monkeypatch, caplog) -> None:
    """A kafka-python whose MemoryRecordsBuilder.append takes another argument: warn, use send(), never raise."""
    from kafka.record.memory_records import MemoryRecordsBuilder

    original = MemoryRecordsBuilder.append

    def append(self: Any, timestamp: Any, key: Any, value: Any, headers: Any = None, extra: Any = None) -> Any:
        return original(self, timestamp, key, value, headers)

    monkeypatch.setattr(MemoryRecordsBuilder, "append", append)
    kafkasend.fast_path_supported.cache_clear()  # the check runs once per process: run it again (and after)
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic = _topic(cfg, "fallback")
    producer = kafka_api.producer(cfg)
    try:
        with caplog.at_level(logging.WARNING, logger="tocsin.core.kafkainternals"):
            sender = RecordSender(producer)
        assert not sender.fast
        (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert record.differences == [  # type: ignore[attr-defined]
            "MemoryRecordsBuilder.append: expected (self, timestamp, key, value, headers=…), "
            "found (self, timestamp, key, value, headers=…, extra=…)"]
        values = [f"r{i}".encode() for i in range(20)]
        futures = sender.send_many(topic, b"k", values, [[("h", b"1")]] * 20)
        assert len(futures) == 20  # send()'s own futures, one per record
        _wait_acked(futures)
    finally:
        producer.close()
        kafkasend.fast_path_supported.cache_clear()
    assert [(v, h) for _, _, v, h in _read(cfg, topic)] == [(v, [("h", b"1")]) for v in values]


def test_a_producer_without_the_accumulator_state_falls_back(kafka_bootstrap: str, caplog) -> None:
    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    producer = kafka_api.producer(cfg)
    try:
        acc = producer._accumulator
        incomplete = acc._incomplete
        del acc._incomplete  # a kafka-python that keeps its in-flight batches elsewhere
        with caplog.at_level(logging.WARNING, logger="tocsin.core.kafkainternals"):
            assert not RecordSender(producer).fast
        assert any("KafkaProducer._accumulator" in d for r in caplog.records
                   for d in getattr(r, "differences", []))
    finally:
        acc._incomplete = incomplete
        producer.close()


def test_shipper_ships_every_line_once_to_a_topic_that_refuses_its_batches(tocsin_config, tmp_path, caplog) -> None:
    """End to end: the shipper's batches (up to 256 KiB) are split by kafka-python; every line arrives once and
    the shipper finishes well before its stall deadline would have re-sent everything."""
    from tests.kafkautil import wait_for
    from tests.producers.shiputil import FAST_SHIP, numbered, running, seq_counts, shipped
    from tocsin.producers.config import LogInputConfig, LogShipConfig
    from tocsin.producers.logship import LogShipper

    # A logs topic created with the small limit (a limit altered later takes effect at some later moment).
    logs = _topic(tocsin_config.kafka, "logs", **{"max.message.bytes": str(SMALL_MAX_MESSAGE_BYTES)})
    kafka = tocsin_config.kafka.model_copy(update={"topics": tocsin_config.kafka.topics.model_copy(
        update={"logs": logs})})
    cfg = tocsin_config.model_copy(update={"kafka": kafka})
    log = tmp_path / "app.log"
    n = 4000
    log.write_text("".join(numbered(i, pad=100) for i in range(n)))
    shipper = LogShipper(cfg, inputs=[LogInputConfig(paths=[str(log)], service="shop")], state_file=False,
                         exit_at_eof=True, settings=LogShipConfig(**FAST_SHIP))
    caplog.set_level(logging.INFO, logger="tocsin.producers.kafkasend")
    with running(shipper):
        wait_for(lambda: shipper.finished, ACK_DEADLINE_S, "every line acknowledged", every_s=0.1)
    assert any("too large" in r.getMessage() for r in caplog.records)  # kafka-python did split batches
    assert shipper.stats.rewinds == 0 and shipper.stats.delivery_failures == 0
    counts = seq_counts(shipped(cfg, expect=n))
    assert set(counts) == set(range(n)) and max(counts.values()) == 1
