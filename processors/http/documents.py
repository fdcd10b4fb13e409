"""The JSON documents of the HTTP API, computed from a processor ``Snapshot``: pure functions, no I/O.

Everything here runs per request, so it only reads what the consumer loop
already keeps; numbers that JSON cannot carry (NaN, infinities) become null.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tocsin.core.events import HOSTNAME, iso, now_us
from tocsin.processors.ack import is_acked
from tocsin.processors.view import CHART_SERVICES, SeriesPoint, Snapshot

LAG_DEGRADED = 10_000
"""Total consumer lag (messages) above which the processor reports itself degraded: ~1 s at the target rate."""

HOUR_US = 3600 * 1_000_000
HISTORY_ON_DASHBOARD = 50
"""Alert transitions the dashboard shows; the full history pages through /api/alerts."""

ACTIVE_ON_DASHBOARD = 200
"""Open alerts listed on the dashboard (critical first); the tile shows the total, /api/alerts pages them all."""

_SEVERITY_RANK = {"critical": 0, "warning": 1}
_STATUS_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def finite(value: Any) -> float | None:
    """A float JSON can carry, or None."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _iso_or_none(ts: Any) -> str | None:
    return iso(int(ts)) if isinstance(ts, int) else None


def _strings(mapping: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (mapping or {}).items()}


def alert_doc(rec: Mapping[str, Any]) -> dict[str, Any]:
    """An AlertEvent record as the API shows it."""
    labels = _strings(rec.get("labels"))
    return {
        "alert_id": str(rec.get("alert_id", "")),
        "event_id": str(rec.get("event_id", "")),
        "fingerprint": str(rec.get("fingerprint", "")),
        "rule": str(rec.get("rule", "")),
        "service": labels.get("service", ""),
        "severity": str(rec.get("severity", "none")),
        "previous_severity": str(rec.get("previous_severity", "none")),
        "state": str(rec.get("state", "")),
        "previous_state": str(rec.get("previous_state", "inactive")),
        "value": finite(rec.get("value")),
        "threshold": finite(rec.get("threshold")),
        "labels": labels,
        "annotations": _strings(rec.get("annotations")),
        "started_at": _iso_or_none(rec.get("started_at")) or "",
        "ended_at": _iso_or_none(rec.get("ended_at")),
        "updated_at": _iso_or_none(rec.get("ts")) or "",
        "resolved_by": rec.get("resolved_by"),
        **ack_doc(rec),
    }


def ack_doc(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The ack fields of an AlertEvent v2 (tocsin.processors.ack), ``acked`` judged by the clock now."""
    by = rec.get("acked_by")
    return {"acked_by": str(by) if by else None, "acked_at": _iso_or_none(rec.get("acked_at")) if by else None,
            "ack_note": str(rec.get("ack_note") or "") or None if by else None,
            "ack_expires_at": _iso_or_none(rec.get("ack_expires_at")) if by else None,
            "acked": is_acked(rec, now_us())}


def health_check_doc(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A HealthEvent record in the seed's health_checks entry shape (``error`` is ``error_message``)."""
    return {
        "service": str(rec.get("service", "")),
        "check": str(rec.get("check", "")),
        "host": str(rec.get("host", "")),
        "status": str(rec.get("status", "")),
        "response_time_ms": finite(rec.get("response_time_ms")),
        "details": _strings(rec.get("details")),
        "error_message": rec.get("error"),
        "timestamp": _iso_or_none(rec.get("ts")) or "",
    }


def sort_active(alerts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Critical first, then warning, then the rest; newest incident first within a severity."""
    return sorted(alerts, key=lambda a: (_SEVERITY_RANK.get(str(a.get("severity")), 2), -int(a.get("started_at") or 0)))


def liveness(snap: Snapshot) -> tuple[bool, list[str]]:
    """What a load balancer needs: is the processor consuming and does Kafka answer (cached verdicts)."""
    reasons = []
    if not snap.consuming():
        reasons.append("the consumer loop is not polling")
    if not snap.kafka:
        reasons.append("Kafka is unreachable")
    return not reasons, reasons


def health_doc(snap: Snapshot, service: str) -> tuple[int, dict[str, Any]]:
    """``(status code, body)`` of /health: 200 healthy or 503 unhealthy with the reasons."""
    live, reasons = liveness(snap)
    body = {"status": "healthy" if live else "unhealthy", "timestamp": iso(now_us()), "service": service,
            "reasons": reasons}
    return (200 if live else 503), body


def total_lag(lag: Mapping[tuple[str, int], int]) -> int:
    return sum(max(0, int(v)) for v in lag.values())


KAFKA_UNREACHABLE = "Kafka unreachable"


def kafka_check(snap: Snapshot) -> tuple[str, str | None]:
    """The processor's own Kafka check: unhealthy when the loop does not poll; degraded while the broker is
    unreachable or fetches fail (the loop goes on, event time is held, nothing is counted late)."""
    if not snap.consuming():
        return "unhealthy", "the consumer loop is not polling"
    if not snap.kafka or not snap.fetching:
        return "degraded", f"{KAFKA_UNREACHABLE}: {'fetches fail' if snap.kafka else 'no broker connection'}"
    return "healthy", None


def own_checks(snap: Snapshot, service: str, lag: Mapping[tuple[str, int], int]) -> list[dict[str, Any]]:
    """The processor's own checks: Kafka (with the consumer loop), ClickHouse when used, consumer lag."""
    ts = iso(now_us())
    status, error = kafka_check(snap)
    checks = [{
        "service": service, "check": "kafka", "host": HOSTNAME, "status": status, "response_time_ms": None,
        "details": {"reachable": str(snap.kafka).lower(), "fetching": str(snap.fetching).lower(),
                    "consuming": str(snap.consuming()).lower()},
        "error_message": error, "timestamp": ts,
    }]
    ch = snap.clickhouse
    if ch is not None:
        checks.append({
            "service": service, "check": "clickhouse", "host": HOSTNAME,
            "status": "healthy" if ch else "unhealthy", "response_time_ms": None,
            "details": {"reachable": str(ch).lower()},
            "error_message": None if ch else "ClickHouse is unreachable", "timestamp": ts,
        })
    lag_total = total_lag(lag)
    checks.append({
        "service": service, "check": "consumer_lag", "host": HOSTNAME,
        "status": "healthy" if lag_total <= LAG_DEGRADED else "degraded", "response_time_ms": None,
        "details": {"lag_messages": str(lag_total), "partitions": str(len(lag))},
        "error_message": None if lag_total <= LAG_DEGRADED else f"consumer lag {lag_total} > {LAG_DEGRADED} messages",
        "timestamp": ts,
    })
    return checks


def all_checks(snap: Snapshot, service: str, lag: Mapping[tuple[str, int], int]) -> list[dict[str, Any]]:
    """The processor's own checks, then the latest HealthEvent per (service, check), sorted."""
    latest = sorted(snap.health, key=lambda h: (str(h.get("service")), str(h.get("check"))))
    return own_checks(snap, service, lag) + [health_check_doc(h) for h in latest]


def overall_status(consuming: bool, checks: Iterable[Mapping[str, Any]]) -> str:
    """Unhealthy when the loop does not poll; otherwise the worst check (an unknown status counts as degraded)."""
    if not consuming:
        return "unhealthy"
    worst = max((_STATUS_RANK.get(str(c["status"]), 1) for c in checks), default=0)
    # A failing dependency of a monitored app degrades the picture; only our own liveness makes it unhealthy.
    return "healthy" if worst == 0 else "degraded"


def detailed_doc(snap: Snapshot, service: str) -> dict[str, Any]:
    """The seed's detailed health document."""
    lag = dict(snap.lag)
    checks = all_checks(snap, service, lag)
    counters = snap.counters
    return {
        "overall_status": overall_status(snap.consuming(), checks),
        "timestamp": iso(now_us()),
        "uptime_seconds": round(snap.uptime_s(), 3),
        "health_checks": checks,
        "active_alerts_count": len(snap.active),
        "performance_summary": {
            "error_count_1h": int(snap.error_count_1h),
            "events_per_s": finite(counters.events_per_s) or 0.0,
            "consumer_lag": total_lag(lag),
        },
    }


SLO_ON_PAGES = 50


def slo_doc(snap: Snapshot) -> dict[str, Any]:
    """Error budgets (lowest first) and what they cover: the store's period plus the stream, or the replay."""
    return {"coverage": snap.slo_coverage, "budgets": [
        {"rule": b["rule"], "labels": _strings(b["labels"]), "objective": b["objective"],
         "period_s": b["period_s"], "total": b["total"], "bad": b["bad"], "remaining": finite(b["remaining"]),
         "burn_rates": b["burn_rates"], "covers": b["covers"],
         "covers_from": _iso_or_none(b["covers_from_us"])} for b in snap.slo[:SLO_ON_PAGES]]}


def matches(rec: Mapping[str, Any], service: str | None, severity: str | None, state: str | None) -> bool:
    if service is not None and (rec.get("labels") or {}).get("service") != service:
        return False
    if severity is not None and rec.get("severity") != severity:
        return False
    return state is None or rec.get("state") == state


def alerts_doc(snap: Snapshot, *, service: str | None, severity: str | None, state: str | None,
               limit: int, offset: int) -> dict[str, Any]:
    """Open alerts and history, filtered and paged alike."""
    active = [a for a in sort_active(snap.active) if matches(a, service, severity, state)]
    history = [a for a in snap.history if matches(a, service, severity, state)]
    return {
        "active": {"total": len(active), "items": [alert_doc(a) for a in active[offset:offset + limit]]},
        "history": {"total": len(history), "items": [alert_doc(a) for a in history[offset:offset + limit]]},
        "limit": limit,
        "offset": offset,
    }


def _charts(series: Mapping[str, Sequence[SeriesPoint]]) -> list[dict[str, Any]]:
    """Chart series by service name; the view already chose which services (the most errors first)."""
    since = now_us() - HOUR_US
    return [
        {"service": name, "points": [
            {"ts": iso(p.ts_us), "ts_us": p.ts_us, "errors": int(p.errors),
             "error_rate_per_min": finite(p.error_rate_per_min) or 0.0, "p95_latency_ms": finite(p.p95_latency_ms)}
            for p in points if p.ts_us >= since
        ]}
        for name, points in sorted(series.items())
    ]


def dashboard_doc(snap: Snapshot, service: str) -> dict[str, Any]:
    """Everything the dashboard page draws."""
    live, reasons = liveness(snap)
    lag = dict(snap.lag)
    checks = all_checks(snap, service, lag)
    active = sort_active(snap.active)
    counters = snap.counters
    return {
        "service": service,
        "timestamp": iso(now_us()),
        "status": {
            "overall_status": overall_status(snap.consuming(), checks), "live": live, "reasons": reasons,
            "kafka": snap.kafka, "clickhouse": snap.clickhouse,
            "uptime_seconds": round(snap.uptime_s(), 3), "active_alerts": len(active),
            "critical_alerts": sum(1 for a in active if a.get("severity") == "critical"),
            "warning_alerts": sum(1 for a in active if a.get("severity") == "warning"),
        },
        "throughput": {
            "events_per_s": finite(counters.events_per_s) or 0.0,
            "consumed_total": sum(counters.consumed.values()),
            "processed_total": sum(counters.processed.values()),
            "late_total": counters.late, "dead_lettered_total": counters.dead_lettered,
            "decode_errors_total": counters.decode_errors, "live_series": counters.live_series,
            "consumer_lag": total_lag(lag),
            "lag": [{"topic": t, "partition": p, "lag": int(n)} for (t, p), n in sorted(lag.items())],
        },
        "active_alerts": [alert_doc(a) for a in active[:ACTIVE_ON_DASHBOARD]],
        "alert_history": [alert_doc(a) for a in list(snap.history)[:HISTORY_ON_DASHBOARD]],
        "health_checks": checks,
        "series": _charts(dict(list(snap.series.items())[:CHART_SERVICES])),
        "slo": slo_doc(snap),
    }
