"""The processor service on the real broker: poison input, manual resolve, restart, heartbeats, accessors."""

from __future__ import annotations

import os
import random
import time

from kafka import KafkaProducer

from tests.kafkautil import consume_all, produce, wait_for
from tocsin.core import kafka as kafka_api
from tocsin.core.events import LOG_EVENT, METRIC_EVENT, now_us
from tocsin.processors.view import ServiceView
from tocsin.schemas.codec import MAGIC, default_codec

from .kafkaproc import alert_events, processor_config, running

S = 1_000_000


def _metric(ts: int, value: float, service: str = "shop", name: str = "api_response_time") -> dict:
    return {"event_id": f"{service}-{name}-{ts}", "ts": ts, "service": service, "host": "h1", "name": name,
            "value": value, "unit": "ms", "labels": {}}


def _slow_then_fast(service: str, start: int, slow_s: float, fast_s: float, per_s: int = 20) -> list[dict]:
    n_slow, n_fast = int(slow_s * per_s), int(fast_s * per_s)
    step = S // per_s
    return ([_metric(start + i * step, 900.0, service) for i in range(n_slow)]
            + [_metric(start + (n_slow + i) * step, 50.0, service) for i in range(n_fast)])


def test_poison_goes_to_the_deadletter_topic_with_reasons_and_good_events_are_processed(
        kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path)
    topics = cfg.kafka.topics
    codec = default_codec()
    rng = random.Random(5)
    base = now_us()
    good = [_metric(base + i * 1000, 100.0 + i, f"svc-{i % 4}") for i in range(200)]
    body = codec.encode(METRIC_EVENT, good[0])[10:]
    poison = {
        "random bytes": bytes(rng.getrandbits(8) for _ in range(64)),
        "unknown fingerprint": MAGIC + os.urandom(8) + body,
        "absurd value": codec.encode(METRIC_EVENT, {**good[0], "event_id": "nan", "value": float("nan")}),
        "absurd timestamp": codec.encode(METRIC_EVENT, {**good[0], "event_id": "old", "ts": 1}),
        "wrong schema": codec.encode(LOG_EVENT, {"event_id": "x", "ts": base, "service": "svc-0", "host": "h",
                                                 "level": "ERROR", "message": "on the wrong topic"}),
        "empty": b"",
    }
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i, rec in enumerate(good):
        producer.send(topics.metrics, key=rec["service"].encode(), value=codec.encode(METRIC_EVENT, rec))
        if i % 40 == 20:
            for value in poison.values():
                producer.send(topics.metrics, key=b"svc-1", value=value)
    producer.flush()
    producer.close()
    with running(cfg) as view:
        assert isinstance(view, ServiceView)
        wait_for(lambda: view.refresh().counters.processed.get(topics.metrics, 0) >= len(good), 60, "good events")
        counters = view.refresh().counters
        n_bad = len(poison) * 5
        wait_for(lambda: view.refresh().counters.dead_lettered >= n_bad, 30, "dead letters")
        assert counters.processed[topics.metrics] == len(good)
        assert view.refresh().counters.consumed[topics.metrics] == len(good) + n_bad
        assert view.refresh().counters.decode_errors == 3 * 5  # random bytes, unknown fingerprint, empty
    letters = consume_all(cfg.kafka, topics.deadletter, expect=n_bad, timeout_s=30)
    assert len(letters) == n_bad
    errors = [dict(m.headers)["error"].decode() for m in letters]
    for needle in ("not Avro single-object", "unknown writer schema fingerprint", "absurd metric value",
                   "absurd timestamp", "a LogEvent on the metrics topic", "shorter than the 10-byte header"):
        assert sum(needle in e for e in errors) == 5, needle
    for m in letters:
        h = dict(m.headers)
        assert h["source_topic"].decode() == topics.metrics
        assert int(h["source_offset"]) >= 0 and h["stage"] in (b"decode", b"validate")
    assert {m.value for m in letters} == set(poison.values()), "the original bytes, untouched"


def test_alert_fires_resolves_by_hand_and_a_restart_emits_nothing_twice(kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path)
    start = now_us() - 10 * S
    assert produce(cfg.kafka, cfg.kafka.topics.metrics, METRIC_EVENT,
                   _slow_then_fast("checkout", start, slow_s=10, fast_s=0.1)) > 0
    with running(cfg) as view:
        firing = wait_for(lambda: [a for a in view.refresh().active if a["state"] == "firing"], 60, "firing alert")
        alert = firing[0]
        assert alert["rule"] == "latency" and alert["labels"]["service"] == "checkout"
        assert alert["annotations"]["summary"].startswith("checkout p95 9")
        assert view.resolve(alert["alert_id"], "deploy rolled back", "alice") == "accepted"
        wait_for(lambda: not view.refresh().active, 30, "manual resolve applied")
        assert view.resolve(alert["alert_id"], "again", "alice") == "already_resolved"
        assert view.resolve("0123456789abcdef-1", "?", "alice") == "unknown"
        history = view.refresh().history
        assert history[0]["state"] == "resolved" and history[0]["resolved_by"] == "alice"
        assert view.refresh().counters.engine["control_applied"] == 1
    before = alert_events(cfg)
    assert [(e["state"], e["severity"]) for e in before] == [("pending", "warning"), ("firing", "warning"),
                                                              ("resolved", "none")]
    # A second process (clean restart) replays the same input and must not repeat any of it.
    with running(cfg) as view:
        wait_for(lambda: view.refresh().partitions and not view.snapshot().replaying,
                 60, "replay")
        time.sleep(3)
    after = alert_events(cfg)
    assert [e["event_id"] for e in after] == [e["event_id"] for e in before]


def test_heartbeats_lag_and_health_are_exposed(kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, heartbeat_interval_s=1)
    ts = now_us()
    health = [{"event_id": f"h{i}", "ts": ts + i, "service": "shop", "host": "h1", "check": c,
               "status": "healthy" if i < 2 else "unhealthy", "response_time_ms": 3.0, "details": {}, "error": None}
              for i, c in enumerate(["database", "cache", "database"])]
    produce(cfg.kafka, cfg.kafka.topics.health, "HealthEvent", health)
    with running(cfg) as view:
        def probes():  # the processor's own heartbeats show up as heartbeat:<component> entries too
            return [h for h in view.refresh().health if not h["check"].startswith("heartbeat:")]

        wait_for(lambda: len(probes()) == 2, 60, "health events")
        latest = {h["check"]: h["status"] for h in probes()}
        assert latest == {"database": "unhealthy", "cache": "healthy"}
        wait_for(lambda: any(h["check"] == "heartbeat:processor" for h in view.refresh().health), 30,
                 "the processor's heartbeat in its health entries")
        wait_for(lambda: view.refresh().lag and not any(view.snapshot().lag.values()), 30, "zero lag")
        assert len(view.snapshot().lag) == 9  # logs, metrics, health x 3 partitions
        assert view.snapshot().consuming() and view.snapshot().kafka and view.snapshot().uptime_s() > 0
        beats = wait_for(lambda: [m for m in consume_all(cfg.kafka, cfg.kafka.topics.metrics, idle_s=1)
                                  if b"tocsin_heartbeat" in m.value], 30, "heartbeat")
        name, rec = default_codec().decode(beats[0].value)
        assert (name, rec["service"], rec["value"]) == (METRIC_EVENT, "tocsin-processor", 1.0)
        hist = view.refresh().counters.latency
        assert hist.count >= 1 and hist.buckets[-1][1] <= hist.count


def test_control_topic_garbage_is_dead_lettered(kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path)
    with running(cfg) as view:
        producer = kafka_api.producer(cfg.kafka)
        producer.send(cfg.kafka.topics.control, key=b"x", value=b"\x00garbage").get(timeout=30)
        producer.close()
        wait_for(lambda: view.refresh().counters.dead_lettered == 1, 30, "control garbage dead-lettered")
    letters = consume_all(cfg.kafka, cfg.kafka.topics.deadletter, expect=1, timeout_s=30)
    assert dict(letters[0].headers)["stage"] == b"control"


def test_partition_for_agrees_with_the_producers_partitioner(tocsin_config):
    """Restoring alerts computes which partition carries a service; it must be where agents put it."""
    from tocsin.processors.service import partition_for

    topic = tocsin_config.kafka.topics.logs
    services = [f"svc-{i}" for i in range(30)]
    produce(tocsin_config.kafka, topic, LOG_EVENT,
            [{"event_id": s, "ts": now_us(), "service": s, "host": "h", "level": "INFO", "message": "m"}
             for s in services])
    got = {m.key.decode(): m.partition for m in consume_all(tocsin_config.kafka, topic, expect=len(services))}
    assert got == {s: partition_for(s, 3) for s in services}
