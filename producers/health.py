"""Health probes: the seed's checks (database, cache, external HTTP services, disk, memory) as HealthEvents.

Each probe returns a result shaped like the seed's detailed health entry::

    {"check": "database", "status": "healthy" | "degraded" | "unhealthy",
     "response_time_ms": 12.5, "details": {"query_time_ms": "12.5"}, "error": None}

``HealthScheduler`` runs them every ``agents.health.interval_s`` (the seed's 15
minutes) and produces them to the health topic; ``tocsin health`` runs them
once. A probe never raises: a failure is an unhealthy result with the reason.
Database and cache drivers are imported only when their probe is configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import psutil

from tocsin.core.component import Component
from tocsin.core.config import redact
from tocsin.core.errors import KafkaError
from tocsin.core.events import HEALTH_EVENT, HOSTNAME, new_event_id, now_us
from tocsin.producers.config import AgentSettings, HealthConfig, HttpCheckConfig

log = logging.getLogger("tocsin.health")
HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}


def result(check: str, status: str, response_time_ms: float | None = None, details: dict[str, Any] | None = None,
           error: str | None = None) -> dict[str, Any]:
    # Published to the health topic, the API and the store: credentials inside URLs and DSNs masked.
    return {"check": check, "status": status,
            "response_time_ms": None if response_time_ms is None else round(response_time_ms, 3),
            "details": {k: redact(str(v)) for k, v in (details or {}).items()},
            "error": None if error is None else redact(error)}


def overall_status(results: list[dict[str, Any]]) -> str:
    """The worst status of all results (healthy when there are none)."""
    return max((r["status"] for r in results), key=_RANK.__getitem__, default=HEALTHY)


def seed_entry(r: dict[str, Any]) -> dict[str, Any]:
    """The seed's JSON entry: ``service`` is the check, ``error_message`` the error."""
    return {"service": r["check"], "status": r["status"], "response_time_ms": r["response_time_ms"],
            "details": r["details"], "error_message": r["error"]}


def to_event(r: dict[str, Any], service: str, ts: int | None = None) -> dict[str, Any]:
    return {"event_id": new_event_id(), "ts": ts or now_us(), "service": service, "host": HOSTNAME,
            "check": r["check"], "status": r["status"], "response_time_ms": r["response_time_ms"],
            "details": r["details"], "error": r["error"]}


def _threshold(value: float, warning: float, critical: float) -> str:
    return UNHEALTHY if value >= critical else DEGRADED if value >= warning else HEALTHY


def _timed(check: str, degraded_ms: float, probe: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        details = probe() or {}
    except Exception as exc:  # any driver error is the probe's answer, not a crash
        elapsed = (time.perf_counter() - started) * 1000
        return result(check, UNHEALTHY, elapsed, error=f"{type(exc).__name__}: {exc}"[:500])
    elapsed = (time.perf_counter() - started) * 1000
    details.setdefault("query_time_ms", f"{elapsed:.3f}")
    # Degraded is judged on the query (the seed's database_query_time), not on opening the connection.
    query_ms = float(details["query_time_ms"])
    return result(check, DEGRADED if query_ms > degraded_ms else HEALTHY, elapsed, details)


class HealthProber:
    """Runs the configured probes; each ``check_*`` returns one result."""

    def __init__(self, cfg: AgentSettings) -> None:
        self.cfg = cfg
        self.health: HealthConfig = cfg.agents.health

    def run_all(self) -> list[dict[str, Any]]:
        h = self.health
        out: list[dict[str, Any]] = []
        if h.clickhouse:
            out.append(self.check_clickhouse())
        if h.database_dsn:
            out.append(self.check_sql(h.database_dsn))
        if h.redis_url:
            out.append(self.check_redis(h.redis_url))
        out.extend(self.check_http(c) for c in h.http)
        out.extend(self.check_disk(p) for p in h.disk_paths)
        out.append(self.check_memory())
        return out

    def check_clickhouse(self) -> dict[str, Any]:
        from tocsin.core.clickhouse import connect

        def probe() -> dict[str, Any]:
            client = connect(self.cfg.clickhouse)
            started = time.perf_counter()
            value = client.command("SELECT 1")
            if str(value).strip() != "1":
                raise RuntimeError(f"SELECT 1 returned {value!r}")
            return {"query_time_ms": f"{(time.perf_counter() - started) * 1000:.3f}", "engine": "clickhouse"}

        return _timed("database", self.health.database_degraded_ms, probe)

    def check_sql(self, dsn: str) -> dict[str, Any]:
        scheme = urlparse(dsn).scheme.split("+")[0]
        check = f"database:{scheme or 'sql'}"

        def probe() -> dict[str, Any]:
            conn = _sql_connect(scheme, dsn, self.health.timeout_s)
            try:
                cur = conn.cursor()
                cur.execute("SELECT 1")
                cur.fetchone()
            finally:
                conn.close()
            return {"engine": scheme}

        return _timed(check, self.health.database_degraded_ms, probe)

    def check_redis(self, url: str) -> dict[str, Any]:
        def probe() -> dict[str, Any]:
            try:
                import redis
            except ImportError:
                raise RuntimeError("the redis package is not installed: pip install redis") from None
            client = redis.Redis.from_url(url, socket_timeout=self.health.timeout_s,
                                          socket_connect_timeout=self.health.timeout_s)
            try:
                if not client.ping():
                    raise RuntimeError("PING did not answer PONG")
            finally:
                client.close()
            return {"engine": "redis"}

        return _timed("cache", self.health.database_degraded_ms, probe)

    def check_http(self, c: HttpCheckConfig) -> dict[str, Any]:
        import requests

        check = f"http:{c.name}"
        started = time.perf_counter()
        try:
            resp = requests.get(c.url, timeout=c.timeout_s, allow_redirects=False)
        except requests.Timeout:
            return result(check, UNHEALTHY, (time.perf_counter() - started) * 1000, {"url": c.url},
                          f"timeout after {c.timeout_s:g} s")
        except requests.RequestException as exc:
            return result(check, UNHEALTHY, (time.perf_counter() - started) * 1000, {"url": c.url},
                          f"{type(exc).__name__}: {exc}"[:500])
        elapsed = (time.perf_counter() - started) * 1000
        details = {"url": c.url, "status_code": resp.status_code}
        resp.close()
        if resp.status_code not in c.expected_status:
            return result(check, UNHEALTHY, elapsed, details,
                          f"unexpected status {resp.status_code} (expected {', '.join(map(str, c.expected_status))})")
        return result(check, DEGRADED if elapsed > c.degraded_ms else HEALTHY, elapsed, details)

    def check_disk(self, path: str) -> dict[str, Any]:
        h = self.health
        try:
            usage = psutil.disk_usage(path)
        except OSError as exc:
            return result(f"disk:{path}", UNHEALTHY, error=f"{type(exc).__name__}: {exc}")
        details = {"path": path, "used_percent": f"{usage.percent:.1f}", "free_bytes": usage.free}
        status = _threshold(usage.percent, h.disk_warning_percent, h.disk_critical_percent)
        error = None if status == HEALTHY else f"disk {usage.percent:.1f}% used"
        return result(f"disk:{path}", status, None, details, error)

    def check_memory(self) -> dict[str, Any]:
        h = self.health
        vm = psutil.virtual_memory()
        details = {"used_percent": f"{vm.percent:.1f}", "available_bytes": vm.available}
        status = _threshold(vm.percent, h.memory_warning_percent, h.memory_critical_percent)
        return result("memory", status, None, details, None if status == HEALTHY else f"memory {vm.percent:.1f}% used")


def _sql_connect(scheme: str, dsn: str, timeout_s: float) -> Any:
    if scheme in ("postgres", "postgresql"):
        try:
            import psycopg

            return psycopg.connect(dsn, connect_timeout=max(1, int(timeout_s)))
        except ImportError:
            pass
        try:
            import psycopg2

            return psycopg2.connect(dsn, connect_timeout=max(1, int(timeout_s)))
        except ImportError:
            raise RuntimeError("no PostgreSQL driver: pip install 'psycopg[binary]'") from None
    if scheme in ("mysql", "mariadb"):
        try:
            import pymysql
        except ImportError:
            raise RuntimeError("no MySQL driver: pip install pymysql") from None
        u = urlparse(dsn)
        return pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306, user=u.username or "",
                               password=u.password or "", database=(u.path or "/")[1:] or None,
                               connect_timeout=timeout_s)
    raise RuntimeError(f"unsupported database scheme {scheme!r}: use postgresql:// or mysql://")


def publish_results(cfg: AgentSettings, results: list[dict[str, Any]], producer: Any = None) -> int:
    """Produces the results as HealthEvents and waits for the acknowledgements; returns how many."""
    from tocsin.core import kafka as kafka_api
    from tocsin.schemas.codec import default_codec

    codec = default_codec()
    own = producer is None
    producer = producer or kafka_api.producer(cfg.kafka, max_block_ms=10_000)
    service = cfg.agents.service
    ts = now_us()
    try:
        futures = [producer.send(cfg.kafka.topics.health, key=service.encode(),
                                 value=codec.encode(HEALTH_EVENT, to_event(r, service, ts))) for r in results]
        producer.flush(30)
        for f in futures:
            f.get(timeout=1)
    except KafkaError:
        raise
    except Exception as exc:
        raise KafkaError(f"publishing health results failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            producer.close(timeout=5)
    return len(results)


class HealthScheduler(Component):
    """Runs every probe each ``interval_s`` and publishes the results (the seed's Celery task)."""

    name = "health"

    def __init__(self, cfg: AgentSettings, interval_s: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.interval_s = interval_s or cfg.agents.health.interval_s
        self.prober = HealthProber(cfg)
        self.runs = 0
        self.last_results: list[dict[str, Any]] = []
        self._producer: Any = None

    @property
    def stall_after_s(self) -> float:
        return max(self.STALL_AFTER_S, 3 * self.interval_s)  # one turn a interval: three missed is stuck

    def run(self) -> None:
        from tocsin.core import kafka as kafka_api

        while not self.stopping:
            self.mark_progress()
            self.last_results = self.prober.run_all()
            self.runs += 1
            try:
                if self._producer is None:
                    self._producer = kafka_api.producer(self.cfg.kafka, max_block_ms=10_000,
                                                        bootstrap_timeout_ms=5000)
                publish_results(self.cfg, self.last_results, self._producer)
            except KafkaError as exc:
                log.warning("Could not publish health results.", extra={"error": str(exc)})
            self._stop.wait(self.interval_s)

    def _release(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as exc:
                log.warning("Closing the health producer failed.", extra={"error": str(exc)})
