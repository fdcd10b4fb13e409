"""App logging files, the non-blocking Kafka handler, request/query timing middleware, the metrics agent."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from wsgiref.util import setup_testing_defaults

import pytest

from tests.conftest import make_config
from tests.producers.shiputil import consume
from tocsin.app.config import KafkaConfig
from tocsin.producers.agent import build
from tocsin.producers.emitter import EventQueue
from tocsin.producers.logging import KafkaLogHandler, cleanup_old_logs, configure_logging
from tocsin.producers.metrics import MetricsAgent, MetricsSampler, sample_once
from tocsin.producers.middleware import (
    AsgiTimingMiddleware,
    KafkaMetricSink,
    ListMetricSink,
    WsgiTimingMiddleware,
    query_timer,
)
from tocsin.schemas.codec import default_codec


@pytest.fixture
def app_logging(tmp_path):
    setup = configure_logging("shop", log_dir=tmp_path)
    yield tmp_path
    setup.close()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seed_log_files_get_their_records(app_logging):
    log_dir = app_logging
    logging.getLogger("shop.api").info("listed orders", extra={"count": 3})
    logging.getLogger("shop.api").error("payment failed")
    logging.getLogger("performance").info("checkout", extra={"duration_ms": 41.5})
    logging.getLogger("security").warning("login failed", extra={"user": "bob"})
    app = _lines(log_dir / "application.log")
    assert [r["message"] for r in app] == ["listed orders", "payment failed"]
    assert app[0]["count"] == 3 and app[0]["service"] == "shop" and app[0]["timestamp"].endswith("Z")
    assert [r["message"] for r in _lines(log_dir / "error.log")] == ["payment failed"]
    assert _lines(log_dir / "performance.log")[0]["duration_ms"] == 41.5
    assert _lines(log_dir / "security.log")[0]["user"] == "bob"
    handler = next(h for h in logging.getLogger().handlers
                   if getattr(h, "baseFilename", "").endswith("application.log"))
    assert (handler.maxBytes, handler.backupCount) == (50 * 1024 * 1024, 10)


def test_log_dir_env_and_cleanup_of_files_older_than_30_days(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "from-env"))
    setup = configure_logging("shop")
    setup.close()
    assert setup.log_dir == tmp_path / "from-env"
    old = tmp_path / "from-env" / "application.log.3"
    fresh = tmp_path / "from-env" / "application.log.1"
    old.write_text("x")
    fresh.write_text("y")
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    assert cleanup_old_logs() == [old]
    assert fresh.exists() and not old.exists()


def test_kafka_log_handler_never_blocks_when_kafka_is_unreachable():
    dead = KafkaConfig(bootstrap_servers="127.0.0.1:1")
    handler = KafkaLogHandler(dead, "shop", maxsize=100)
    logger = logging.getLogger("test.kafka.handler.dead")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        started = time.perf_counter()
        for i in range(1000):
            logger.warning("line %d", i)
        elapsed = time.perf_counter() - started
    finally:
        logger.removeHandler(handler)
        handler.queue.close(timeout_s=0.1)  # nothing will be delivered: do not wait long
    assert elapsed < 1.0, f"logging blocked for {elapsed:.2f} s"
    # Bounded: the queue holds 100, the sending thread at most one batch of 500; the rest is dropped.
    assert 1000 - 100 - 500 <= handler.dropped < 1000


def test_kafka_log_handler_delivers_log_events(tocsin_config):
    handler = KafkaLogHandler(tocsin_config.kafka, "shop")
    logger = logging.getLogger("test.kafka.handler.live")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("lookup failed", extra={"trace_id": "abc", "order": 5})
        logger.info("done")
    finally:
        logger.removeHandler(handler)
        handler.close()
    records = consume(tocsin_config, tocsin_config.kafka.topics.logs, expect=2, timeout_s=60)
    events = [default_codec().decode(r.value)[1] for r in records]
    assert [e["level"] for e in events] == ["ERROR", "INFO"]
    assert events[0]["trace_id"] == "abc" and events[0]["attrs"]["order"] == "5"
    assert "KeyError: 'k'" in events[0]["message"] and records[0].key == b"shop"


def _wsgi_app(environ, start_response):
    if environ["PATH_INFO"].startswith("/boom"):
        raise RuntimeError("boom")
    status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]


def _call_wsgi(app, path, method="GET"):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    body = app(environ, lambda status, headers, exc_info=None: None)
    list(body)
    body.close()


def test_wsgi_middleware_records_route_template_method_status():
    sink = ListMetricSink()
    app = WsgiTimingMiddleware(_wsgi_app, sink, "shop")
    _call_wsgi(app, "/orders/123")
    _call_wsgi(app, "/orders/456", "POST")
    _call_wsgi(app, "/missing")
    with pytest.raises(RuntimeError):
        _call_wsgi(app, "/boom/1")
    labels = [e["labels"] for e in sink.events]
    assert labels == [
        {"route": "/orders/{id}", "method": "GET", "status": "200"},
        {"route": "/orders/{id}", "method": "POST", "status": "200"},
        {"route": "/missing", "method": "GET", "status": "404"},
        {"route": "/boom/{id}", "method": "GET", "status": "500"},
    ]
    assert all(e["name"] == "api_response_time" and e["unit"] == "ms" and e["value"] >= 0 for e in sink.events)


def test_asgi_middleware_uses_the_frameworks_route_template():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    api = FastAPI()

    @api.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        time.sleep(0.01)
        return {"id": item_id}

    sink = ListMetricSink()
    client = TestClient(AsgiTimingMiddleware(api, sink, "shop"))
    assert client.get("/items/7").status_code == 200
    assert client.get("/items/not-a-number").status_code == 422
    assert client.get("/nope/3").status_code == 404
    labels = [e["labels"] for e in sink.events]
    assert labels == [
        {"route": "/items/{item_id}", "method": "GET", "status": "200"},
        {"route": "/items/{item_id}", "method": "GET", "status": "422"},
        {"route": "/nope/{id}", "method": "GET", "status": "404"},
    ]
    assert sink.events[0]["value"] >= 10.0


def test_asgi_middleware_passes_lifespan_untimed():
    sink = ListMetricSink()
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(AsgiTimingMiddleware(app, sink, "shop")({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"] and sink.events == []


def test_query_timer_as_context_manager_and_decorator():
    sink = ListMetricSink()

    @query_timer("load_order", sink, "shop", db="orders")
    def load() -> int:
        time.sleep(0.005)
        return 1

    assert load() == 1
    with pytest.raises(ValueError), query_timer("save_order", sink, "shop"):
        raise ValueError("constraint")
    first, second = sink.events
    assert first["name"] == "database_query_time" and first["labels"] == {"query": "load_order", "db": "orders"}
    assert first["value"] >= 5.0
    assert second["labels"] == {"query": "save_order", "db": "default", "error": "ValueError"}


def test_kafka_metric_sink_delivers_metric_events(tocsin_config):
    sink = KafkaMetricSink(tocsin_config.kafka)
    app = WsgiTimingMiddleware(_wsgi_app, sink, "shop")
    _call_wsgi(app, "/orders/1")
    sink.close()
    records = consume(tocsin_config, tocsin_config.kafka.topics.metrics, expect=1, timeout_s=60)
    event = default_codec().decode(records[0].value)[1]
    assert event["name"] == "api_response_time" and event["labels"]["route"] == "/orders/{id}"


def test_metrics_sampler_reports_the_seed_resources_and_watched_processes():
    cfg = make_config("127.0.0.1:1", "chdb:///nonexistent", agents={"metrics": {"processes": [
        {"name": "pytest-self", "match": "pytest"}]}})
    sampler = MetricsSampler(cfg.agents.metrics, "shop")
    sampler.sample()
    time.sleep(0.2)
    events = sampler.sample()
    by_name = {}
    for e in events:
        by_name.setdefault(e["name"], []).append(e)
    for name in ("cpu_usage", "memory_usage", "swap_usage", "disk_usage", "disk_read_bytes_per_s",
                 "net_recv_bytes_per_s", "load_1m", "process_count", "process_cpu_usage", "process_rss_bytes"):
        assert name in by_name, name
    assert 0 <= by_name["cpu_usage"][0]["value"] <= 100 and by_name["cpu_usage"][0]["unit"] == "percent"
    assert by_name["process_rss_bytes"][0]["value"] > 10 * 1024 * 1024
    assert by_name["process_rss_bytes"][0]["labels"] == {"process": "pytest-self"}
    assert all(e["service"] == "shop" for e in events)
    assert sample_once(cfg, warmup_s=0.05)


def test_agent_service_runs_metrics_and_health_together(tocsin_config, clickhouse_url, tmp_path):
    log = tmp_path / "app.log"
    log.write_text('{"message": "hello", "level": "info"}\n')
    cfg = make_config(tocsin_config.kafka.bootstrap_servers, clickhouse_url, agents={
        "service": "shop",
        "metrics": {"interval_s": 0.5},
        "health": {"interval_s": 3600, "clickhouse": False, "disk_paths": []},
        "logship": {"inputs": [{"paths": [str(log)], "service": "shop"}], "state_file": str(tmp_path / "st"),
                    "poll_interval_s": 0.05, "scan_interval_s": 0.2},
    })
    from tocsin.core.kafka import create_topics

    create_topics(cfg.kafka)
    service = build(cfg)
    thread = threading.Thread(target=lambda: (service.start(), service.run()), daemon=True)
    thread.start()
    try:
        metrics = consume(cfg, cfg.kafka.topics.metrics, expect=20, timeout_s=60)
        health = consume(cfg, cfg.kafka.topics.health, expect=1, timeout_s=60)
        logs = consume(cfg, cfg.kafka.topics.logs, expect=1, timeout_s=60)
    finally:
        service.close()
        service.close()  # idempotent
        thread.join(30)
    assert not thread.is_alive() and not service.failures
    assert sorted(c.name for c in service.components) == ["health", "logship", "metrics"]
    assert len(metrics) >= 20 and len(health) == 1 and len(logs) == 1
    assert default_codec().decode(logs[0].value)[1]["message"] == "hello"


def test_metrics_agent_keeps_sampling_while_kafka_is_down():
    cfg = make_config("127.0.0.1:1", "chdb:///nonexistent")
    agent = MetricsAgent(cfg, interval_s=0.2)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    agent.close()
    thread.join(15)
    assert not thread.is_alive() and agent.samples >= 1 and agent.sent == 0 and agent.failed > 0


def test_event_queue_counts_records_that_do_not_fit_the_schema(tocsin_config):
    q = EventQueue(tocsin_config.kafka, tocsin_config.kafka.topics.metrics, "MetricEvent")
    q.emit({"not": "a metric"})
    q.close()
    assert q.failed == 1 and q.sent == 0
