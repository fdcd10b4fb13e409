"""The HTTP layer over an in-memory ServiceView: routes, auth, status codes, documents, escaping-free JSON.

The processor itself is exercised end to end in test_http_e2e.py; here the
view is a plain object so every branch (unhealthy, degraded, unknown id,
Kafka failing on resolve) is reachable without timing.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from tests.conftest import make_config
from tocsin.core.errors import ConfigError, KafkaError
from tocsin.core.events import now_us
from tocsin.processors.http import create_app, serve, stop
from tocsin.processors.http.app import SEED_PREFIX
from tocsin.processors.view import (
    CHART_SERVICES,
    Counters,
    LatencyHistogram,
    ResolveOutcome,
    SeriesPoint,
    ServiceView,
    Snapshot,
)

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MINUTE_US = 60 * 1_000_000


def alert(alert_id: str, service: str, severity: str = "critical", state: str = "firing", **kw: Any) -> dict:
    ts = kw.pop("ts", now_us())
    return {
        "event_id": f"{alert_id}:{state}", "ts": ts, "alert_id": alert_id, "fingerprint": f"fp-{alert_id}",
        "rule": kw.pop("rule", "error_rate"), "severity": severity, "previous_severity": "none", "state": state,
        "previous_state": "pending", "value": kw.pop("value", 7.0), "threshold": 5.0,
        "labels": {"service": service}, "annotations": kw.pop("annotations", {"summary": f"{service} errors"}),
        "started_at": kw.pop("started_at", ts), "ended_at": None, "resolved_by": None, **kw,
    }


@dataclass
class MemoryView:
    """A ServiceView over plain attributes: ``snapshot()`` builds a Snapshot of them; ``resolve`` records."""

    live: bool = True
    kafka: bool = True
    clickhouse: bool | None = None
    active: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    health: list[dict] = field(default_factory=list)
    series: dict[str, list[SeriesPoint]] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    counts: Counters = field(default_factory=Counters)
    published: list[tuple[str, str, str]] = field(default_factory=list)
    kafka_fails_on_resolve: bool = False

    def snapshot(self) -> Snapshot:
        ranked = sorted(self.series.items(), key=lambda kv: (-sum(p.errors for p in kv[1]), kv[0]))
        since = now_us() - 3600 * 1_000_000
        return Snapshot(
            counters=self.counts, lag=self.lag, active=self.active, history=self.history, health=self.health,
            series=dict(ranked[:CHART_SERVICES]), kafka=self.kafka, clickhouse=self.clickhouse, running=self.live,
            error_count_1h=sum(p.errors for points in self.series.values() for p in points if p.ts_us > since),
            started_at_us=now_us() - 12_500_000)

    def resolve(self, alert_id: str, reason: str, actor: str) -> ResolveOutcome:
        if self.kafka_fails_on_resolve:
            raise KafkaError("publishing the ControlEvent failed: broker unreachable")
        if any(a["alert_id"] == alert_id for a in self.active):
            self.published.append((alert_id, reason, actor))
            self.active = [a for a in self.active if a["alert_id"] != alert_id]
            return "accepted"
        if any(a["alert_id"] == alert_id for a in self.history):
            return "already_resolved"
        return "unknown"


def make_app(view: ServiceView, token: str | None = TOKEN, **api: Any):
    cfg = make_config("127.0.0.1:9", "chdb:///tmp/unused",
                      api={"token": token, "service_name": "shop-processor", **api})
    return create_app(view, cfg)


@pytest.fixture
def view() -> MemoryView:
    return MemoryView()


@pytest.fixture
def client(view: MemoryView) -> TestClient:
    return TestClient(make_app(view))


def test_memory_view_satisfies_the_protocol(view: MemoryView) -> None:
    assert isinstance(view, ServiceView) and isinstance(view.snapshot(), Snapshot)


@pytest.mark.parametrize("path", ["/health", f"{SEED_PREFIX}/health/"])
def test_health_is_open_and_healthy_while_consuming(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["service"] == "shop-processor" and body["reasons"] == []
    assert body["timestamp"].endswith("Z")
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("live", "kafka", "reason"), [
    (False, True, "the consumer loop is not polling"),
    (True, False, "Kafka is unreachable"),
])
def test_health_is_503_with_the_reason(view: MemoryView, client: TestClient, live: bool, kafka: bool,
                                       reason: str) -> None:
    view.live, view.kafka = live, kafka
    for path in ("/health", f"{SEED_PREFIX}/health/"):
        r = client.get(path)
        assert r.status_code == 503
        assert r.json()["status"] == "unhealthy" and r.json()["reasons"] == [reason]


def test_the_health_fast_path_answers_like_the_documented_route(view: MemoryView) -> None:
    from tocsin.processors.http.app import HealthProbe

    without = make_app(view)
    without.user_middleware = [m for m in without.user_middleware if m.cls is not HealthProbe]
    fast, routed = TestClient(make_app(view)), TestClient(without)
    for live in (True, False):
        view.live = live
        for path in ("/health", f"{SEED_PREFIX}/health/"):
            a, b = fast.get(path), routed.get(path)
            assert a.status_code == b.status_code == (200 if live else 503)
            assert {k: v for k, v in a.json().items() if k != "timestamp"} == \
                   {k: v for k, v in b.json().items() if k != "timestamp"}
            assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
            assert a.headers["cache-control"] == b.headers["cache-control"] == "no-store"
            assert a.headers["x-content-type-options"] == "nosniff"


PROTECTED = [
    ("GET", "/health/detailed"), ("GET", f"{SEED_PREFIX}/health/detailed/"),
    ("GET", "/api/alerts"), ("GET", f"{SEED_PREFIX}/alerts/"),
    ("POST", "/api/alerts/resolve"), ("POST", f"{SEED_PREFIX}/alerts/resolve/"),
    ("GET", "/api/dashboard"), ("GET", f"{SEED_PREFIX}/dashboard/"),
    ("GET", "/metrics"), ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}])
def test_everything_but_health_wants_the_token(client: TestClient, method: str, path: str,
                                              headers: dict[str, str]) -> None:
    r = client.request(method, path, headers=headers, json={"alert_id": "a1"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_configured_token_closes_the_api(view: MemoryView, method: str, path: str) -> None:
    client = TestClient(make_app(view, token=None))
    assert client.request(method, path, headers={"Authorization": "Bearer "}, json={"alert_id": "a"}).status_code == 401
    assert client.request(method, path, headers=AUTH, json={"alert_id": "a"}).status_code == 401
    assert client.get("/health").status_code == 200


def test_token_comparison_is_constant_time() -> None:
    import inspect

    from tocsin.processors.http import auth

    assert "hmac.compare_digest" in inspect.getsource(auth.TokenAuth.check)


def test_detailed_health_has_the_seed_shape(view: MemoryView, client: TestClient) -> None:
    now = now_us()
    view.health = [
        {"event_id": "h1", "ts": now, "service": "shop", "host": "web-1", "check": "database", "status": "healthy",
         "response_time_ms": 12.5, "details": {"query_time_ms": "12.5"}, "error": None},
    ]
    view.active = [alert("a1", "shop")]
    view.series = {"shop": [SeriesPoint(now - 2 * MINUTE_US, 3, 3.0, 120.0),
                            SeriesPoint(now - 90 * MINUTE_US, 100, 100.0, None)]}
    view.lag = {("t.logs", 0): 5, ("t.logs", 1): 7}
    view.counts = Counters(events_per_s=1234.5)
    body = client.get("/health/detailed", headers=AUTH).json()
    assert set(body) == {"overall_status", "timestamp", "uptime_seconds", "health_checks", "active_alerts_count",
                         "performance_summary"}
    assert body["overall_status"] == "healthy"
    assert abs(body["uptime_seconds"] - 12.5) < 1
    assert body["active_alerts_count"] == 1
    # only points within the last hour count
    assert body["performance_summary"] == {"error_count_1h": 3, "events_per_s": 1234.5, "consumer_lag": 12}
    by_check = {(c["service"], c["check"]): c for c in body["health_checks"]}
    assert set(by_check) == {("shop-processor", "kafka"), ("shop-processor", "consumer_lag"), ("shop", "database")}
    db = by_check[("shop", "database")]
    assert db["response_time_ms"] == 12.5 and db["details"] == {"query_time_ms": "12.5"}
    assert db["error_message"] is None and db["status"] == "healthy"


def test_detailed_health_degrades_on_a_failing_check_and_clickhouse(view: MemoryView, client: TestClient) -> None:
    view.health = [{"event_id": "h", "ts": now_us(), "service": "shop", "host": "h", "check": "cache",
                    "status": "unhealthy", "response_time_ms": None, "details": {}, "error": "connection refused"}]
    body = client.get("/health/detailed", headers=AUTH).json()
    assert body["overall_status"] == "degraded"
    view.health = []
    view.clickhouse = False
    body = client.get("/health/detailed", headers=AUTH).json()
    assert body["overall_status"] == "degraded"
    assert any(c["check"] == "clickhouse" and c["status"] == "unhealthy" for c in body["health_checks"])
    view.live = False
    assert client.get("/health/detailed", headers=AUTH).json()["overall_status"] == "unhealthy"


def test_consumer_lag_above_the_limit_degrades(view: MemoryView, client: TestClient) -> None:
    from tocsin.processors.http.documents import LAG_DEGRADED

    view.lag = {("t.logs", 0): LAG_DEGRADED + 1}
    body = client.get("/health/detailed", headers=AUTH).json()
    assert body["overall_status"] == "degraded"
    lag = next(c for c in body["health_checks"] if c["check"] == "consumer_lag")
    assert lag["status"] == "degraded" and str(LAG_DEGRADED + 1) in lag["error_message"]


def _alerts_fixture(view: MemoryView) -> None:
    t = now_us()
    view.active = [alert("w1", "cart", "warning", started_at=t - 5), alert("c1", "shop", "critical", started_at=t - 9),
                   alert("c2", "cart", "critical", started_at=t - 1),
                   alert("p1", "shop", "warning", "pending", started_at=t - 20)]
    view.history = [alert(f"h{i}", "shop" if i % 2 else "cart", "warning", "resolved" if i % 3 else "firing",
                          ts=t - i) for i in range(30)]


def test_alerts_lists_active_critical_first_and_history(view: MemoryView, client: TestClient) -> None:
    _alerts_fixture(view)
    body = client.get("/api/alerts", headers=AUTH).json()
    assert [a["alert_id"] for a in body["active"]["items"]] == ["c2", "c1", "w1", "p1"]
    assert body["active"]["total"] == 4 and body["history"]["total"] == 30
    assert len(body["history"]["items"]) == 30 and body["limit"] == 50 and body["offset"] == 0
    first = body["active"]["items"][0]
    assert first["service"] == "cart" and first["labels"] == {"service": "cart"}
    assert first["started_at"].endswith("Z") and first["ended_at"] is None


def test_alerts_filter_and_page(view: MemoryView, client: TestClient) -> None:
    _alerts_fixture(view)
    body = client.get("/api/alerts", headers=AUTH, params={"service": "shop", "severity": "warning"}).json()
    assert [a["alert_id"] for a in body["active"]["items"]] == ["p1"]
    assert all(a["service"] == "shop" and a["severity"] == "warning" for a in body["history"]["items"])
    assert body["history"]["total"] == 15
    page = client.get("/api/alerts", headers=AUTH, params={"state": "resolved", "limit": 5, "offset": 5}).json()
    resolved = [a for a in view.history if a["state"] == "resolved"]
    assert page["history"]["total"] == len(resolved)
    assert [a["alert_id"] for a in page["history"]["items"]] == [a["alert_id"] for a in resolved[5:10]]
    assert page["active"]["total"] == 0
    seed = client.get(f"{SEED_PREFIX}/alerts/", headers=AUTH, params={"state": "resolved", "limit": 5, "offset": 5})
    assert seed.json() == page


@pytest.mark.parametrize("params", [{"severity": "loud"}, {"state": "open"}, {"limit": 0}, {"limit": 501},
                                    {"offset": -1}, {"limit": "many"}])
def test_alerts_rejects_bad_filters_with_422(client: TestClient, params: dict) -> None:
    assert client.get("/api/alerts", headers=AUTH, params=params).status_code == 422


def test_resolve_publishes_once_answers_202_twice_and_404_for_unknown(view: MemoryView, client: TestClient) -> None:
    view.active = [alert("a1", "shop")]
    view.history = [alert("a1", "shop")]
    r = client.post("/api/alerts/resolve", headers=AUTH, json={"alert_id": "a1", "reason": "fixed the db"})
    assert r.status_code == 202 and r.json() == {"alert_id": "a1", "status": "accepted"}
    assert view.published == [("a1", "fixed the db", "api")]
    again = client.post(f"{SEED_PREFIX}/alerts/resolve/", headers=AUTH, json={"alert_id": "a1", "actor": "bob"})
    assert again.status_code == 202 and again.json()["status"] == "already_resolved"
    assert len(view.published) == 1
    unknown = client.post("/api/alerts/resolve", headers=AUTH, json={"alert_id": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]


@pytest.mark.parametrize("body", [{}, {"alert_id": ""}, {"alert_id": "x" * 257}, {"alert_id": 5, "reason": []}])
def test_resolve_validates_its_body(client: TestClient, body: dict) -> None:
    assert client.post("/api/alerts/resolve", headers=AUTH, json=body).status_code == 422


def test_resolve_answers_503_when_kafka_fails(view: MemoryView, client: TestClient) -> None:
    view.active = [alert("a1", "shop")]
    view.kafka_fails_on_resolve = True
    r = client.post("/api/alerts/resolve", headers=AUTH, json={"alert_id": "a1"})
    assert r.status_code == 503 and "broker unreachable" in r.json()["detail"]
    assert r.headers["retry-after"] == "5"


def test_dashboard_json_has_everything_the_page_draws(view: MemoryView, client: TestClient) -> None:
    _alerts_fixture(view)
    now = now_us()
    view.series = {f"svc{i:02d}": [SeriesPoint(now - MINUTE_US * (59 - m), errors=i, error_rate_per_min=float(i),
                                               p95_latency_ms=100.0 + m) for m in range(60)] for i in range(20)}
    view.lag = {("t.logs", 2): 9, ("t.metrics", 0): 1}
    view.counts = Counters(consumed={"t.logs": 10}, processed={"t.logs": 9}, late=1, dead_lettered=2,
                           decode_errors=1, live_series=40, events_per_s=50.0)
    for path in ("/api/dashboard", f"{SEED_PREFIX}/dashboard/"):
        doc = client.get(path, headers=AUTH).json()
        assert doc["status"]["active_alerts"] == 4 and doc["status"]["critical_alerts"] == 2
        assert doc["status"]["live"] is True and doc["status"]["clickhouse"] is None
        assert doc["throughput"]["consumer_lag"] == 10
        assert doc["throughput"]["lag"] == [{"topic": "t.logs", "partition": 2, "lag": 9},
                                            {"topic": "t.metrics", "partition": 0, "lag": 1}]
        assert doc["throughput"]["dead_lettered_total"] == 2 and doc["throughput"]["processed_total"] == 9
        assert [a["alert_id"] for a in doc["active_alerts"]][:2] == ["c2", "c1"]
        assert len(doc["alert_history"]) == 30
        # the 12 services with the most errors, each with its hour of points
        assert [s["service"] for s in doc["series"]] == [f"svc{i:02d}" for i in range(8, 20)]
        assert len(doc["series"][0]["points"]) == 60
        assert doc["series"][0]["points"][0]["p95_latency_ms"] == 100.0


def test_non_finite_numbers_become_null_not_500(view: MemoryView, client: TestClient) -> None:
    view.active = [alert("a1", "shop", value=math.nan), alert("a2", "shop", value=math.inf)]
    view.series = {"shop": [SeriesPoint(now_us(), 1, math.inf, math.nan)]}
    view.health = [{"event_id": "h", "ts": now_us(), "service": "s", "host": "h", "check": "c", "status": "healthy",
                    "response_time_ms": math.nan, "details": {}, "error": None}]
    view.counts = Counters(events_per_s=math.nan)
    doc = client.get("/api/dashboard", headers=AUTH).json()
    assert {a["value"] for a in doc["active_alerts"]} == {None}
    assert doc["series"][0]["points"][0]["p95_latency_ms"] is None
    assert client.get("/api/alerts", headers=AUTH).status_code == 200
    assert client.get("/health/detailed", headers=AUTH).status_code == 200


def test_dashboard_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http://" not in html.replace('xmlns="http://www.w3.org', "") and "https://" not in html
    assert '<script src="/dashboard/dashboard.js"' in html
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    js = client.get("/dashboard/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/dashboard.css").headers["content-type"].startswith("text/css")
    # event strings are only ever set as text, and the token only as a header
    assert "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text and "document.write" not in js.text
    assert "sessionStorage" in js.text and '"Authorization": "Bearer "' in js.text
    assert "token=" not in js.text and "?token" not in html


def test_openapi_schema_is_served_behind_the_token(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=AUTH).json()
    paths = schema["paths"]
    for path in ("/health", "/health/detailed", "/api/alerts", "/api/alerts/resolve", "/api/dashboard", "/metrics",
                 f"{SEED_PREFIX}/health/", f"{SEED_PREFIX}/alerts/resolve/"):
        assert path in paths
    assert "security" not in paths["/health"]["get"]
    assert paths["/api/alerts"]["get"]["security"] == [{"HTTPBearer": []}]
    assert set(paths["/api/alerts/resolve"]["post"]["responses"]) >= {"202", "401", "404", "422", "503"}
    assert client.get("/docs").status_code == 404  # Swagger UI loads from a CDN: not served


def test_extra_routers_sit_behind_the_token(view: MemoryView) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/api/store/ping")
    def ping() -> dict:
        return {"pong": True}

    cfg = make_config("127.0.0.1:9", "chdb:///tmp/unused", api={"token": TOKEN})
    client = TestClient(create_app(view, cfg, extra_routers=[router]))
    assert client.get("/api/store/ping").status_code == 401
    assert client.get("/api/store/ping", headers=AUTH).json() == {"pong": True}


def test_serve_runs_uvicorn_in_a_thread_and_stops(view: MemoryView) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config("127.0.0.1:9", "chdb:///tmp/unused", api={"token": TOKEN, "http_addr": f"127.0.0.1:{port}"})
    app = create_app(view, cfg)
    server, thread = serve(app, cfg)
    try:
        assert thread.is_alive() and thread is not threading.main_thread()
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        # keep-alive requests must not wait on delayed ACKs (Nagle): ~40 ms each if TCP_NODELAY is missing
        with requests.Session() as session:
            times = []
            for _ in range(20):
                started = time.perf_counter()
                assert session.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
                times.append(time.perf_counter() - started)
        assert sorted(times)[10] < 0.02, times
        with pytest.raises(ConfigError, match="cannot listen"):
            serve(app, cfg)  # the port is taken: a clear error, not a dead thread
    finally:
        stop(server, thread)
    assert not thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    stop(server, thread)  # twice is harmless


def test_metrics_pass_promtool(view: MemoryView, client: TestClient) -> None:
    _alerts_fixture(view)
    view.lag = {("t.logs", 0): 3, ("t.logs", 1): 0}
    view.counts = Counters(consumed={"t.logs": 10, "t.metrics": 4}, processed={"t.logs": 9, "t.metrics": 4}, late=2,
                           dead_lettered=3, decode_errors=1, live_series=17,
                           latency=LatencyHistogram(buckets=((0.001, 5), (0.01, 9), (0.1, 10)), count=11, sum_s=0.5))
    text = client.get("/metrics", headers=AUTH).text
    expected = [
        'tocsin_processor_events_consumed_total{topic="t.logs"} 10.0',
        'tocsin_processor_events_processed_total{topic="t.metrics"} 4.0',
        "tocsin_processor_events_late_total 2.0", "tocsin_processor_events_deadlettered_total 3.0",
        "tocsin_processor_decode_errors_total 1.0", "tocsin_processor_live_series 17.0",
        'tocsin_processor_processing_latency_seconds_bucket{le="0.01"} 9.0',
        'tocsin_processor_processing_latency_seconds_bucket{le="+Inf"} 11.0',
        "tocsin_processor_processing_latency_seconds_sum 0.5",
        'tocsin_processor_active_alerts{severity="critical"} 2.0',
        'tocsin_processor_active_alerts{severity="warning"} 2.0',
        'tocsin_processor_consumer_lag_messages{partition="0",topic="t.logs"} 3.0',
        "tocsin_processor_kafka_reachable 1.0",
    ]
    for line in expected:
        assert line in text.splitlines(), line
    check = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_each_app_has_its_own_registry() -> None:
    a, b = MemoryView(counts=Counters(late=1)), MemoryView(counts=Counters(late=2))
    ta, tb = TestClient(make_app(a)), TestClient(make_app(b))
    assert "tocsin_processor_events_late_total 1.0" in ta.get("/metrics", headers=AUTH).text
    assert "tocsin_processor_events_late_total 2.0" in tb.get("/metrics", headers=AUTH).text


def test_the_store_api_mounts_behind_the_same_token(view: MemoryView) -> None:
    from tocsin.sinks.clickhouse.store_api import store_router

    def no_store() -> None:
        raise AssertionError("a refused request must not reach the store")

    cfg = make_config("127.0.0.1:9", "chdb:///tmp/unused", api={"token": TOKEN})
    client = TestClient(create_app(view, cfg, extra_routers=[store_router(no_store, cfg)]))
    body = {"sql": "SELECT 1", "readonly": False}
    assert client.post("/api/store/query", json=body).status_code == 401
    assert client.post("/api/store/query", json=body, headers={"Authorization": "Bearer no"}).status_code == 401
    assert client.post("/api/store/query", json=body, headers=AUTH).status_code == 403  # past auth: read-only rule
    assert "/api/store/query" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def _service_with_an_alert() -> Any:
    """A real ProcessorService, not started (no Kafka): its engine holds one firing alert, its history one resolved."""
    from tests.processors.helpers import T0, S, engine, metric, rules
    from tocsin.processors.service import ProcessorService

    svc = ProcessorService(make_config("127.0.0.1:9", "chdb:///tmp/unused"))
    svc.engine = engine(rules({"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"},
                               "aggregate": "latest", "window": "1m", "warning": 80}))
    ps = svc.engine.add_partition("t.metrics", 0, "metrics")
    for i in range(3):
        svc.engine.ingest(ps, "metrics", metric(T0 + i * S + 1, 90.0, name="cpu_usage"))
    svc.engine.counters.late = 3
    svc.lag = {("t.logs", 0): 4}
    svc.recent.appendleft(alert("old-1", "shop", state="resolved"))
    svc.started_at_us, svc.last_poll = now_us(), time.monotonic()
    return svc


def test_processor_view_serves_snapshots_and_answers_a_second_resolve_from_memory() -> None:
    from tocsin.processors.view import ProcessorView

    svc = _service_with_an_alert()
    view = ProcessorView(svc, background=False)
    snap = view.refresh()
    assert isinstance(view, ServiceView)
    open_ids = [a["alert_id"] for a in snap.active]
    assert len(open_ids) == 1 and snap.counters.late == 3 and snap.counters.engine["late"] == 3
    assert snap.lag == {("t.logs", 0): 4} and snap.consuming() and snap.partitions == ("t.metrics:0",)
    assert snap.kafka  # no consumer to probe: the service's own verdict
    svc.engine.drop_partition(("t.metrics", 0))  # the processor moved on; the API shows the last snapshot
    assert [a["alert_id"] for a in view.snapshot().active] == open_ids
    assert view.resolve("old-1", "r", "me") == "already_resolved"  # from memory: no Kafka reachable here
    assert view.resolve("nope", "r", "me") == "unknown"


def test_processor_view_reports_a_stuck_loop_without_waiting_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import tocsin.processors.view as view_module

    monkeypatch.setattr(view_module, "STALL_S", 0.5)
    monkeypatch.setattr(view_module, "REFRESH_INTERVAL_S", 0.05)
    svc = _service_with_an_alert()
    view = view_module.ProcessorView(svc)
    held, release = threading.Event(), threading.Event()

    def stuck_pass() -> None:  # the consumer loop holding its lock
        with svc.lock:
            held.set()
            release.wait(10)

    try:
        wait = time.monotonic() + 5
        while not view.snapshot().consuming() and time.monotonic() < wait:
            time.sleep(0.05)
        assert view.snapshot().consuming()
        threading.Thread(target=stuck_pass, daemon=True).start()
        held.wait(5)
        time.sleep(1.0)
        started = time.perf_counter()
        assert not view.snapshot().consuming()
        assert len(view.snapshot().active) == 1  # answered from memory, at once
        assert time.perf_counter() - started < 0.1
        client = TestClient(make_app(view))
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["reasons"] == ["the consumer loop is not polling"]
    finally:
        release.set()
        view.close()
