"""Request and response bodies of the processor's HTTP API, for validation and the OpenAPI schema.

Timestamps are RFC 3339 UTC strings (the seed's format) with the raw
microseconds beside them where a client computes with them (charts).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["healthy", "degraded", "unhealthy"]
Severity = Literal["none", "warning", "critical"]
AlertState = Literal["pending", "firing", "resolved"]


class Health(BaseModel):
    """The seed's basic health answer, plus the reasons when unhealthy."""

    status: Literal["healthy", "unhealthy"]
    timestamp: str
    service: str
    reasons: list[str] = Field(default_factory=list, description="Why the service is unhealthy; empty when healthy.")


class HealthCheck(BaseModel):
    """One check: the latest HealthEvent of a (service, check), or one of the processor's own."""

    service: str
    check: str
    host: str
    status: str = Field(description="healthy, degraded or unhealthy (as reported by the probe).")
    response_time_ms: float | None
    details: dict[str, str]
    error_message: str | None
    timestamp: str


class PerformanceSummary(BaseModel):
    error_count_1h: int = Field(description="ERROR and CRITICAL log events over the last hour, all services.")
    events_per_s: float = Field(description="Events processed per second, recent.")
    consumer_lag: int = Field(description="Messages behind the log end, all assigned partitions.")


class DetailedHealth(BaseModel):
    """The seed's detailed health shape."""

    overall_status: Status
    timestamp: str
    uptime_seconds: float
    health_checks: list[HealthCheck]
    active_alerts_count: int
    performance_summary: PerformanceSummary


class Alert(BaseModel):
    """The latest known state of an alert (one AlertEvent transition)."""

    alert_id: str
    event_id: str
    fingerprint: str
    rule: str
    service: str = Field(description="The `service` group label.")
    severity: str
    previous_severity: str
    state: str
    previous_state: str
    value: float | None
    threshold: float | None
    labels: dict[str, str]
    annotations: dict[str, str]
    started_at: str
    ended_at: str | None
    updated_at: str = Field(description="When this transition happened.")
    resolved_by: str | None
    acked_by: str | None = Field(None, description="Who acknowledged the incident (null: nobody).")
    acked_at: str | None = None
    ack_note: str | None = None
    ack_expires_at: str | None = Field(None, description="When the ack lapses; null: while the incident lasts.")
    acked: bool = Field(False, description="The ack holds now (given and not lapsed).")


class AlertPage(BaseModel):
    total: int
    items: list[Alert]


class AlertList(BaseModel):
    """Open alerts and the transition history, each filtered and paged the same way."""

    active: AlertPage
    history: AlertPage
    limit: int
    offset: int


class ResolveRequest(BaseModel):
    alert_id: str = Field(min_length=1, max_length=256)
    reason: str = Field("", max_length=2000, description="Why; kept on the ControlEvent and the resolved alert.")
    actor: str | None = Field(None, max_length=256, description="Ignored: the token's name is the actor.")


class ResolveResponse(BaseModel):
    alert_id: str
    status: Literal["accepted", "already_resolved"]


class ErrorBody(BaseModel):
    detail: str


class LagEntry(BaseModel):
    topic: str
    partition: int
    lag: int


class Throughput(BaseModel):
    events_per_s: float
    consumed_total: int
    processed_total: int
    late_total: int
    dead_lettered_total: int
    decode_errors_total: int
    live_series: int
    consumer_lag: int
    lag: list[LagEntry]


class StatusOverview(BaseModel):
    overall_status: Status
    live: bool = Field(description="What /health answers: consuming and Kafka reachable.")
    reasons: list[str]
    kafka: bool
    clickhouse: bool | None
    uptime_seconds: float
    active_alerts: int
    critical_alerts: int
    warning_alerts: int


class ChartPoint(BaseModel):
    ts: str
    ts_us: int
    errors: int
    error_rate_per_min: float
    p95_latency_ms: float | None


class ServiceChart(BaseModel):
    service: str
    points: list[ChartPoint]


class Dashboard(BaseModel):
    """Everything the dashboard page draws, in one document."""

    service: str
    timestamp: str
    status: StatusOverview
    throughput: Throughput
    active_alerts: list[Alert]
    alert_history: list[Alert]
    health_checks: list[HealthCheck]
    series: list[ServiceChart]
