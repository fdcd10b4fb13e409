"""OTLP/HTTP receiver: the real OpenTelemetry Python SDK exports logs and metrics to it; read back from Kafka."""

from __future__ import annotations

import base64
import gzip
import json
import random
import threading

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.kafkautil import wait_for
from tests.producers.inpututil import deadletters, events, running, wait_events, with_agents
from tocsin.producers.inputs.otlp import OtlpReceiver, level_of

RESOURCE = Resource.create({"service.name": "checkout", "host.name": "web-7", "deployment.environment": "prod"})


def _otlp_cfg(cfg, **extra):
    return with_agents(cfg, otlp={"enabled": True, "port": 0, **extra})


def _log_provider(url: str, timeout_s: float = 10.0) -> LoggerProvider:
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs",
                                                                              timeout=timeout_s)))
    return provider


def _emit(provider: LoggerProvider, n: int, prefix: str = "order") -> None:
    import logging

    logger = logging.getLogger(f"shop.checkout.{prefix}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        for i in range(n):
            (logger.error if i % 10 == 0 else logger.info)("%s %d placed", prefix, i, extra={"order_id": i})
    finally:
        logger.removeHandler(handler)


def test_severity_numbers_map_to_levels():
    assert [level_of(n, "") for n in (1, 5, 9, 13, 17, 21)] == ["DEBUG", "DEBUG", "INFO", "WARNING", "ERROR",
                                                                 "CRITICAL"]
    assert level_of(0, "warn") == "WARNING" and level_of(0, "") == "INFO"


def test_sdk_logs_arrive_with_service_host_level_and_attributes(tocsin_config):
    cfg = _otlp_cfg(tocsin_config)
    with running(OtlpReceiver(cfg)) as rx:
        provider = _log_provider(rx.url)
        _emit(provider, 50)
        assert provider.force_flush(30_000)
        provider.shutdown()
        logs = wait_events(cfg.kafka, cfg.kafka.topics.logs, lambda ev: ev if len(ev) >= 50 else None, "50 logs")
    assert len(logs) == 50 and len({e["event_id"] for e in logs}) == 50
    first = next(e for e in logs if e["message"] == "order 0 placed")
    assert (first["service"], first["host"], first["level"]) == ("checkout", "web-7", "ERROR")
    assert first["logger"] == "shop.checkout.order"
    assert first["attrs"]["order_id"] == "0" and first["attrs"]["deployment.environment"] == "prod"
    assert not any(k.startswith("telemetry.") for k in first["attrs"])
    assert sum(e["level"] == "INFO" for e in logs) == 45
    assert rx.counters.get("logs_events") == 50


def test_sdk_metrics_counter_rates_histogram_quantiles_and_gauges(tocsin_config):
    cfg = _otlp_cfg(tocsin_config)
    with running(OtlpReceiver(cfg)) as rx:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{rx.url}/v1/metrics"),
                                               export_interval_millis=3_600_000)
        provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
        meter = provider.get_meter("shop")
        orders = meter.create_counter("orders", unit="1")
        latency = meter.create_histogram("api_response_time", unit="ms")
        meter.create_observable_gauge("queue_depth", callbacks=[lambda _o: [_gauge(7)]])
        orders.add(5, {"route": "/pay"})
        latency.record(100, {"route": "/pay"})
        assert provider.force_flush(30_000)  # first export: cumulative baselines
        orders.add(20, {"route": "/pay"})
        for v in [10] * 50 + [200] * 40 + [900] * 10:
            latency.record(v, {"route": "/pay"})
        assert provider.force_flush(30_000)
        provider.shutdown()
        metrics = wait_events(cfg.kafka, cfg.kafka.topics.metrics,
                              lambda ev: ev if any(e["name"] == "api_response_time" for e in ev) else None,
                              "histogram quantiles")
    names = {e["name"] for e in metrics}
    assert {"orders_per_s", "api_response_time", "api_response_time_count_per_s", "queue_depth"} <= names
    q = {e["labels"]["quantile"]: e["value"] for e in metrics if e["name"] == "api_response_time"}
    # the second interval: 100 observations in the SDK default buckets (..., 10, 25, ..., 250, 500, 750, 1000)
    assert 5 <= q["0.5"] <= 10 and 100 <= q["0.95"] <= 1000 and set(q) == {"0.5", "0.95", "0.99"}
    rate = next(e for e in metrics if e["name"] == "orders_per_s")
    assert rate["value"] > 0 and rate["labels"]["route"] == "/pay" and rate["service"] == "checkout"
    gauge = next(e for e in metrics if e["name"] == "queue_depth")
    assert gauge["value"] == 7 and gauge["host"] == "web-7"
    assert rx.counters.get("rejected") == 0


def _gauge(v):
    from opentelemetry.metrics import Observation

    return Observation(v)


def test_json_gzip_and_bad_bodies(tocsin_config):
    cfg = _otlp_cfg(tocsin_config, max_body_bytes=64 * 1024, max_decompressed_bytes=256 * 1024)
    doc = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                             "scopeLogs": [{"scope": {"name": "nginx"}, "logRecords": [{
                                 "timeUnixNano": "1700000000000000000", "severityNumber": 17,
                                 "body": {"stringValue": "upstream timed out"},
                                 "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                 "attributes": [{"key": "status", "value": {"intValue": "504"}}]}]}]}]}
    with running(OtlpReceiver(cfg)) as rx:
        url = rx.url
        ok = requests.post(f"{url}/v1/logs", data=gzip.compress(json.dumps(doc).encode()), timeout=30,
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert ok.status_code == 200 and ok.json() == {}
        bad = requests.post(f"{url}/v1/logs", data=b"\x0a\xff\xff\xff garbage", timeout=30,
                            headers={"Content-Type": "application/x-protobuf"})
        assert bad.status_code == 400
        secret = b'{"resourceLogs": "not a list", "note": "password=hunter2"}'  # gzip'd: dead-lettered unzipped
        bad_gz = requests.post(f"{url}/v1/logs", data=gzip.compress(secret), timeout=30,
                               headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert bad_gz.status_code == 400
        # A gzip stream damaged after its secret: the readable part is dead-lettered (redacted), never the
        # compressed bytes, which anyone could decompress up to the damage.
        pad = base64.b64encode(random.Random(3).randbytes(12_000))  # incompressible: the damage is past the secret
        stream = gzip.compress(b'{"note": "password=swordfish", "pad": "' + pad + b'"}')
        damaged = stream[:len(stream) // 2] + bytes(b ^ 0x5A for b in stream[len(stream) // 2:])
        broken_gz = requests.post(f"{url}/v1/logs", data=damaged, timeout=30,
                                  headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert broken_gz.status_code == 400 and "does not decompress" in broken_gz.text
        bomb = gzip.compress(b"\0" * (1 << 20))
        big = requests.post(f"{url}/v1/metrics", data=bomb, timeout=30,
                            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        assert big.status_code == 413
        huge = requests.post(f"{url}/v1/logs", data=b"x" * (65 * 1024), timeout=30,
                             headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
        assert requests.post(f"{url}/v1/traces", data=b"", timeout=10,
                             headers={"Content-Type": "application/json"}).status_code == 404
        assert requests.post(f"{url}/v1/logs", data=b"{}", timeout=10,
                             headers={"Content-Type": "text/plain"}).status_code == 415
    (log,) = events(cfg.kafka, cfg.kafka.topics.logs)
    assert (log["service"], log["level"], log["message"]) == ("web", "ERROR", "upstream timed out")
    assert log["trace_id"] == "5b8efff798038103d269b633813fc60c" and log["ts"] == 1_700_000_000_000_000
    assert log["attrs"]["status"] == "504" and log["attrs"]["span_id"] == "eee19b7ec3c1b174"
    letters = deadletters(cfg.kafka)
    assert len(letters) == 3
    (dead,) = [d for d in letters if d[0].startswith(b"\x0a")]
    (dead_gz,) = [d for d in letters if b"resourceLogs" in d[0]]
    (dead_broken,) = [d for d in letters if b"note" in d[0] and d is not dead_gz]
    assert b"swordfish" not in dead_broken[0] and b"password=[REDACTED:secret]" in dead_broken[0], dead_broken[0]
    assert not dead_broken[0].startswith(b"\x1f\x8b") and "does not decompress" in dead_broken[1]["error"]
    assert dead[0] == b"\x0a\xff\xff\xff garbage" and "not an OTLP logs export request" in dead[1]["error"]
    assert dead[1]["source_topic"] == "otlp:/v1/logs" and dead[1]["stage"] == "agent.otlp"
    assert b"hunter2" not in dead_gz[0] and b"password=[REDACTED:secret]" in dead_gz[0], dead_gz[0]


def test_the_agent_service_runs_the_configured_inputs(tocsin_config):
    from tocsin.producers.agent import AgentService

    cfg = with_agents(tocsin_config, metrics={"enabled": False}, health={"enabled": False},
                      otlp={"enabled": True, "port": 0}, syslog={"enabled": True, "udp_port": 0, "tcp_port": 0},
                      scrape={"targets": [{"name": "x", "url": "http://127.0.0.1:9/metrics"}]})
    agent = AgentService(cfg)
    with running(agent):
        assert [c.name for c in agent.components] == ["scrape", "otlp", "syslog"]
        otlp = agent.components[1]
        r = wait_for(lambda: requests.post(f"{otlp.url}/v1/logs", data=b"{}", timeout=10,
                                           headers={"Content-Type": "application/json"}), 30,
                     "the agent's OTLP receiver", ignore=(requests.RequestException,))
        assert r.status_code == 200
        assert agent.stuck() is None and not agent.failures


def test_token_required_when_configured(tocsin_config):
    cfg = _otlp_cfg(tocsin_config, bearer_token="t0ken")
    with running(OtlpReceiver(cfg)) as rx:
        r = requests.post(f"{rx.url}/v1/logs", data=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 401
        r = requests.post(f"{rx.url}/v1/logs", data=b"{}", timeout=10,
                          headers={"Content-Type": "application/json", "Authorization": "Bearer t0ken"})
        assert r.status_code == 200


@pytest.mark.slow
def test_broker_down_answers_503_the_sdk_retries_and_nothing_is_lost(clickhouse_url, tmp_path):
    from tests.conftest import make_config
    from tocsin.core import localkafka
    from tocsin.core.kafka import create_topics

    data_dir = tmp_path / "kafka"
    broker = localkafka.up(data_dir=data_dir)
    try:
        base = make_config(broker.bootstrap, clickhouse_url)
        create_topics(base.kafka)
        cfg = _otlp_cfg(base, ack_timeout_s=2, retry_after_s=1)
        with running(OtlpReceiver(cfg)) as rx:
            provider = _log_provider(rx.url)
            _emit(provider, 20, "warmup")
            assert provider.force_flush(30_000)
            localkafka.down(data_dir)
            retrying = _log_provider(rx.url, timeout_s=180)
            _emit(retrying, 200, "during")
            flushed: list[bool] = []
            flusher = threading.Thread(target=lambda: flushed.append(retrying.force_flush(240_000)), daemon=True)
            flusher.start()
            wait_for(lambda: rx.counters.get("unavailable") >= 2, 60, "503 answers while the broker is down")
            assert not flushed, "the SDK was told its export succeeded while Kafka was down"
            localkafka.up(port=broker.port, data_dir=data_dir)
            flusher.join(240)
            assert flushed == [True]
            retrying.shutdown()
            provider.shutdown()
        logs = wait_events(cfg.kafka, cfg.kafka.topics.logs,
                           lambda ev: ev if len({e["message"] for e in ev}) >= 220 else None, "all 220 logs", 120)
        during = {e["message"] for e in logs if e["message"].startswith("during")}
        assert during == {f"during {i} placed" for i in range(200)}
        # retried requests keep their ids: duplicates (if any) collapse downstream
        assert len({e["event_id"] for e in logs}) == len({e["message"] for e in logs})
    finally:
        localkafka.down(data_dir)
