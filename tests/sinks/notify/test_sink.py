"""The notify sink end to end over real Kafka: silences from the control topic, bad records, offsets, contract."""

from __future__ import annotations

import threading
import time

from kafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from tests.kafkautil import consume_all
from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import (
    alert_event,
    produce_alerts,
    produce_control,
    query,
    record,
    running_sink,
    wait_until,
)
from tocsin.core import kafka as kafka_api
from tocsin.core.component import Component
from tocsin.sinks.notify.config import MatcherSpec
from tocsin.sinks.notify.silences import create_event, expire_event
from tocsin.sinks.notify.sink import NotifyCollector, NotifySink, build

notify_env = notify_support.notify_env  # the fixture


def _cfg(notify_env, url):
    return notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": url}],
        "route": {"receiver": "hook", "group_wait_s": 0.2, "group_interval_s": 0.3},
        "inhibit_rules": [],
    })


def test_silence_on_the_control_topic_mutes_then_its_expiry_releases_the_alert(notify_env, httpserver):
    hook = record(httpserver, "/hook")
    cfg = _cfg(notify_env, httpserver.url_for("/hook"))
    silence = create_event([MatcherSpec.parse("service=shop")], 3600, reason="deploy", actor="test")
    produce_control(cfg, [silence])  # before the sink starts: read back from the topic on start
    shop, cart = alert_event("error_rate", "shop"), alert_event("error_rate", "cart")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [shop, cart])
        wait_until(lambda: hook.count() >= 1, what="the unsilenced alert")
        wait_until(lambda: sink.stats().get("silenced", 0) >= 1, what="the silenced one recorded")
        time.sleep(0.5)
        assert [a["labels"]["service"] for b in hook.bodies() for a in b["alerts"]] == ["cart"]
        produce_control(cfg, [expire_event(sink.router.silences.get(silence["silence_id"]), actor="test")])
        wait_until(lambda: hook.count() >= 2, what="the alert once its silence ended")
        wait_until(sink.idle, what="settled")
    assert [a["labels"]["service"] for a in hook.bodies()[1]["alerts"]] == ["shop"]
    rows = query(cfg, "SELECT service, status, error FROM {log} ORDER BY ts")
    assert ("cart", "sent", "") in rows
    assert ("shop", "silenced", f"silence {silence['silence_id']}") in rows
    assert rows[-1] == ("shop", "sent", "")


def test_bad_records_go_to_the_dead_letter_topic_and_offsets_still_advance(notify_env, httpserver):
    hook = record(httpserver, "/hook")
    cfg = _cfg(notify_env, httpserver.url_for("/hook"))
    producer = kafka_api.producer(cfg.kafka)
    producer.send(cfg.kafka.topics.alerts, key=b"x", value=b"not avro at all")
    producer.flush(30)
    producer.close()
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [alert_event("error_rate", "shop")])
        wait_until(lambda: hook.count() >= 1, what="the good alert")
        wait_until(sink.idle, what="settled")
        wait_until(lambda: not sink.tracker.to_commit(), what="offsets committed")
        assert sink.stats()["deadlettered"] == 1
    dead = consume_all(cfg.kafka, cfg.kafka.topics.deadletter, expect=1, timeout_s=30)
    assert dead[0].value == b"not avro at all"
    headers = dict(dead[0].headers)
    assert headers["stage"] == b"sink-notify" and headers["source_topic"] == cfg.kafka.topics.alerts.encode()
    assert b"10-byte header" in headers["error"] or b"c301" in headers["error"]
    consumer = kafka_api.consumer(cfg.kafka, group_id=cfg.notify.group_id)
    parts = consumer.partitions_for_topic(cfg.kafka.topics.alerts)
    committed = sum(consumer.committed(TopicPartition(cfg.kafka.topics.alerts, p)) or 0 for p in parts)
    consumer.close()
    assert committed == 2, "both records settled: one delivered, one dead-lettered"


def test_component_contract_build_connects_nothing_close_twice_step_once(notify_env):
    cfg = notify_env({"receivers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
                      "route": {"receiver": "hook"}})
    nowhere = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9"})})
    build(nowhere).close()  # the constructor only stores the config: no broker needed
    sink = build(cfg)
    assert isinstance(sink, NotifySink) and isinstance(sink, Component)
    sink.close()
    sink.close()  # idempotent, even never started
    with NotifySink(cfg) as started:
        started.step(poll_ms=100)
        assert started.stats()["receivers"]["hook"]["queued"] == 0
        registry = CollectorRegistry()
        registry.register(NotifyCollector(started))
        text = generate_latest(registry).decode()
    started.close()
    for line in ('tocsin_sink_notify_deliveries_total{outcome="sent",receiver="hook"} 0.0',
                 'tocsin_sink_notify_attempts_total{receiver="hook"} 0.0',
                 'tocsin_sink_notify_queued{receiver="hook"} 0.0',
                 'tocsin_sink_notify_transitions_total{decision="silenced"} 0.0',
                 "tocsin_sink_notify_unsettled_transitions 0.0"):
        assert line in text


def test_a_rebalance_that_keeps_the_partitions_loses_no_transition_and_repeats_none(notify_env, httpserver):
    """kafka-python keeps a kept partition's position across an eager rebalance; the sink drops what it had
    read past the commit, so it must read it again (before the rewind, the firing notification was lost)."""
    hook = record(httpserver, "/hook")
    cfg = notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")}],
        "route": {"receiver": "hook", "group_wait_s": 4, "group_interval_s": 0.3},  # still grouping at the rebalance
        "inhibit_rules": [],
    })
    other = notify_env({"receivers": [], "route": {"receiver": None}, "inhibit_rules": []}).kafka.topics.alerts
    done = threading.Event()

    def second_member() -> None:
        """Another member of the group, on another topic: the group rebalances, ours stay with the sink.
        It polls until the end, as a live member must (a member that stops polling holds up every rejoin)."""
        joiner = kafka_api.consumer(cfg.kafka, group_id=cfg.notify.group_id)
        try:
            joiner.subscribe([other])
            while not done.is_set():
                joiner.poll(timeout_ms=200)
        finally:
            joiner.close()

    with running_sink(cfg) as sink:
        wait_until(lambda: sink._consumer.assignment(), what="the partitions")
        produce_alerts(cfg, [alert_event("error_rate", "shop")])
        wait_until(lambda: sink.stats().get("transitions", 0) >= 1, what="the transition read and grouping")
        member = threading.Thread(target=second_member, name="second-member", daemon=True)
        member.start()
        try:
            wait_until(lambda: sink.stats().get("rebalances", 0) >= 1, what="the rebalance")
            wait_until(lambda: hook.count() >= 1, what="the firing notification after the rebalance")
            wait_until(sink.idle, what="settled")
            time.sleep(1.0)  # a repeat of the re-read transition would show up by now
        finally:
            done.set()
            member.join(30)
    assert [a["labels"]["service"] for b in hook.bodies() for a in b["alerts"]] == ["shop"]
