"""Kafka unreachable is itself announced: the notify sink sends TocsinKafkaUnreachable straight to its receivers.

The test's own broker (``tocsin.core.localkafka``, not the session's) is
SIGKILLed under a running sink and started again on the same port and data
directory; a real webhook receiver (pytest-httpserver) counts what arrives.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import make_config
from tests.sinks.notify.support import alert_event, produce_alerts, query, record, running_sink, wait_until
from tocsin.core import localkafka
from tocsin.core.kafka import create_topics
from tocsin.sinks.notify.sink import KAFKA_UNREACHABLE_RULE

THRESHOLD_S = 5.0


@pytest.fixture
def own_broker(tmp_path):
    data_dir = tmp_path / "kafka"
    state = localkafka.up(data_dir=data_dir)
    yield state, data_dir
    localkafka.down(data_dir)


def _sigkill(data_dir) -> None:
    state = localkafka.read_state(data_dir)
    assert state is not None
    os.kill(state.pid, signal.SIGKILL)
    wait_until(lambda: localkafka.running(data_dir) is None, 30, what="the broker process gone")
    localkafka.down(data_dir)  # forgets the dead broker's state file


@pytest.mark.slow
def test_kafka_down_is_announced_once_then_resolved(own_broker, clickhouse_url, httpserver):
    broker, data_dir = own_broker
    rec = record(httpserver, "/hook")
    cfg = make_config(broker.bootstrap, clickhouse_url, notify={
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook"),
                       "backoff_initial_s": 0.2, "backoff_max_s": 1}],
        "route": {"receiver": "hook"}, "group_wait_s": 0, "group_interval_s": 1,
        "kafka_unreachable_after_s": THRESHOLD_S})
    create_topics(cfg.kafka)

    def kafka_alerts(status: str | None = None) -> list[dict]:
        return [a for body in rec.bodies() for a in body["alerts"]
                if a["labels"].get("alertname") == KAFKA_UNREACHABLE_RULE and status in (None, a["status"])]

    with running_sink(cfg) as sink:
        # Healthy: an ordinary alert travels, and nothing about Kafka is said for longer than the threshold.
        produce_alerts(cfg, [alert_event("error_rate", "shop", severity="warning")])
        wait_until(lambda: rec.count() >= 1, 60, what="the ordinary alert delivered")
        healthy_until = time.monotonic() + THRESHOLD_S + 3
        while time.monotonic() < healthy_until:
            assert not kafka_alerts(), "announced while Kafka was healthy"
            time.sleep(0.2)

        _sigkill(data_dir)
        killed_at = time.monotonic()
        wait_until(lambda: kafka_alerts("firing"), 90, what="the TocsinKafkaUnreachable notification")
        announced_s = time.monotonic() - killed_at
        # Still down a while longer: no second firing notification.
        until = time.monotonic() + THRESHOLD_S
        while time.monotonic() < until:
            assert len(kafka_alerts("firing")) == 1
            time.sleep(0.2)

        localkafka.up(port=broker.port, data_dir=data_dir)
        back_at = time.monotonic()
        wait_until(lambda: kafka_alerts("resolved"), 120, what="the resolved TocsinKafkaUnreachable notification")
        resolved_s = time.monotonic() - back_at
        wait_until(sink.idle, 30, what="the sink settled")
        settle_until = time.monotonic() + 2  # a straggling duplicate would arrive within a flush interval
        while time.monotonic() < settle_until:
            time.sleep(0.2)
        stats = sink.stats()

    print(f"\nKafka unreachable: announced {announced_s:.1f} s after the SIGKILL (threshold {THRESHOLD_S} s), "
          f"resolved {resolved_s:.1f} s after the broker was started again; poll errors {stats.get('poll_errors', 0)}")
    firing, resolved = kafka_alerts("firing"), kafka_alerts("resolved")
    assert len(firing) == 1 and len(resolved) == 1, (firing, resolved)
    assert THRESHOLD_S <= announced_s < THRESHOLD_S + 30
    alert = firing[0]
    assert alert["labels"] == {"alertname": KAFKA_UNREACHABLE_RULE, "severity": "critical", "service": "tocsin"}
    assert alert["annotations"]["bootstrap_servers"] == broker.bootstrap
    assert resolved[0]["fingerprint"] == alert["fingerprint"]
    rows = query(cfg, f"SELECT state, status FROM {{log}} WHERE rule = '{KAFKA_UNREACHABLE_RULE}' ORDER BY ts")
    assert rows == [("firing", "sent"), ("resolved", "sent")]
