"""The sinks' Prometheus metrics over real HTTP: a standalone sink serves them on ``metrics_addr``;
``promtool check metrics`` finds nothing to complain about."""

from __future__ import annotations

import socket
import subprocess
import urllib.request

from tests.kafkautil import produce, wait_for
from tests.sinks.clickhouse import test_sink as ch_tests
from tests.sinks.clickhouse.test_sink import _log, running
from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, record, running_sink
from tocsin.core.events import LOG_EVENT, now_us
from tocsin.sinks.clickhouse.sink import ClickHouseSink

sink_config = ch_tests.sink_config  # the fixtures
notify_env = notify_support.notify_env


def _free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _promtool_clean(text: str) -> None:
    check = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
        check.stdout + check.stderr


def _value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_standalone_clickhouse_sink_serves_rows_batches_latency_and_lag(sink_config):
    addr = _free_addr()
    cfg = sink_config.model_copy(update={"sink_clickhouse": sink_config.sink_clickhouse.model_copy(
        update={"metrics_addr": addr})})
    base = now_us()
    before = _value(_scrape_or_empty(addr), 'tocsin_sink_clickhouse_events_total{table="logs"}')
    with running(ClickHouseSink(cfg)):
        produce(cfg.kafka, cfg.kafka.topics.logs, LOG_EVENT, [_log(i, base) for i in range(300)],
                key_field="service")
        group = cfg.sink_clickhouse.group_id

        def scraped() -> str | None:
            t = _scrape(addr)
            rows = _value(t, 'tocsin_sink_clickhouse_events_total{table="logs"}')
            return t if rows >= before + 300 and f'group="{group}"' in t else None

        text = wait_for(scraped, 60, "the sink's rows and lag on /metrics", every_s=0.5)
    for name in ("tocsin_sink_clickhouse_batches_total", "tocsin_sink_clickhouse_insert_seconds_bucket",
                 "tocsin_sink_clickhouse_consumer_lag_messages{group=",
                 "tocsin_sink_clickhouse_recovered_ranges_total"):
        assert name in text, name
    _promtool_clean(text)


def _scrape_or_empty(addr: str) -> str:
    try:
        return _scrape(addr)
    except OSError:
        return ""


def test_standalone_notify_sink_serves_deliveries_by_receiver_and_outcome(notify_env, httpserver):
    addr = _free_addr()
    rec = record(httpserver, "/hook")
    cfg = notify_env({
        "metrics_addr": addr,
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")}],
        "route": {"receiver": "hook", "group_wait_s": 0.1},
        "inhibit_rules": [],
    })
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [alert_event("error_rate", "shop", severity="critical")])
        wait_for(lambda: rec.count() >= 1, 60, "one delivery")
        wait_for(sink.idle, 30, "settled")

        def scraped() -> str | None:
            t = _scrape(addr)
            sent = 'tocsin_sink_notify_deliveries_total{outcome="sent",receiver="hook"} 1.0' in t
            return t if sent and "tocsin_sink_notify_consumer_lag_messages{" in t else None

        text = wait_for(scraped, 30, "the delivery and the lag on /metrics", every_s=0.5)
    for line in ('tocsin_sink_notify_deliveries_total{outcome="failed",receiver="hook"} 0.0',
                 'tocsin_sink_notify_retries_total{receiver="hook"} 0.0', "tocsin_sink_notify_dedup_hits_total 0.0",
                 f'group="{cfg.notify.group_id}"'):
        assert line in text, line
    _promtool_clean(text)
