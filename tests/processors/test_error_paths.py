"""Error paths lose nothing: a send that raises, a changelog read that times out, a rebalance under /health.

Each against the real broker: records the producer refuses in ``send()``;
an alert changelog too long to read within the configured timeout; a second
processor joining while /health is polled.
"""

from __future__ import annotations

import threading
import time

import requests
from kafka.admin import ConfigResource, ConfigResourceType

from tests.kafkautil import consume_all, produce, wait_for
from tests.processors.test_http_e2e import running_processor
from tocsin.core import kafka as kafka_api
from tocsin.core.events import ALERT_EVENT, METRIC_EVENT, now_us
from tocsin.schemas.codec import default_codec

from .kafkaproc import TEST_RULES, alert_events, processor_config, running
from .test_service import _slow_then_fast

S = 1_000_000
FILLER = 100_000
"""Resolved AlertEvents of other fingerprints on the changelog: reading them takes seconds."""


def _topic_config(cfg, topic: str, **configs: str) -> None:
    admin = kafka_api.admin(cfg.kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                            configs={k.replace("_", "."): v for k, v in configs.items()})])
    finally:
        admin.close()


def test_a_send_that_raises_is_kept_and_sent_again_not_skipped(tocsin_config):
    """``producer.send`` raising (here: a record over max_request_size) must not escape into the batch loop."""
    from tocsin.processors.outbox import Outbox

    topic = tocsin_config.kafka.topics.deadletter
    refusing = kafka_api.producer(tocsin_config.kafka, max_request_size=1024)
    outbox = Outbox(refusing)
    outbox.send(topic, b"k", b"x" * 4096, [("error", b"test")])  # raises inside: kept, not lost
    outbox.send_ordered(tocsin_config.kafka.topics.alerts, b"fp", b"y" * 4096)
    positions = {("t", 0): (10, 1)}
    assert outbox.pump(lambda: positions) is None and outbox.pending == 2 and outbox.failures == 2  # sent again
    assert outbox.pump(lambda: positions) is None and outbox.failures == 4  # still refused: kept, no commit
    outbox.producer = kafka_api.producer(tocsin_config.kafka, max_request_size=1 << 20)  # sending works again
    assert outbox.pump(lambda: positions) is None
    wait_for(lambda: outbox.pump(lambda: positions) == positions, 30, "both acknowledged")
    assert outbox.pending == 0
    assert [m.value for m in consume_all(tocsin_config.kafka, topic, expect=1)] == [b"x" * 4096]
    refusing.close()
    outbox.producer.close()


def _fire_an_alert_and_pad_the_changelog(cfg) -> dict:
    """One processor fires a latency alert for ``checkout`` and stops; then FILLER resolved events follow."""
    produce(cfg.kafka, cfg.kafka.topics.metrics, METRIC_EVENT,
            _slow_then_fast("checkout", now_us() - 10 * S, slow_s=10, fast_s=0))
    with running(cfg) as view:
        firing = wait_for(lambda: [a for a in view.refresh().active if a["state"] == "firing"], 60, "firing")
        wait_for(lambda: view.service.outbox.pending == 0, 30, "transitions published")
    codec = default_codec()
    assert firing
    events = alert_events(cfg)
    base = next(e for e in events if e["state"] == "firing")
    producer = kafka_api.producer(cfg.kafka)
    for i in range(FILLER):
        rec = {**base, "fingerprint": f"filler{i % 1000:04d}", "alert_id": f"filler{i % 1000:04d}-{i}",
               "event_id": f"filler-{i}", "state": "resolved", "labels": {"service": f"filler-{i % 1000}"}}
        producer.send(cfg.kafka.topics.alerts, key=rec["fingerprint"].encode(), value=codec.encode(ALERT_EVENT, rec))
    producer.flush(120)
    producer.close()
    return base


def test_a_changelog_read_timeout_is_retried_and_the_alert_restored(kafka_bootstrap, clickhouse_url, tmp_path):
    # The slow requests stay in a 10-minute window, so the restored alert is still true and must stay as it was:
    # with the tests' 5 s window it would rightly resolve once the restart took longer than that.
    rules = [{**TEST_RULES[0], "window": "10m", "slices": 10}]
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, rules=rules, changelog_timeout_s=1.0,
                           start_without_commit="replay")
    firing = _fire_an_alert_and_pad_the_changelog(cfg)
    before = [e["event_id"] for e in alert_events(cfg) if not e["event_id"].startswith("filler")]
    with running(cfg) as view:
        restored = wait_for(lambda: [a for a in view.refresh().active if a["alert_id"] == firing["alert_id"]], 240,
                            "the firing alert restored")
        retries = view.service.changelog_retries
        assert restored[0]["state"] == "firing"
        time.sleep(3)
    events = [e for e in alert_events(cfg) if not e["event_id"].startswith("filler")]
    after = [e["event_id"] for e in events]
    print(f"\nchangelog of {FILLER + len(before)} events read in 1 s attempts: {retries} retries")
    assert retries >= 1  # the read did time out, and the processor went on
    assert after == before, [(e["state"], e["severity"], e["ts"], e.get("value")) for e in events]  # not recomputed


def test_health_stays_200_through_a_rebalance(kafka_bootstrap, clickhouse_url, tmp_path, monkeypatch):
    import tocsin.processors.view as view_module

    # A snapshot that waits on the loop's lock for a second means the loop is stuck: the changelog read of a
    # rebalance must not hold that lock.
    monkeypatch.setattr(view_module, "STALL_S", 1.0)
    monkeypatch.setattr(view_module, "REFRESH_INTERVAL_S", 0.1)
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path)
    _fire_an_alert_and_pad_the_changelog(cfg)
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["api"] = {"token": "t" * 24, "http_addr": f"127.0.0.1:{_free_port()}", "service_name": "rebalance"}
    cfg = type(cfg).model_validate(data)
    with running_processor(cfg) as proc:
        health = f"{proc.url}/health"
        wait_for(lambda: proc.view.snapshot().partitions and not proc.view.snapshot().replaying
                 and requests.get(health, timeout=5).status_code == 200, 120, "the first processor settled")
        codes: list[int] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                try:
                    codes.append(requests.get(health, timeout=5).status_code)
                except requests.RequestException:
                    codes.append(0)
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            with running(cfg) as second:  # joins the group: both rebalance, both read the changelog
                wait_for(lambda: second.refresh().partitions, 120, "the second processor assigned")
                wait_for(lambda: len(proc.view.snapshot().partitions) < 9, 60, "the first one gave partitions up")
                time.sleep(2)
        finally:
            stop.set()
            poller.join(10)
    print(f"\n/health through a rebalance: {len(codes)} requests, non-200: {len([c for c in codes if c != 200])}")
    assert codes and all(c == 200 for c in codes), sorted(set(codes))


def _free_port() -> int:
    from tests.processors.test_http_e2e import free_port

    return free_port()
