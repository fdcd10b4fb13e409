"""The processor's HTTP API end to end: a real ProcessorService on the real broker, served by uvicorn.

One processor serves the module (its start costs a group join and a
changelog read); each test injects events for its own services. The broker
outage test runs its own broker, so the shared one is never stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import kafkautil
from tests.conftest import make_config, unique
from tests.kafkautil import consume_all, produce
from tocsin.app.config import TocsinConfig
from tocsin.core.events import CONTROL_EVENT, HEALTH_EVENT, LOG_EVENT, METRIC_EVENT, now_us
from tocsin.core.kafka import create_topics
from tocsin.processors.http import create_app, serve, stop
from tocsin.processors.http.app import SEED_PREFIX
from tocsin.processors.service import ProcessorService
from tocsin.processors.view import ProcessorView, ServiceView
from tocsin.schemas.codec import default_codec

TOKEN = "e2e-token-" + "x" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
S = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processor_config(bootstrap: str, clickhouse_url: str) -> TocsinConfig:
    """Own topics, own consumer group (tests run side by side on one broker), own port, a token."""
    cfg = make_config(bootstrap, clickhouse_url,
                      api={"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}", "service_name": "e2e-processor"},
                      processor={"group_id": unique("http-e2e"), "heartbeat_interval_s": 5.0})
    create_topics(cfg.kafka)
    return cfg


@dataclass
class Running:
    url: str
    cfg: TocsinConfig
    service: ProcessorService
    view: ProcessorView


@contextlib.contextmanager
def running_processor(cfg: TocsinConfig, extra_routers: list[Any] | None = None,
                      scoped_routers: list[Any] | None = None) -> Iterator[Running]:
    """A ProcessorService with its HTTP app (and ``extra_routers``, e.g. the store API), stopped on exit."""
    service = ProcessorService(cfg)
    service.start()
    view = ProcessorView(service)
    server, thread = serve(create_app(view, cfg, extra_routers=extra_routers, scoped_routers=scoped_routers), cfg)
    loop = threading.Thread(target=service.run, name="processor-loop", daemon=True)
    loop.start()
    try:
        yield Running(f"http://{cfg.api.http_addr}", cfg, service, view)
    finally:
        service.stop()
        loop.join(60)
        # close() commits and leaves the group: bounded here so a broken broker cannot hang the suite
        closer = threading.Thread(target=service.close, name="processor-close", daemon=True)
        closer.start()
        closer.join(90)
        stop(server, thread)
        view.close()
        assert not loop.is_alive() and not closer.is_alive(), "the processor did not stop within 150 s"


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """``tests.kafkautil.wait_for`` for HTTP probes: a refused or failed request is a "not yet"."""
    return kafkautil.wait_for(probe, timeout_s, what, every_s=0.25, ignore=(requests.RequestException,))


def inject_incident(cfg: TocsinConfig, service: str, *, errors: int = 40, message: str = "payment gateway timeout",
                    health_error: str | None = None) -> None:
    """Error logs (past the seed's 5 errors/min), latency samples and a health probe result for ``service``."""
    now = now_us()
    logs = [{"event_id": unique("l"), "ts": now - (errors - i) * 200_000, "service": service, "host": "web-1",
             "level": "ERROR", "logger": "shop.pay", "message": message, "trace_id": None, "attrs": {}}
            for i in range(errors)]
    produce(cfg.kafka, cfg.kafka.topics.logs, LOG_EVENT, logs)
    metrics = [{"event_id": unique("m"), "ts": now - (50 - i) * 100_000, "service": service, "host": "web-1",
                "name": "api_response_time", "value": 100.0 + 4 * i, "unit": "ms", "labels": {}} for i in range(50)]
    produce(cfg.kafka, cfg.kafka.topics.metrics, METRIC_EVENT, metrics)
    health = {"event_id": unique("h"), "ts": now, "service": service, "host": "web-1", "check": "database",
              "status": "unhealthy" if health_error else "healthy", "response_time_ms": 12.5,
              "details": {"query_time_ms": "12.5"}, "error": health_error}
    produce(cfg.kafka, cfg.kafka.topics.health, HEALTH_EVENT, [health])


def active_alert(url: str, service: str) -> dict[str, Any] | None:
    body = requests.get(f"{url}/api/alerts", headers=AUTH, params={"service": service}, timeout=10).json()
    return next((a for a in body["active"]["items"] if a["rule"] == "error_rate"), None)


def test_the_view_is_the_one_service_view(proc: Running) -> None:
    assert isinstance(proc.view, ServiceView) and not isinstance(proc.service, ServiceView)


@pytest.mark.parametrize("path", ["/health", f"{SEED_PREFIX}/health/"])
def test_health_is_open_and_healthy_while_consuming(proc: Running, path: str) -> None:
    r = requests.get(proc.url + path, timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "healthy" and r.json()["service"] == "e2e-processor"


def test_every_protected_endpoint_wants_the_token(proc: Running) -> None:
    for method, path in [("GET", "/health/detailed"), ("GET", "/api/alerts"), ("POST", "/api/alerts/resolve"),
                         ("GET", "/api/dashboard"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                         ("GET", f"{SEED_PREFIX}/dashboard/"), ("POST", f"{SEED_PREFIX}/alerts/resolve/")]:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = requests.request(method, proc.url + path, headers=headers, json={"alert_id": "x"}, timeout=10)
            assert r.status_code == 401, (method, path, headers)


def test_an_incident_shows_in_alerts_detailed_health_and_dashboard(proc: Running) -> None:
    svc = unique("checkout")
    inject_incident(proc.cfg, svc, health_error="connection refused")
    alert = wait_for("the error_rate alert", lambda: active_alert(proc.url, svc))
    assert alert["state"] == "firing" and alert["severity"] == "critical" and alert["service"] == svc
    assert alert["value"] > 5 and alert["threshold"] == 5
    assert svc in alert["annotations"]["summary"]

    for path in ("/health/detailed", f"{SEED_PREFIX}/health/detailed/"):
        detailed = wait_for("the health event", lambda p=path: _detailed_with(proc.url + p, svc))
        checks = {(c["service"], c["check"]): c for c in detailed["health_checks"]}
        db = checks[(svc, "database")]
        assert db["status"] == "unhealthy" and db["error_message"] == "connection refused"
        assert db["response_time_ms"] == 12.5 and db["details"] == {"query_time_ms": "12.5"}
        assert checks[("e2e-processor", "kafka")]["status"] == "healthy"
        assert ("e2e-processor", "consumer_lag") in checks
        assert detailed["overall_status"] == "degraded"  # a monitored dependency is down
        assert detailed["active_alerts_count"] >= 1 and detailed["uptime_seconds"] > 0
        assert detailed["performance_summary"]["error_count_1h"] >= 40

    doc = wait_for("the chart series", lambda: _dashboard_with_series(proc.url, svc))
    assert any(a["alert_id"] == alert["alert_id"] for a in doc["active_alerts"])
    assert any(h["rule"] == "error_rate" and h["service"] == svc for h in doc["alert_history"])
    series = next(s for s in doc["series"] if s["service"] == svc)
    assert sum(p["errors"] for p in series["points"]) == 40
    p95s = [p["p95_latency_ms"] for p in series["points"] if p["p95_latency_ms"] is not None]
    assert p95s and 250 < max(p95s) < 310  # p95 of 100..296 ms, within the sketch's 1 %
    assert doc["status"]["live"] is True and doc["status"]["kafka"] is True
    assert doc["throughput"]["processed_total"] >= 91 and doc["throughput"]["lag"]
    seed = requests.get(f"{proc.url}{SEED_PREFIX}/dashboard/", headers=AUTH, timeout=10)
    assert seed.status_code == 200 and set(seed.json()) == set(doc)


def _detailed_with(url: str, service: str) -> dict[str, Any] | None:
    doc = requests.get(url, headers=AUTH, timeout=10).json()
    seen = any(c["service"] == service for c in doc["health_checks"])
    return doc if seen and doc["performance_summary"]["error_count_1h"] >= 40 else None


def _dashboard_with_series(url: str, service: str) -> dict[str, Any] | None:
    doc = requests.get(f"{url}/api/dashboard", headers=AUTH, timeout=10).json()
    return doc if any(s["service"] == service for s in doc["series"]) else None


def test_resolve_publishes_a_control_event_and_the_alert_leaves(proc: Running) -> None:
    svc = unique("payments")
    inject_incident(proc.cfg, svc)
    alert = wait_for("the error_rate alert", lambda: active_alert(proc.url, svc))
    r = requests.post(f"{proc.url}/api/alerts/resolve", headers=AUTH,
                      json={"alert_id": alert["alert_id"], "reason": "gateway failed over", "actor": "alice"},
                      timeout=30)
    assert r.status_code == 202 and r.json() == {"alert_id": alert["alert_id"], "status": "accepted"}
    wait_for("the alert to leave the active list", lambda: active_alert(proc.url, svc) is None)

    codec = default_codec()
    controls = [codec.decode(m.value)[1] for m in consume_all(proc.cfg.kafka, proc.cfg.kafka.topics.control)]
    mine = [c for c in controls if c["alert_id"] == alert["alert_id"]]
    assert len(mine) == 1
    assert mine[0]["action"] == "resolve" and mine[0]["reason"] == "gateway failed over"
    # the actor is the token's name (api.token is the admin token "admin"), never the body's "alice"
    assert mine[0]["actor"] == "admin" and mine[0]["fingerprint"] == alert["fingerprint"]
    assert codec.decode(codec.encode(CONTROL_EVENT, mine[0]))[0] == CONTROL_EVENT

    history = requests.get(f"{proc.url}/api/alerts", headers=AUTH, timeout=10,
                           params={"service": svc, "state": "resolved"}).json()["history"]["items"]
    assert history and history[0]["resolved_by"] == "admin" and history[0]["alert_id"] == alert["alert_id"]

    def resolved_again() -> bool:
        again = requests.post(f"{proc.url}{SEED_PREFIX}/alerts/resolve/", headers=AUTH,
                              json={"alert_id": alert["alert_id"]}, timeout=30)
        assert again.status_code == 202
        return again.json()["status"] == "already_resolved"

    wait_for("the second resolve to be recognised as harmless", resolved_again, timeout_s=10)
    unknown = requests.post(f"{proc.url}/api/alerts/resolve", headers=AUTH,
                            json={"alert_id": "no-such-fingerprint-123"}, timeout=60)
    assert unknown.status_code == 404


def test_metrics_count_the_consumed_events_and_pass_promtool(proc: Running) -> None:
    svc = unique("catalog")
    before = _metric_values(requests.get(f"{proc.url}/metrics", headers=AUTH, timeout=10).text)
    inject_incident(proc.cfg, svc, errors=10)
    t = proc.cfg.kafka.topics
    key = f'tocsin_processor_events_processed_total{{topic="{t.logs}"}}'
    consumed = f'tocsin_processor_events_consumed_total{{topic="{t.metrics}"}}'

    def grown() -> dict[str, float] | None:  # both topics: they come in different fetches
        after = _metric_values(requests.get(f"{proc.url}/metrics", headers=AUTH, timeout=10).text)
        return after if (after.get(key, 0) - before.get(key, 0) >= 10
                         and after.get(consumed, 0) - before.get(consumed, 0) >= 50) else None

    after = wait_for("the processed and consumed counters to grow", grown)
    assert after["tocsin_processor_kafka_reachable"] == 1 and after["tocsin_processor_consuming"] == 1
    assert after['tocsin_processor_processing_latency_seconds_bucket{le="+Inf"}'] > 0
    assert 'tocsin_processor_active_alerts{severity="critical"}' in after
    assert any(k.startswith("tocsin_processor_consumer_lag_messages{") for k in after)
    assert "tocsin_processor_live_series" in after and "tocsin_processor_events_deadlettered_total" in after
    text = requests.get(f"{proc.url}/metrics", headers=AUTH, timeout=10).text
    check = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def _metric_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_schemathesis_finds_no_server_error_and_no_undocumented_status(proc: Running, tmp_path: Path) -> None:
    """Property-based requests from the OpenAPI schema, with the token: every check schemathesis has."""
    pytest.importorskip("schemathesis", reason="pip install schemathesis (a test dependency)")
    cli = shutil.which("schemathesis") or shutil.which("st")
    cmd = [cli] if cli else [sys.executable, "-m", "schemathesis.cli"]
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [*cmd, "run", f"{proc.url}/openapi.json", "--header", f"Authorization: Bearer {TOKEN}",
         "--checks", "all", "--max-examples", "25", "--workers", "1", "--request-timeout", "60",
         "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=600, env=_schemathesis_env())
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _schemathesis_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = ""
    env.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="st-hyp-"))
    return env


@pytest.mark.slow
def test_health_is_503_while_the_broker_is_down_and_200_when_it_returns(clickhouse_url: str, tmp_path: Path) -> None:
    """Our own broker, stopped and restarted on the same port: the shared one is never touched."""
    from tocsin.core import localkafka

    data_dir = tmp_path / "kafka"
    state = _own_broker(data_dir)
    try:
        cfg = processor_config(state.bootstrap, clickhouse_url)
        with running_processor(cfg) as running:
            health = f"{running.url}/health"
            wait_for("healthy", lambda: requests.get(health, timeout=5).status_code == 200, timeout_s=90)
            assert requests.get(f"{running.url}{SEED_PREFIX}/health/", timeout=5).status_code == 200

            localkafka.down(data_dir)
            down = wait_for("503 with the broker stopped", lambda: _unhealthy(health), timeout_s=60)
            assert down["status"] == "unhealthy" and down["reasons"]
            seed = requests.get(f"{running.url}{SEED_PREFIX}/health/", timeout=5)
            assert seed.status_code == 503
            # the API keeps answering from memory while the broker is away
            dash = requests.get(f"{running.url}/api/dashboard", headers=AUTH, timeout=5)
            assert dash.status_code == 200 and dash.json()["status"]["live"] is False
            started = time.monotonic()
            assert requests.get(f"{running.url}/metrics", headers=AUTH, timeout=5).status_code == 200
            assert time.monotonic() - started < 2

            localkafka.up(port=state.port, data_dir=data_dir)
            wait_for("200 with the broker back", lambda: requests.get(health, timeout=5).status_code == 200,
                     timeout_s=120)
            svc = unique("after-outage")
            inject_incident(cfg, svc)
            wait_for("processing to resume", lambda: active_alert(running.url, svc), timeout_s=90)
    finally:
        localkafka.down(data_dir)


def _own_broker(data_dir: Path):
    """localkafka.up, retried: its random cluster id can start with '-', which kafka-storage takes for an option."""
    from tocsin.core import localkafka
    from tocsin.core.errors import LocalKafkaError

    for attempt in range(3):
        try:
            return localkafka.up(data_dir=data_dir)
        except LocalKafkaError:
            if attempt == 2:
                raise
            shutil.rmtree(data_dir, ignore_errors=True)
    raise AssertionError("unreachable")


def _unhealthy(url: str) -> dict[str, Any] | None:
    r = requests.get(url, timeout=5)
    return r.json() if r.status_code == 503 else None
