"""The ClickHouse sink against the real broker and engine: routing, dead letters, recovery of a
recorded range after a crash, and an outage; plus the pure framing helpers."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import fastavro
import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.conftest import make_config
from tests.kafkautil import consume_all, wait_for
from tocsin.core import kafka as kafka_api
from tocsin.core.errors import DecodeError, StoreError
from tocsin.core.events import ALERT_EVENT, CONTROL_EVENT, HEALTH_EVENT, LOG_EVENT, METRIC_EVENT, now_us
from tocsin.schemas.codec import HEADER_LEN, default_codec
from tocsin.sinks.clickhouse.ingest import FaultSwitch, Framer, Group, IngestWriter, container, read_long
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.clickhouse.sink import PENDING_PREFIX, ClickHouseSink, pending_end


def _log(i: int, base: int, service: str = "shop") -> dict:
    return {"event_id": f"log-{i}", "ts": base + i, "service": service, "host": "h1",
            "level": "ERROR" if i % 5 == 0 else "INFO", "logger": "app", "message": f"line {i}",
            "trace_id": None if i % 2 else f"trace-{i}", "attrs": {"n": str(i)}}


@contextmanager
def running(sink: ClickHouseSink) -> Iterator[ClickHouseSink]:
    sink.start()
    thread = threading.Thread(target=sink.run, name="test-sink")
    thread.start()
    try:
        yield sink
    finally:
        sink.stop()
        thread.join(60)
        sink.close()
        assert not thread.is_alive()


def _count(client, db: str, table: str) -> int:
    return client.query(f"SELECT count() FROM `{db}`.`{table}`").result_rows[0][0]


def _committed(cfg, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    admin = kafka_api.admin(cfg.kafka)
    try:
        got = admin.list_group_offsets(cfg.sink_clickhouse.group_id).get(cfg.sink_clickhouse.group_id, {})
    finally:
        admin.close()
    return {tp: got[tp].offset for tp in tps if tp in got}


@pytest.fixture
def sink_config(kafka_bootstrap, clickhouse_url):
    cfg = make_config(kafka_bootstrap, clickhouse_url, sink_clickhouse={
        "batch_max_age_s": 0.3, "retry_backoff_initial_s": 0.1, "retry_backoff_max_s": 0.5,
        "session_timeout_ms": 6000,
    })
    # Each test its own consumer group: several tests (and engineers) share the broker.
    cfg = cfg.model_copy(update={"sink_clickhouse": cfg.sink_clickhouse.model_copy(
        update={"group_id": f"{cfg.clickhouse.database}-sink"})})
    kafka_api.create_topics(cfg.kafka)
    yield cfg
    from tocsin.core.clickhouse import connect

    connect(cfg.clickhouse).command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")


def test_every_kind_of_event_lands_once_and_bad_records_go_to_the_dead_letter_topic(sink_config):
    cfg, t = sink_config, sink_config.kafka.topics
    codec = default_codec()
    base = now_us()
    producer = kafka_api.producer(cfg.kafka)
    for i in range(300):  # single events
        producer.send(t.logs, key=b"shop", value=codec.encode(LOG_EVENT, _log(i, base)))
    for start in range(300, 1300, 100):  # batches, as agents send them
        producer.send(t.logs, key=b"cart", value=codec.encode_batch(LOG_EVENT, [_log(i, base, "cart")
                                                                               for i in range(start, start + 100)]))
    metrics = [{"event_id": f"m{i}", "ts": base + i, "service": "shop", "host": "h1", "name": "api_response_time",
                "value": float(i), "unit": "ms", "labels": {"route": "/x"}} for i in range(200)]
    producer.send(t.metrics, key=b"shop", value=codec.encode_batch(METRIC_EVENT, metrics))
    producer.send(t.health, key=b"shop", value=codec.encode(HEALTH_EVENT, {
        "event_id": "h1", "ts": base, "service": "shop", "host": "h1", "check": "database", "status": "unhealthy",
        "response_time_ms": None, "details": {"query_time_ms": "12"}, "error": None}))
    producer.send(t.alerts, key=b"fp", value=codec.encode(ALERT_EVENT, {
        "event_id": "a1", "ts": base, "alert_id": "A1", "fingerprint": "fp", "rule": "error_rate",
        "severity": "critical", "state": "firing", "labels": {"service": "shop"}, "started_at": base}))
    # Three kinds of bad input: not an event, an event the sink does not store, a truncated body.
    producer.send(t.logs, key=b"shop", value=b"plain text, not avro")
    producer.send(t.logs, key=b"shop", value=codec.encode(CONTROL_EVENT, {"event_id": "c1", "ts": base,
                                                                          "action": "resolve"}))
    producer.send(t.logs, key=b"shop", value=codec.encode(LOG_EVENT, _log(9999, base))[:-6])
    for i in range(300, 310):  # good events after the bad ones, same partition
        producer.send(t.logs, key=b"shop", value=codec.encode(LOG_EVENT, _log(i + 5000, base)))
    producer.flush(60)
    producer.close()

    from tocsin.core.clickhouse import connect

    client, db = connect(cfg.clickhouse), cfg.clickhouse.database
    with running(ClickHouseSink(cfg)) as sink:
        wait_for(lambda: sink.stats["deadlettered"] >= 3 and _count(client, db, "logs") >= 1310, 60, "all logs",
                 every_s=0.1)
        wait_for(lambda: _count(client, db, "metrics") == 200 and _count(client, db, "alerts") == 1, 30,
                 "the rest", every_s=0.1)
    assert _count(client, db, "logs") == 1310
    assert client.query(f"SELECT uniqExact(event_id), countIf(trace_id = ''), sum(toUInt32(attrs['n'])) "
                        f"FROM `{db}`.logs").result_rows == [(1310, 650 + 5, sum(range(1300)) + sum(
                            range(5300, 5310)))]
    assert client.query(f"SELECT uniqExactMerge(events) FROM `{db}`.log_counts_1m").result_rows == [(1310,)]
    assert client.query(f"SELECT uniqExactMerge(samples), max(value_max) FROM `{db}`.metrics_1m").result_rows \
        == [(200, 199.0)]
    assert client.query(f"SELECT status, response_time_ms, error, details FROM `{db}`.health_checks").result_rows \
        == [("unhealthy", None, "", {"query_time_ms": "12"})]
    assert client.query(f"SELECT service, state, ended_at FROM `{db}`.alerts").result_rows == [("shop", "firing",
                                                                                                  None)]
    dead = consume_all(cfg.kafka, t.deadletter, expect=3, timeout_s=30)
    reasons = sorted(dict(m.headers)["error"].decode() for m in dead)
    assert len(dead) == 3
    assert any("shorter than the 10-byte header" in r or "not Avro" in r for r in reasons)
    assert any("a ControlEvent on the logs topic (expected LogEvent)" in r for r in reasons)  # as the processor
    assert any("body does not decode" in r for r in reasons)
    assert all(dict(m.headers)["stage"] == b"sink-clickhouse" for m in dead)
    tps = [TopicPartition(topic, p) for topic in (t.logs, t.metrics, t.health, t.alerts) for p in range(3)]
    probe = kafka_api.consumer(cfg.kafka, group_id=None)
    ends = probe.end_offsets(tps)
    probe.close()
    assert _committed(cfg, tps) == {tp: end for tp, end in ends.items() if end > 0}


def test_a_range_recorded_before_a_crash_is_reformed_whole_so_its_tokens_match(sink_config):
    """Simulates a sink killed after inserting offsets 0..599 and before committing them."""
    cfg, t = sink_config, sink_config.kafka.topics
    codec = default_codec()
    base = now_us()
    tp = TopicPartition(t.logs, 0)
    producer = kafka_api.producer(cfg.kafka)
    values = [codec.encode(LOG_EVENT, _log(i, base)) for i in range(1000)]
    for v in values:
        producer.send(t.logs, partition=0, key=b"shop", value=v)
    producer.flush(60)
    producer.close()

    from tocsin.core.clickhouse import connect

    client, db = connect(cfg.clickhouse), cfg.clickhouse.database
    migrate(client, db)
    framer = Framer()
    writer = framer.frame(values[0])[0]
    crashed = Group(writer, f"tocsin:{t.logs}:0:0-599:{writer.fingerprint.hex()}")
    for off, v in enumerate(values[:600]):
        crashed.bodies.append(v[HEADER_LEN:])
        crashed.offsets.append(off)
        crashed.keys.append(b"shop")
        crashed.values.append(v)
    assert IngestWriter(client, db).insert(crashed) == []
    consumer = kafka_api.consumer(cfg.kafka, group_id=cfg.sink_clickhouse.group_id)
    consumer.commit({tp: OffsetAndMetadata(0, f"{PENDING_PREFIX}599", -1)})
    consumer.close()
    assert _count(client, db, "logs") == 600

    # Batches of 64 would cut 0..599 differently: only the recorded range keeps the tokens equal.
    small = cfg.model_copy(update={"sink_clickhouse": cfg.sink_clickhouse.model_copy(update={"batch_max_rows": 64})})
    with running(ClickHouseSink(small)) as sink:
        wait_for(lambda: _committed(cfg, [tp]).get(tp) == 1000, 60, "offset 1000 committed", every_s=0.1)
        assert sink.stats["recovered_ranges"] == 1
    assert client.query(f"SELECT count(), uniqExact(event_id) FROM `{db}`.logs").result_rows == [(1000, 1000)]
    assert client.query(f"SELECT uniqExactMerge(events) FROM `{db}`.log_counts_1m").result_rows == [(1000,)]


def test_an_outage_pauses_the_consumer_and_retries_until_clickhouse_is_back(sink_config, tmp_path, monkeypatch):
    cfg, t = sink_config, sink_config.kafka.topics
    flag = tmp_path / "clickhouse-down"
    flag.touch()
    monkeypatch.setenv("TOCSIN_FAULT_CLICKHOUSE_FILE", str(flag))
    codec = default_codec()
    base = now_us()
    producer = kafka_api.producer(cfg.kafka)
    for start in range(0, 5000, 50):
        producer.send(t.logs, key=f"s{start % 3}".encode(),
                      value=codec.encode_batch(LOG_EVENT, [_log(i, base) for i in range(start, start + 50)]))
    producer.flush(60)
    producer.close()

    from tocsin.core.clickhouse import connect

    client, db = connect(cfg.clickhouse), cfg.clickhouse.database
    with running(ClickHouseSink(cfg)) as sink:
        wait_for(lambda: sink.stats["insert_failures"] >= 3, 30, "failed inserts", every_s=0.1)
        assert sink._paused, "the consumer must be paused while inserts fail"
        assert sink.stats["batches"] == 0
        assert _count(client, db, "logs") == 0
        flag.unlink()
        wait_for(lambda: _count(client, db, "logs") >= 5000, 30, "all rows after the outage", every_s=0.1)
        wait_for(lambda: not sink._paused, 10, "resume", every_s=0.1)
    assert client.query(f"SELECT count(), uniqExact(event_id) FROM `{db}`.logs").result_rows == [(5000, 5000)]


# -- pure helpers ----------------------------------------------------------------------


def test_container_is_a_valid_avro_file_with_one_block_per_message():
    codec = default_codec()
    records = [_log(i, 1_700_000_000_000_000) for i in range(3)]
    bodies = [codec.encode(LOG_EVENT, r)[HEADER_LEN:] for r in records]
    schema = codec.registry.latest("LogEvent").source
    blob = container(json.dumps(schema), bodies)
    assert [r["event_id"] for r in fastavro.reader(io.BytesIO(blob))] == ["log-0", "log-1", "log-2"]
    assert blob.count(blob[-16:]) == 1 + len(bodies)  # sync marker after the header and after each block


def test_framer_counts_batch_events_and_rejects_what_it_cannot_store():
    codec = default_codec()
    framer = Framer()
    writer, _body, events = framer.frame(codec.encode_batch(LOG_EVENT, [_log(i, 0) for i in range(37)]))
    assert (writer.record, writer.ingest_table, events) == ("LogBatch", "logs_batch_in", 37)
    assert framer.frame(codec.encode(LOG_EVENT, _log(1, 0)))[2] == 1
    for bad, reason in [(b"", "shorter"), (b"\x00" * 20, "not Avro"), (b"\xc3\x01" + b"\x00" * 12, "unknown"),
                        (codec.encode(CONTROL_EVENT, {"event_id": "c", "ts": 0, "action": "resolve"}), "not stored")]:
        with pytest.raises(DecodeError, match=reason):
            framer.frame(bad)


def test_read_long_and_pending_metadata():
    assert read_long(bytes([0x02])) == 1 and read_long(bytes([0x01])) == -1 and read_long(bytes([0xC8, 0x01])) == 100
    with pytest.raises(DecodeError):
        read_long(bytes([0x80]))
    assert pending_end(f"{PENDING_PREFIX}41") == 41
    assert pending_end("") is None and pending_end(None) is None and pending_end("something else") is None


def test_fault_switch_is_off_unless_set(tmp_path):
    assert not FaultSwitch({}).active()
    assert FaultSwitch({"TOCSIN_FAULT_CLICKHOUSE_UNTIL": str(time.time() + 60)}).active()
    assert not FaultSwitch({"TOCSIN_FAULT_CLICKHOUSE_UNTIL": str(time.time() - 1)}).active()
    flag = tmp_path / "down"
    switch = FaultSwitch({"TOCSIN_FAULT_CLICKHOUSE_FILE": str(flag)})
    assert not switch.active()
    flag.touch()
    with pytest.raises(StoreError, match="fault injected"):
        switch.check()
