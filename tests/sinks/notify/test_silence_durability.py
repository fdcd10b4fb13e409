"""Silences last as long as they say, whatever the control topic's retention, and survive restarts.

A 5-day silence goes to the compacted silences topic; an "older release" silence
of the same length goes to the control topic. Both topics get a retention of one
second (segments rolled every second, the test broker checks retention every
5 s), and the test waits until the broker has really deleted the control
topic's records. Then every service that reads silences is restarted: the
processor with its HTTP API (``/api/silences`` lists them; the processor itself
only publishes control events and keeps no silence) and the notify sink (the one
that mutes). The API still lists the 5-day silence, the restarted sink still
mutes with it, and the control-topic one is gone: the failure the silences topic
exists to prevent, shown to happen on this broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import requests
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from tests.conftest import make_config, unique
from tests.processors.test_http_e2e import AUTH, TOKEN, free_port, running_processor, wait_for
from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, query, record, running_sink, wait_until
from tocsin.core import kafka as kafka_api
from tocsin.core.events import CONTROL_EVENT
from tocsin.schemas.codec import default_codec
from tocsin.sinks.notify.config import MatcherSpec
from tocsin.sinks.notify.silence_api import silence_router
from tocsin.sinks.notify.silences import create_event, publish, read_store

notify_env = notify_support.notify_env  # the fixture
FIVE_DAYS_S = 5 * 86400
SHORT = {"retention.ms": "1000", "segment.ms": "1000"}


def _shorten_retention(cfg, *topics: str) -> None:
    admin = kafka_api.admin(cfg.kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs=SHORT) for t in topics])
    finally:
        admin.close()


def _log_starts(cfg, topic: str) -> dict[int, int]:
    consumer = kafka_api.consumer(cfg.kafka, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in consumer.beginning_offsets(tps).items()}
    finally:
        consumer.close()


@contextlib.contextmanager
def _processor_with_api(cfg) -> Iterator[str]:
    """The processor service and its HTTP API with /api/silences, over ``cfg``'s topics; yields the API's URL."""
    own = make_config(cfg.kafka.bootstrap_servers, cfg.clickhouse.url,
                      api={"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}", "service_name": "durability"},
                      processor={"group_id": unique("durability")})
    own = own.model_copy(update={"kafka": cfg.kafka, "clickhouse": cfg.clickhouse, "notify": cfg.notify})
    with running_processor(own, scoped_routers=[lambda require: silence_router(own.kafka, require)]) as running:
        yield running.url


def _listed(url: str) -> dict[str, dict]:
    r = requests.get(f"{url}/api/silences", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["silences"]}


def test_five_day_silence_outlives_control_topic_retention_and_a_restart_of_every_service(notify_env, httpserver):
    hook = record(httpserver, "/hook")
    cfg = notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")}],
        "route": {"receiver": "hook", "group_by": ["service", "rule"], "group_wait_s": 0, "group_interval_s": 0.3},
        "inhibit_rules": [],
    })
    topics = cfg.kafka.topics
    durable = create_event([MatcherSpec.parse("service=shop")], FIVE_DAYS_S, reason="migration week", actor="alice")
    publish(cfg.kafka, topics.silences, durable)
    legacy = create_event([MatcherSpec.parse("service=cart")], FIVE_DAYS_S, reason="old release", actor="bob")
    codec = default_codec()
    producer = kafka_api.producer(cfg.kafka)
    legacy_md = producer.send(topics.control, key=legacy["silence_id"].encode(),
                              value=codec.encode(CONTROL_EVENT, legacy)).get(timeout=30)

    with _processor_with_api(cfg) as url, running_sink(cfg) as sink:  # both silences mute before retention passes
        produce_alerts(cfg, [alert_event("error_rate", "shop"), alert_event("error_rate", "cart")])
        wait_until(lambda: sink.stats().get("silenced", 0) >= 2, what="both alerts silenced")
        wait_until(sink.idle, what="settled")
        assert {durable["silence_id"], legacy["silence_id"]} <= set(wait_for("the API up", lambda: _listed(url)))
    assert hook.count() == 0

    _shorten_retention(cfg, topics.control, topics.silences)
    filler = create_event([MatcherSpec.parse("service=none")], 60, reason="filler", actor="test")

    def control_record_deleted() -> bool:
        # New records roll the segments (segment.ms applies on append); the broker then deletes old ones.
        for topic in (topics.control, topics.silences):
            for p in range(topics.partitions):
                producer.send(topic, key=b"filler", value=codec.encode(CONTROL_EVENT, filler), partition=p)
        producer.flush(30)
        return _log_starts(cfg, topics.control)[legacy_md.partition] > legacy_md.offset

    # 420 s: a broker other than the test one (KAFKA_BOOTSTRAP_SERVERS) checks retention every 5 min.
    wait_until(control_record_deleted, timeout_s=420, interval_s=1.0,
               what="the broker deleting the control topic's silence by retention")
    producer.close()
    store = read_store(cfg.kafka)
    kept = store.get(durable["silence_id"])
    assert kept is not None and kept.actor == "alice" and kept.reason == "migration week"
    assert kept.ends_at_us - kept.starts_at_us == FIVE_DAYS_S * 1_000_000
    assert store.get(legacy["silence_id"]) is None  # retention took it: what the old design lost

    shop = alert_event("p95_latency", "shop", severity="critical")
    cart = alert_event("p95_latency", "cart", severity="critical")
    # every service that reads silences restarted: the processor's API lists it, the notify sink mutes with it
    with _processor_with_api(cfg) as url, running_sink(cfg) as sink:
        listed = wait_for("the restarted API", lambda: _listed(url))
        assert durable["silence_id"] in listed and legacy["silence_id"] not in listed
        again = listed[durable["silence_id"]]
        assert again["created_by"] == "alice" and again["comment"] == "migration week" and again["state"] == "active"
        produce_alerts(cfg, [shop, cart])
        wait_until(lambda: hook.count() >= 1, what="the alert no silence covers any more")
        wait_until(lambda: sink.stats().get("silenced", 0) >= 1, what="the 5-day silence muting after restart")
        wait_until(sink.idle, what="settled")
    assert [a["labels"]["service"] for b in hook.bodies() for a in b["alerts"]] == ["cart"]
    rows = query(cfg, f"SELECT status, error FROM {{log}} WHERE alert_id = '{shop['alert_id']}'")
    assert rows == [("silenced", f"silence {durable['silence_id']}")]


def test_planned_silence_mutes_only_from_its_start_and_all_four_operators_match():
    from tocsin.sinks.notify.config import NotifyConfig
    from tocsin.sinks.notify.routing import Router, Transition
    from tocsin.sinks.notify.silences import parse_start

    t0 = 1_800_000_000.0
    start = parse_start("+2h", now_s=t0)
    assert start == int((t0 + 7200) * 1e6)
    expected = int(datetime(2027, 1, 15, 21, tzinfo=UTC).timestamp() * 1e6)
    assert parse_start("2027-01-15T22:00+01:00", now_s=t0) == expected
    assert parse_start("2027-01-15T21:00", now_s=t0) == parse_start("2027-01-15T21:00Z", now_s=t0)  # naive = UTC
    router = Router(NotifyConfig.model_validate({
        "receivers": [{"name": "hook", "type": "webhook", "url": "http://h/"}],
        "route": {"receiver": "hook", "group_wait_s": 0, "group_interval_s": 1}, "inhibit_rules": []}))
    matchers = [MatcherSpec.parse(m) for m in ("service=shop", "env!=dev", "rule=~error_.*", 'host!~"test-.*"')]
    router.silences.apply(create_event(matchers, 3600, reason="maintenance", actor="carol", start_us=start))
    before = Transition(alert_event("error_rate", "shop", labels={"env": "prod", "host": "web-1"}), "p", 0)
    router.add(before, t0)
    out, settled = router.flush(t0)
    assert len(out) == 1 and not settled  # planned, not yet started
    router.delivered(out[0], True, t0)
    cases = (({"env": "prod", "host": "web-1"}, True), ({"env": "dev", "host": "web-1"}, False),
             ({"env": "prod", "host": "test-3"}, False))
    for i, (labels, muted) in enumerate(cases):
        now = t0 + 7300 + 10 * i
        t = Transition(alert_event("error_rate", "shop", labels=labels), "p", 1)
        router.add(t, now)
        out, settled = router.flush(now)
        assert bool(settled) is muted and bool(out) is not muted, labels
        for o in out:
            router.delivered(o, True, now)


def test_an_expire_read_before_its_create_keeps_the_silence_expired():
    from tocsin.sinks.notify.silences import SilenceStore, expire_event

    create = create_event([MatcherSpec.parse("service=shop")], FIVE_DAYS_S, reason="r", actor="alice")
    first = SilenceStore()
    first.apply(create)
    expire = expire_event(first.get(create["silence_id"]), actor="dave")
    store = SilenceStore()
    assert store.apply(expire) is None  # the expire record alone is the whole silence
    assert store.apply(create) is None  # then the create, from the control topic of an older release
    s = store.get(create["silence_id"])
    assert s.ends_at_us == expire["ends_at"] and s.actor == "alice" and s.expired_by == "dave"
