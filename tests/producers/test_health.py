"""Health probes: ``tocsin health --json`` against a real ClickHouse engine and a real HTTP endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from werkzeug import Response

from tests.producers.shiputil import consume
from tocsin.app.config import TocsinConfig
from tocsin.producers.config import HttpCheckConfig
from tocsin.producers.health import HealthProber, HealthScheduler, overall_status
from tocsin.schemas.codec import default_codec

# Disk and memory of a shared CI machine are not what these tests are about.
_QUIET = {"disk_warning_percent": 99.9, "disk_critical_percent": 100, "memory_warning_percent": 99.9,
          "memory_critical_percent": 100}


def _health_cli(tmp_path, url: str) -> tuple[int, dict]:
    config = tmp_path / "tocsin.yaml"
    config.write_text(json.dumps({
        "clickhouse": {"url": f"chdb://{tmp_path / 'ch'}", "database": "health_test"},
        "agents": {"service": "shop", "health": {**_QUIET, "http": [{"name": "payments", "url": url,
                                                                      "timeout_s": 1.0}]}},
    }))
    proc = subprocess.run([sys.executable, "-m", "tocsin", "-c", str(config), "health", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout, proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)


def _by_service(doc: dict) -> dict[str, dict]:
    return {c["service"]: c for c in doc["health_checks"]}


def test_health_json_against_clickhouse_and_http_200_then_500_then_timeout(httpserver, tmp_path):
    url = httpserver.url_for("/health")
    httpserver.expect_ordered_request("/health").respond_with_data("ok", status=200)
    httpserver.expect_ordered_request("/health").respond_with_data("down", status=500)
    httpserver.expect_ordered_request("/health").respond_with_handler(
        lambda _req: (time.sleep(2.5), Response("late"))[1])

    code, doc = _health_cli(tmp_path, url)
    checks = _by_service(doc)
    assert code == 0 and doc["overall_status"] in ("healthy", "degraded")
    db = checks["database"]
    assert db["status"] in ("healthy", "degraded") and db["error_message"] is None
    assert float(db["details"]["query_time_ms"]) >= 0 and db["response_time_ms"] > 0
    assert checks["http:payments"]["status"] == "healthy"
    assert checks["http:payments"]["details"]["status_code"] == "200"
    assert {"memory", "disk:/"} <= set(checks)

    code, doc = _health_cli(tmp_path, url)
    http = _by_service(doc)["http:payments"]
    assert code == 1 and doc["overall_status"] == "unhealthy"
    assert http["status"] == "unhealthy" and "unexpected status 500" in http["error_message"]

    code, doc = _health_cli(tmp_path, url)
    http = _by_service(doc)["http:payments"]
    assert code == 1 and http["status"] == "unhealthy" and http["error_message"] == "timeout after 1 s"
    assert 900 <= http["response_time_ms"] < 2500


def test_unreachable_database_is_unhealthy_not_a_crash(tocsin_config: TocsinConfig):
    prober = HealthProber(tocsin_config)
    result = prober.check_sql("oracle://nobody@127.0.0.1:1/x")
    assert result["status"] == "unhealthy" and "unsupported database scheme" in result["error"]
    dead = prober.check_http(HttpCheckConfig(name="dead", url="http://127.0.0.1:1/", timeout_s=0.5))
    assert dead["status"] == "unhealthy" and "ConnectionError" in dead["error"]
    assert overall_status([result, dead]) == "unhealthy" and overall_status([]) == "healthy"


def test_scheduled_probes_publish_health_events(tocsin_config: TocsinConfig, clickhouse_url):
    from tests.conftest import make_config
    from tocsin.core.kafka import create_topics

    cfg = make_config(tocsin_config.kafka.bootstrap_servers, clickhouse_url,
                      agents={"service": "shop", "health": {**_QUIET, "interval_s": 3600}})
    create_topics(cfg.kafka)
    scheduler = HealthScheduler(cfg)
    scheduler.start()
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while scheduler.runs < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = consume(cfg, cfg.kafka.topics.health, expect=3, timeout_s=60)
    scheduler.close()
    thread.join(10)
    events = [default_codec().decode(r.value)[1] for r in records]
    assert {e["check"] for e in events} == {"database", "disk:/", "memory"}
    assert all(r.key == b"shop" and e["service"] == "shop" for r, e in zip(records, events, strict=True))
    assert all(e["status"] in ("healthy", "degraded") for e in events)
