"""A spike against the same window a day earlier, a day older than the replay: the baseline from the store.

A real processor (in process, so it shares the embedded ClickHouse of the
tests) starts over a store holding yesterday's error lines of a service;
today's errors arrive through Kafka. Without the store's seed a one-day
offset would be learning for a day (tests/processors/test_rules_spike.py);
with it the rule fires at once, its threshold five times yesterday's count.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import requests

from tests.conftest import make_config, unique
from tests.kafkautil import produce
from tests.processors.test_http_e2e import AUTH, TOKEN, free_port, running_processor
from tests.processors.test_http_e2e import wait_for as wait_http
from tocsin.core.clickhouse import connect
from tocsin.core.events import LOG_EVENT, now_us
from tocsin.core.kafka import create_topics

S = 1_000_000
RULES = """
rules:
  - name: errors_vs_yesterday
    kind: spike
    source: logs
    filter: {level: ERROR}
    aggregate: count
    window: 2m
    slices: 4
    baseline: {offset: 1d}
    warning: 5
    min_current: 5
    resolve_after: 1m
    annotations: {summary: "{{ labels.service }}: {{ value }} errors against {{ threshold }}"}
"""


def test_a_day_offset_baseline_is_read_from_the_store_at_start(kafka_bootstrap: str, clickhouse_url: str,
                                                               tmp_path: Path) -> None:
    from tocsin.sinks.clickhouse.schema import migrate

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    cfg = make_config(kafka_bootstrap, clickhouse_url,
                      processor={"group_id": unique("spike"), "rules_file": str(rules_file)},
                      api={"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}", "service_name": "spike"})
    create_topics(cfg.kafka)
    client = connect(cfg.clickhouse)
    db = cfg.clickhouse.database
    migrate(client, db)
    svc = unique("checkout")
    now = now_us()
    # Yesterday, an hour around this time: 4 errors a minute (8 in any 2-minute period).
    rows = [[f"y{i}", dt.datetime.fromtimestamp((now - 24 * 3600 * S + (i - 240) * 15 * S) / S, dt.UTC), svc,
             "web-1", "ERROR", "shop.pay", "card declined", "", {}] for i in range(480)]
    client.insert(f"`{db}`.logs", rows, column_names=["event_id", "ts", "service", "host", "level", "logger",
                                                      "message", "trace_id", "attrs"])
    try:
        with running_processor(cfg) as proc:
            assert proc.service.spike_coverage == "store+stream"
            (rule,) = proc.service.rules.rules
            assert rule.spike_seeds is not None and (svc,) in rule.spike_seeds
            wait_http("healthy", lambda: requests.get(f"{proc.url}/health", timeout=5).status_code == 200, 90)
            start = now_us()
            logs = [{"event_id": unique("l"), "ts": start - (60 - i) * S, "service": svc, "host": "web-1",
                     "level": "ERROR", "logger": "shop.pay", "message": "card declined", "trace_id": None,
                     "attrs": {}} for i in range(60)]
            produce(cfg.kafka, cfg.kafka.topics.logs, LOG_EVENT, logs)

            def fired():
                body = requests.get(f"{proc.url}/api/alerts", headers=AUTH, params={"service": svc}, timeout=10).json()
                return next((a for a in body["active"]["items"] if a["rule"] == "errors_vs_yesterday"), None)

            alert = wait_http("the spike against yesterday", fired, 120)
            assert alert["severity"] == "warning"
            assert alert["threshold"] == 40.0  # five times yesterday's 8 in the same two minutes
            assert alert["value"] > 40
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}`")
