"""Configuration of the agent's network inputs: Prometheus scrape, OTLP/HTTP receiver, syslog listener.

Example::

    agents:
      scrape:
        targets:
          - name: node
            url: http://127.0.0.1:9100/metrics
            interval_s: 15
            relabel:
              - {action: keep, name: "node_(load1|memory_MemAvailable_bytes|filesystem_avail_bytes|cpu_seconds_total)"}
              - {action: drop, name: node_cpu_seconds_total, labels: {mode: "idle|iowait"}}
              - {action: rename, name: node_load1, to: load_1m}
          - {name: shop, url: "http://127.0.0.1:8000/metrics", bearer_token: "s3cret"}
      otlp: {enabled: true, port: 4318}
      syslog: {enabled: true, udp_port: 5514, tcp_port: 5514}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from tocsin.core.config import StrictModel
from tocsin.producers.redaction_config import RedactConfig

MIB = 1 << 20


def _regex(v: str) -> str:
    try:
        re.compile(v)
    except re.error as exc:
        raise ValueError(f"regex does not compile: {exc}") from None
    return v


class RelabelRule(StrictModel):
    """One relabelling step; regexes match the whole name or value (as Prometheus anchors them)."""

    action: Literal["keep", "drop", "rename", "rename_label", "drop_label"] = Field(
        description="keep/drop samples that match; rename a metric; rename_label or drop_label a label.")
    name: str | None = Field(None, description="Regex the metric (sample) name must match.")
    labels: dict[str, str] = Field(default_factory=dict, description="label: regex, all of which must match.")
    label: str | None = Field(None, description="rename_label/drop_label: the label.")
    to: str | None = Field(None, description="rename: the new metric name; rename_label: the new label name.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else _regex(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _regex(r) for k, r in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> RelabelRule:
        if self.action in ("rename", "rename_label") and not self.to:
            raise ValueError(f"{self.action} needs `to`")
        if self.action in ("rename_label", "drop_label") and not self.label:
            raise ValueError(f"{self.action} needs `label`")
        if self.action in ("keep", "drop", "rename") and self.name is None and not self.labels:
            raise ValueError(f"{self.action} needs `name` or `labels` to match")
        return self


class BasicAuth(StrictModel):
    username: str = Field(min_length=1, description="HTTP basic-auth user.")
    password: SecretStr = Field(description="HTTP basic-auth password; never printed.")


class ScrapeTargetConfig(StrictModel):
    """One Prometheus endpoint scraped on an interval."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$", description="Job name: the `job` label and the "
                      "health check `scrape:<name>`.")
    url: str = Field(pattern=r"^https?://", description="The exposition URL (http or https).")
    service: str | None = Field(None, description="Service of its events; default agents.service.")
    interval_s: float = Field(15.0, ge=1, description="Seconds between scrapes (Prometheus' default 15 s).")
    timeout_s: float = Field(10.0, gt=0, description="Scrape timeout (Prometheus' default 10 s).")
    bearer_token: SecretStr | None = Field(None, description="Sent as `Authorization: Bearer`; never printed.")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic auth instead of a bearer token.")
    labels: dict[str, str] = Field(default_factory=dict, description="Static labels added to every sample.")
    relabel: list[RelabelRule] = Field(default_factory=list, description="Applied in order to every sample.")

    @model_validator(mode="after")
    def _one_auth(self) -> ScrapeTargetConfig:
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("give bearer_token or basic_auth, not both")
        if self.timeout_s > self.interval_s:
            raise ValueError("timeout_s must not exceed interval_s")
        return self


class ScrapeConfig(StrictModel):
    """Prometheus scraping: counters become per-second rates, histograms the quantiles the rules read."""

    targets: list[ScrapeTargetConfig] = Field(default_factory=list, description="What to scrape; empty disables.")
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.95, 0.99],
                                   description="Quantiles computed from histogram buckets (the rules' p50/p95/p99).")
    max_body_bytes: int = Field(16 * MIB, ge=4096, description="A larger (decompressed) exposition fails the scrape.")
    max_samples: int = Field(50_000, ge=1, description="More samples fail the scrape (Prometheus sample_limit).")
    max_labels: int = Field(30, ge=1, description="A sample with more labels is dead-lettered (label_limit).")
    max_label_value_bytes: int = Field(2048, ge=16, description="A longer label value dead-letters its sample.")
    max_pending_events: int = Field(200_000, ge=1000, description="Unacknowledged events kept for retry while "
                                    "Kafka is down; beyond it the oldest are dropped and counted.")
    ack_timeout_s: float = Field(10.0, gt=0, description="How long a scrape's events wait for Kafka's ack.")
    redact: RedactConfig = Field(default_factory=RedactConfig, description="What is redacted in label values "
                                 "(and dead-lettered samples) before sending.")

    @field_validator("quantiles")
    @classmethod
    def _q(cls, v: list[float]) -> list[float]:
        if not all(0 < q < 1 for q in v):
            raise ValueError("quantiles are between 0 and 1, exclusive")
        return v

    @field_validator("targets")
    @classmethod
    def _unique(cls, v: list[ScrapeTargetConfig]) -> list[ScrapeTargetConfig]:
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError("target names must be unique")
        return v


class OtlpConfig(StrictModel):
    """The OTLP/HTTP receiver (logs and metrics): 200 only after Kafka acknowledged, 503/429 to retry."""

    enabled: bool = Field(False, description="Listen inside `tocsin start agent`.")
    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 to take other hosts' SDKs.")
    port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP's registered port; 0 picks a free one.")
    service: str | None = Field(None, description="Service when a resource has no service.name; "
                                "default agents.service.")
    bearer_token: SecretStr | None = Field(None, description="If set, requests need `Authorization: Bearer`.")
    max_body_bytes: int = Field(4 * MIB, ge=1024, description="Largest request body, compressed (413 beyond).")
    max_decompressed_bytes: int = Field(32 * MIB, ge=1024, description="Largest body after gunzip (413 beyond).")
    max_concurrent_requests: int = Field(8, ge=1, description="More at once are answered 429 with Retry-After.")
    max_connections: int = Field(64, ge=1, description="Open connections (one thread each); more are closed.")
    max_attributes: int = Field(64, ge=1, description="Attributes kept per event (resource + record); the rest "
                                "are counted in `otlp.dropped_attributes`.")
    max_value_bytes: int = Field(8192, ge=64, description="A longer attribute value is cut (marked with ...).")
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.95, 0.99],
                                   description="Quantiles computed from histogram buckets.")
    ack_timeout_s: float = Field(10.0, gt=0, description="How long a request waits for Kafka's ack before 503.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of 429 and 503 answers.")
    redact: RedactConfig = Field(default_factory=RedactConfig, description="What is redacted in log bodies, "
                                 "attribute and label values (resource's too) before sending.")


class SyslogConfig(StrictModel):
    """The syslog listener: RFC 5424 and RFC 3164 over UDP (at most once) and TCP (RFC 6587 framing)."""

    enabled: bool = Field(False, description="Listen inside `tocsin start agent`.")
    host: str = Field("127.0.0.1", description="Bind address.")
    udp_port: int | None = Field(5514, ge=0, le=65535, description="UDP port (0 picks one); null: no UDP.")
    tcp_port: int | None = Field(5514, ge=0, le=65535, description="TCP port (0 picks one); null: no TCP.")
    service: str | None = Field(None, description="Service of messages without an app name, or of all with "
                                "service_from: fixed; default agents.service.")
    service_from: Literal["app_name", "fixed"] = Field("app_name", description="app_name: the APP-NAME/TAG names "
                                                       "the service; fixed: `service` for every message.")
    max_message_bytes: int = Field(64 * 1024, ge=480, description="Longest message (RFC 5424 asks receivers for "
                                   "2048 at least); longer are cut and marked `truncated`.")
    max_connections: int = Field(256, ge=1, description="TCP connections at once; more are closed at accept.")
    idle_timeout_s: float = Field(600.0, gt=0, description="A TCP connection silent this long is closed.")
    queue_max_messages: int = Field(20_000, ge=10, description="Received, unacknowledged messages held; when "
                                    "full, TCP stops reading (backpressure) and UDP datagrams are dropped.")
    batch_max: int = Field(500, ge=1, description="Messages published (and acknowledged) together.")
    batch_wait_s: float = Field(0.05, gt=0, description="How long a partial batch waits for more.")
    ack_timeout_s: float = Field(10.0, gt=0, description="How long a batch waits for Kafka's ack before retrying.")
    redact: RedactConfig = Field(default_factory=RedactConfig, description="What is redacted in messages and "
                                 "structured-data values before sending.")

    @model_validator(mode="after")
    def _some_port(self) -> SyslogConfig:
        if self.enabled and self.udp_port is None and self.tcp_port is None:
            raise ValueError("an enabled syslog input needs udp_port or tcp_port")
        return self
