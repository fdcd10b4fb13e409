"""One validation for every stage: the processor and the ClickHouse sink dead-letter a poison set alike (same
records, same reasons, same bytes), and nothing forged reaches the ``alerts`` table."""

from __future__ import annotations

import math

import pytest

from tests.conftest import unique
from tests.kafkautil import consume_all, wait_for
from tests.processors.test_http_e2e import processor_config, running_processor
from tests.sinks.clickhouse.test_sink import running
from tocsin.core import kafka as kafka_api
from tocsin.core.clickhouse import connect
from tocsin.core.events import ALERT_EVENT, CONTROL_EVENT, HEALTH_EVENT, LOG_EVENT, METRIC_EVENT, now_us
from tocsin.core.validation import event_reason, record_reason, screen
from tocsin.schemas.codec import default_codec
from tocsin.sinks.clickhouse.sink import ClickHouseSink


def _log(i: int, ts: int, service: str = "shop") -> dict:
    return {"event_id": unique(f"l{i}"), "ts": ts, "service": service, "host": "h", "level": "ERROR",
            "logger": "app", "message": f"line {i}", "trace_id": None, "attrs": {}}


def _metric(value: float, ts: int, name: str = "cpu") -> dict:
    return {"event_id": unique("m"), "ts": ts, "service": "shop", "host": "h", "name": name, "value": value,
            "unit": "%", "labels": {}}


def _health(rt: float | None, ts: int) -> dict:
    return {"event_id": unique("h"), "ts": ts, "service": "shop", "host": "h", "check": "db", "status": "healthy",
            "response_time_ms": rt, "details": {}, "error": None}


def _alert(ts: int, **kw) -> dict:
    return {"event_id": unique("a"), "ts": ts, "alert_id": "forged-1", "fingerprint": "fp", "rule": "error_rate",
            "severity": "critical", "previous_severity": "none", "state": "firing", "previous_state": "pending",
            "value": 99.0, "threshold": 5.0, "labels": {"service": "forged"}, "annotations": {}, "started_at": ts,
            "ended_at": None, "resolved_by": None, **kw}


@pytest.mark.parametrize("kind, rec, reason", [
    ("logs", {"ts": 0, "service": "s"}, "absurd timestamp 0: before 2000-01-01"),
    ("logs", {"ts": 2 * 10**15, "service": " "}, "empty service"),
    ("metrics", {"ts": 2 * 10**15, "service": "s", "value": math.nan, "name": "x"}, "absurd metric value nan for 'x'"),
    ("metrics", {"ts": 2 * 10**15, "service": "s", "value": math.inf, "name": "x"}, "absurd metric value inf for 'x'"),
    ("health", {"ts": 2 * 10**15, "service": "s", "response_time_ms": -1.0}, "absurd response_time_ms -1.0"),
    ("alerts", _alert(2 * 10**15, value=math.nan), "alert value nan is not a finite number"),
    ("alerts", _alert(2 * 10**15, state="hacked"), "unknown alert state 'hacked'"),
    ("alerts", _alert(2 * 10**15, alert_id=""), "alert without alert_id"),
])
def test_event_reasons(kind, rec, reason):
    assert event_reason(kind, rec) == reason


def test_record_reasons_and_a_batch_keeps_its_good_events():
    assert record_reason("logs", ALERT_EVENT) == "a AlertEvent on the logs topic (expected LogEvent)"
    assert record_reason("metrics", METRIC_EVENT) is None
    codec, ts = default_codec(), now_us()
    batch = codec.encode_batch(LOG_EVENT, [_log(1, ts), _log(2, ts, ""), _log(3, ts)])
    kept, dead = screen("logs", batch, codec, batched=True)
    assert [e["message"] for e in codec.decode_events(kept)[1]] == ["line 1", "line 3"]
    assert [(codec.decode(v)[1]["message"], r) for v, r in dead] == [("line 2", "empty service")]


def test_processor_and_clickhouse_sink_dead_letter_the_poison_set_alike(kafka_bootstrap, clickhouse_url):
    cfg = processor_config(kafka_bootstrap, clickhouse_url)
    cfg = cfg.model_copy(update={"sink_clickhouse": cfg.sink_clickhouse.model_copy(
        update={"group_id": unique("val-sink"), "batch_max_age_s": 0.2})})
    t, codec, ts = cfg.kafka.topics, default_codec(), now_us()
    poison = [
        (t.logs, codec.encode(ALERT_EVENT, _alert(ts))),           # forged alert history on the logs topic
        (t.metrics, codec.encode(ALERT_EVENT, _alert(ts))),
        (t.health, codec.encode(ALERT_EVENT, _alert(ts))),
        (t.logs, codec.encode(METRIC_EVENT, _metric(1.0, ts))),
        (t.logs, codec.encode(CONTROL_EVENT, {"event_id": "c1", "ts": ts, "action": "resolve"})),
        (t.logs, codec.encode(LOG_EVENT, _log(1, ts, ""))),
        (t.logs, codec.encode(LOG_EVENT, _log(2, ts, "   "))),
        (t.logs, codec.encode(LOG_EVENT, _log(3, 0))),
        (t.metrics, codec.encode(METRIC_EVENT, _metric(math.nan, ts))),
        (t.metrics, codec.encode(METRIC_EVENT, _metric(math.inf, ts))),
        (t.metrics, codec.encode(METRIC_EVENT, _metric(-math.inf, ts))),
        (t.metrics, codec.encode(METRIC_EVENT, _metric(1e300, ts))),
        (t.metrics, codec.encode(METRIC_EVENT, _metric(1.0, ts, name=""))),
        (t.health, codec.encode(HEALTH_EVENT, _health(-5.0, ts))),
        (t.health, codec.encode(HEALTH_EVENT, _health(math.nan, ts))),
        (t.logs, codec.encode_batch(LOG_EVENT, [_log(4, ts), _log(5, ts, ""), _log(6, ts)])),
        (t.logs, b"not avro at all"),
        (t.logs, codec.encode(LOG_EVENT, _log(7, ts))[:-5]),
    ]
    producer = kafka_api.producer(cfg.kafka)
    for topic, value in poison:
        producer.send(topic, key=b"shop", value=value)
    producer.send(t.logs, key=b"shop", value=codec.encode(LOG_EVENT, _log(8, ts)))
    producer.flush(60)
    producer.close()
    expected = len(poison)  # one dead letter each (the batch's bad event alone)
    client, db = connect(cfg.clickhouse), cfg.clickhouse.database
    with running_processor(cfg), running(ClickHouseSink(cfg)):
        wait_for(lambda: len(consume_all(cfg.kafka, t.deadletter, expect=2 * expected, timeout_s=5)) >= 2 * expected,
                 120, "dead letters from both stages")
        wait_for(lambda: client.query(f"SELECT count() FROM `{db}`.logs").result_rows[0][0] >= 3, 60,
                 "the good logs stored")
    dead = consume_all(cfg.kafka, t.deadletter, expect=2 * expected, timeout_s=30)

    def letters(stages: set[bytes]) -> set[tuple]:
        out = set()
        for m in dead:
            h = dict(m.headers)
            if h["stage"] in stages:
                out.add((h["source_topic"], h["source_offset"], h["error"].decode(), m.value))
        return out

    by_processor = letters({b"validate", b"decode"})
    by_sink = letters({b"sink-clickhouse"})
    assert len(by_processor) == expected, sorted(x[2] for x in by_processor)
    assert by_processor == by_sink, (sorted(x[2] for x in by_processor ^ by_sink))
    assert client.query(f"SELECT count() FROM `{db}`.alerts WHERE alert_id = 'forged-1'").result_rows == [(0,)]
    stored = {r[0] for r in client.query(f"SELECT message FROM `{db}`.logs").result_rows}
    assert stored == {"line 4", "line 6", "line 8"}
    # (the processor's own self-monitoring metrics land there too: only the poisoned service is checked)
    assert client.query(f"SELECT count() FROM `{db}`.metrics WHERE service = 'shop'").result_rows == [(0,)]
