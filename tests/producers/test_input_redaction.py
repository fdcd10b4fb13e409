"""Redaction through every input of the agent (log files, OTLP, syslog, scrape): secrets sent to each reach
neither Kafka nor ClickHouse, and each replacement is counted per input and pattern on the agent's /metrics."""

from __future__ import annotations

import logging
import socket

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from tests.kafkautil import consume_all, wait_for
from tests.producers.inpututil import running, wait_events, with_agents
from tests.producers.shiputil import FAST_SHIP
from tests.producers.test_syslog import _logger
from tocsin.producers.agent import AgentService
from tocsin.producers.agentmetrics import metric_name

CARD, EMAIL, TOKEN, PASSWORD = "4111 1111 1111 1111", "jane.doe@example.com", "xyzqtoken77", "hunter2"
SECRETS = [CARD, CARD.replace(" ", ""), EMAIL, TOKEN, PASSWORD]
LINE = f"paid with {CARD} by {EMAIL}; Authorization: Bearer {TOKEN} password={PASSWORD}"
# Each pattern LINE carries ("Authorization: Bearer x" is the authorization pattern's: it starts first).
PATTERNS = {"card", "email", "authorization", "secret"}
EXPOSITION = ("# TYPE shop_logins gauge\n"
              f'shop_logins{{user="{EMAIL}",card="{CARD}",auth="Bearer {TOKEN}",note="password={PASSWORD}"}} 3\n'
              "# TYPE shop_plain gauge\n"
              'shop_plain{route="/pay"} 1\n')


def _agent_metrics(agent: AgentService) -> dict[str, list]:
    """The agent's /metrics, parsed by prometheus_client: {family name: samples}."""
    port = agent.metrics_server.port
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _redacted(families: dict[str, list]) -> dict[tuple[str, str], float]:
    return {(s.labels["input"], s.labels["pattern"]): s.value for s in families.get("tocsin_agent_redacted", [])}


def _otlp_send(url: str) -> None:
    """A log record and a metric point through the real OpenTelemetry SDK exporters, secrets everywhere."""
    resource = Resource.create({"service.name": "checkout", "host.name": "web-7", "owner": EMAIL})
    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs", timeout=10)))
    logger = logging.getLogger("shop.redaction.otlp")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=logs)
    logger.addHandler(handler)
    try:
        logger.warning(LINE, extra={"customer": EMAIL, "password": PASSWORD, "header": f"Bearer {TOKEN}"})
    finally:
        logger.removeHandler(handler)
    assert logs.force_flush(30_000)
    logs.shutdown()
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{url}/v1/metrics"),
                                           export_interval_millis=3_600_000)
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    meters.get_meter("shop").create_up_down_counter("carts_open").add(2, {"user": EMAIL, "card": CARD})
    assert meters.force_flush(30_000)
    meters.shutdown()


def test_secrets_sent_through_every_input_reach_neither_kafka_nor_clickhouse(tocsin_config, tmp_path, httpserver,
                                                                             clickhouse_client):
    from tests.sinks.clickhouse.test_sink import running as running_sink
    from tocsin.sinks.clickhouse.sink import ClickHouseSink

    httpserver.expect_request("/metrics").respond_with_data(EXPOSITION, content_type="text/plain")
    log_file = tmp_path / "app.log"
    log_file.write_text(LINE + "\n")
    cfg = with_agents(
        tocsin_config, metrics={"enabled": False}, health={"enabled": False}, metrics_addr="127.0.0.1:0",
        logship={"inputs": [{"paths": [str(log_file)], "service": "shop", "parser": "text"}],
                 "state_file": str(tmp_path / "state.json"), **FAST_SHIP},
        otlp={"enabled": True, "port": 0}, syslog={"enabled": True, "udp_port": 0, "tcp_port": 0},
        scrape={"targets": [{"name": "shop", "url": httpserver.url_for("/metrics"), "interval_s": 1,
                             "timeout_s": 1}]})
    topics = cfg.kafka.topics
    agent = AgentService(cfg)
    with running(agent):
        inputs = {c.name: c for c in agent.components}
        assert set(inputs) == {"logship", "scrape", "otlp", "syslog"}
        _otlp_send(inputs["otlp"].url)
        tcp = inputs["syslog"].tcp_address[1]
        _logger(tcp, "tcp", "rfc5424", "pay", LINE, "--octet-count", "--sd-id", "req@1", "--sd-param",
                f'auth="Bearer {TOKEN}"')
        with socket.create_connection(("127.0.0.1", tcp), timeout=10) as s:  # not syslog: dead-lettered
            s.sendall(f"no pri here, {LINE}\n".encode())
        wait_events(cfg.kafka, topics.logs, lambda ev: {e["service"] for e in ev} >= {"shop", "checkout", "pay"},
                    "a log of the file, OTLP and syslog")
        wait_events(cfg.kafka, topics.metrics, lambda ev: {e["name"] for e in ev} >= {"shop_logins", "carts_open"},
                    "the scraped and the OTLP metric")
        wait_for(lambda: inputs["syslog"].counters.get("bad_messages") >= 1, 30, "the dead-lettered garbage")
        families = _agent_metrics(agent)

    raw = {t: b"\n".join(r.value for r in consume_all(cfg.kafka, t, timeout_s=10, idle_s=1.0))
           for t in (topics.logs, topics.metrics, topics.deadletter)}
    assert {t: [s for s in SECRETS if s.encode() in v] for t, v in raw.items()} == {t: [] for t in raw}
    for mark in ("[REDACTED:card]", "[REDACTED:email]", "Authorization: [REDACTED:authorization]",
                 "password=[REDACTED:secret]"):
        assert mark.encode() in raw[topics.logs] and mark.encode() in raw[topics.deadletter], mark
    assert b"[REDACTED:email]" in raw[topics.metrics] and b"[REDACTED:card]" in raw[topics.metrics]
    assert b"/pay" in raw[topics.metrics]  # what is no secret is left as it was

    counts = _redacted(families)
    for name in ("logship", "otlp", "syslog"):
        assert {p for (i, p), n in counts.items() if i == name and n > 0} >= PATTERNS, (name, counts)
    assert {p for (i, p), n in counts.items() if i == "scrape" and n > 0} >= {"card", "email", "bearer", "secret"}

    db = cfg.clickhouse.database
    with running_sink(ClickHouseSink(cfg)):
        wait_for(lambda: clickhouse_client.query(f"SELECT (SELECT count() FROM `{db}`.logs) >= 3 AND (SELECT "
                                                 f"countIf(name = 'shop_logins') FROM `{db}`.metrics) >= 1"
                                                 ).result_rows[0][0], 60, "the logs and metrics in ClickHouse",
                 every_s=0.2)
    logs = clickhouse_client.query(f"SELECT message, toString(attrs) FROM `{db}`.logs").result_rows
    metrics = clickhouse_client.query(f"SELECT name, toString(labels) FROM `{db}`.metrics").result_rows
    stored = "\n".join(a + b for a, b in logs + metrics)
    assert [s for s in SECRETS if s in stored] == []
    assert stored.count("[REDACTED:email]") >= 5  # file, OTLP message, attribute and resource, syslog, labels


def test_the_agents_metrics_endpoint_counts_each_input_and_pattern(tocsin_config):
    cfg = with_agents(tocsin_config, metrics={"enabled": False}, health={"enabled": False},
                      metrics_addr="127.0.0.1:0", syslog={"enabled": True, "udp_port": 0, "tcp_port": None})
    agent = AgentService(cfg)
    with running(agent):
        syslog = agent.components[0]
        for i in range(3):
            _logger(syslog.udp_address[1], "udp", "rfc3164", "pay", f"{i} mail to {EMAIL} password={PASSWORD}")
        wait_for(lambda: syslog.counters.get("published") >= 3, 30, "3 syslog messages published")
        families = _agent_metrics(agent)
        port = agent.metrics_server.port
    assert _redacted(families) == {("syslog", "email"): 3.0, ("syslog", "secret"): 3.0}
    (received,) = families["tocsin_agent_udp_received"]
    assert (received.name, received.labels, received.value) == ("tocsin_agent_udp_received_total",
                                                                {"input": "syslog"}, 3.0)
    assert all(s.name.startswith("tocsin_agent_") and s.name.endswith("_total")
               for samples in families.values() for s in samples)
    with pytest.raises(requests.ConnectionError):  # closed with the agent
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_counter_names_follow_prometheus_rules():
    assert metric_name("ack_ms_total") == "tocsin_agent_ack_ms"
    assert metric_name("dropped.level-x") == "tocsin_agent_dropped_level_x"


def test_label_values_are_redacted_on_a_copy_and_dead_letter_bytes_byte_for_byte():
    from tocsin.producers.redact import Redactor
    from tocsin.producers.redaction_config import RedactConfig

    r = Redactor(RedactConfig())
    plain = {"route": "/pay", "code": "200"}
    assert r.labels(plain) is plain
    labels = {"user": EMAIL, "route": "/pay"}
    assert r.labels(labels) == {"user": "[REDACTED:email]", "route": "/pay"} and labels["user"] == EMAIL
    rec = {"message": "request", "attrs": {"Cookie": "sess=abc123"}}  # no hint but the attribute's name
    r.record(rec)
    assert rec["attrs"]["Cookie"] == "[REDACTED:secret]"
    assert r.raw(b"\xff\xfe card " + CARD.encode()) == b"\xff\xfe card [REDACTED:card]"
    assert r.raw(f"{EMAIL} \u00e9".encode()) == "[REDACTED:email] \u00e9".encode()
    assert dict(r.counts) == {"email": 2, "secret": 1, "card": 1}
