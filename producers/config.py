"""Configuration of the agents: log shipper, metrics agent, health probes (section ``agents``).

Example::

    agents:
      service: shop
      logship:
        inputs:
          - {paths: ["/var/log/shop/application.log"], service: shop, parser: json}
          - {paths: ["/var/log/nginx/access.log"], service: shop-web, parser: nginx}
      metrics: {interval_s: 10, processes: [gunicorn, celery]}
      health:
        interval_s: 900
        http: [{name: payments, url: "https://payments.internal/health"}]

The network inputs (``scrape``, ``otlp``, ``syslog``) have their sections in
``tocsin.producers.inputs.config``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from tocsin.core.config import StrictModel, Wiring
from tocsin.producers.inputs.config import OtlpConfig, ScrapeConfig, SyslogConfig
from tocsin.producers.redaction_config import RedactBuiltin as RedactBuiltin  # re-exported: the old home
from tocsin.producers.redaction_config import RedactConfig
from tocsin.producers.redaction_config import RedactPatternConfig as RedactPatternConfig

MIB = 1 << 20

def _re2_list(patterns: list[str]) -> list[str]:
    import re2

    for i, v in enumerate(patterns):
        try:
            re2.compile(v)
        except re2.error as exc:
            raise ValueError(f"[{i}] {v!r} is not an RE2 regex ({exc}); RE2 has no backreferences or lookaround"
                             ) from None
    return patterns


class ShapeConfig(StrictModel):
    """What of an input is sent: keep or drop by level, logger or message; sample (tocsin.producers.shape)."""

    keep_levels: list[str] = Field(default_factory=list, description="Only these levels are sent (empty: all).")
    drop_levels: list[str] = Field(default_factory=list, description="These levels are not sent (`[DEBUG]`).")
    keep_loggers: list[str] = Field(default_factory=list, description="Only these loggers and their children.")
    drop_loggers: list[str] = Field(default_factory=list, description="Not these loggers or their children.")
    keep_regex: list[str] = Field(default_factory=list, description="Only messages matching one (RE2).")
    drop_regex: list[str] = Field(default_factory=list, description="Not messages matching one (RE2).")
    sample_1_in: int = Field(1, ge=1, description="Send one record in N (by event_id hash); 1 sends all.")
    sample_errors: bool = Field(False, description="Sample errors too; by default every error is sent.")

    @field_validator("keep_regex", "drop_regex")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        return _re2_list(v)


class MultilineConfig(StrictModel):
    """The site's own multiline rule: exactly one of a start or a continuation pattern (RE2, at line start)."""

    start: str | None = Field(None, description="A line matching this begins a record; others continue it.")
    continuation: str | None = Field(None, description="A line matching this continues the previous one.")

    @model_validator(mode="after")
    def _one(self) -> MultilineConfig:
        if (self.start is None) == (self.continuation is None):
            raise ValueError("give exactly one of start and continuation")
        _re2_list([self.start or self.continuation or ""])
        return self


class LogInputConfig(StrictModel):
    """One group of files to tail, all of one service and one format."""

    paths: list[str] = Field(min_length=1, description="Files or glob patterns (`/var/log/app/*.log`).")
    service: str = Field(min_length=1, description="Service name: the Kafka key and the events' `service`.")
    parser: str = Field("json", description="json, nginx (combined, optional request time), text, or regex:PATTERN.")
    multiline: bool | MultilineConfig = Field(
        True, description="Join Python tracebacks and Java stack traces to their line; or {start|continuation: RE2}."
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["*.gz", "*.bz2", "*.xz", "*.zst", "*.zip"],
        description="File-name globs never tailed (compressed rotations are binary).",
    )
    redact: RedactConfig = Field(default_factory=RedactConfig, description="What is redacted before sending.")
    shape: ShapeConfig = Field(default_factory=ShapeConfig, description="What is sent: filters and sampling.")
    read_gz: bool = Field(
        False, description="Read rotated `.gz` files of these paths once when they appear (logrotate `compress`)."
    )

    @field_validator("parser")
    @classmethod
    def _parser(cls, v: str) -> str:
        if v.startswith("regex:"):
            try:
                compiled = re.compile(v[len("regex:"):])
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
            if not compiled.groupindex:
                raise ValueError("regex needs named groups, e.g. (?P<level>\\w+) (?P<message>.*)")
            return v
        if v not in ("json", "nginx", "apache", "combined", "text", "plain"):
            raise ValueError("must be json, nginx, text or regex:PATTERN")
        return v


class LogShipConfig(StrictModel):
    """The log shipper: at-least-once from files to the logs topic."""

    inputs: list[LogInputConfig] = Field(default_factory=list, description="What to tail; empty disables it.")
    state_file: Path | None = Field(
        None, description="Checkpoint file (offsets acknowledged by Kafka); default $TOCSIN_HOME/logship.state.json."
    )
    read_from: Literal["beginning", "end"] = Field(
        "beginning", description="Where a file seen for the first time at the first start is read from."
    )
    max_line_bytes: int = Field(MIB, ge=1024, description="Longer lines are truncated and marked `truncated`.")
    max_event_bytes: int = Field(
        1_000_000, ge=4096,
        description="Largest encoded event; under the broker's default message.max.bytes (1,048,588).",
    )
    max_multiline_lines: int = Field(500, ge=1, description="A joined record is cut after this many lines.")
    multiline_flush_s: float = Field(1.0, gt=0, description="A pending record is sent after this long idle.")
    read_chunk_bytes: int = Field(MIB, ge=4096, description="Bytes read per file per read call.")
    max_inflight_bytes: int = Field(
        32 * MIB, ge=MIB, description="Unacknowledged bytes before reading pauses (bounds memory)."
    )
    poll_interval_s: float = Field(0.2, gt=0, description="Sleep when no file had new data.")
    scan_interval_s: float = Field(5.0, gt=0, description="How often globs are expanded for new files.")
    checkpoint_interval_s: float = Field(1.0, gt=0, description="How often acknowledged offsets are saved.")
    rotate_wait_s: float = Field(
        5.0, ge=0, description="A renamed or deleted file is closed after this long at its end (late writers)."
    )
    close_inactive_s: float = Field(300.0, gt=0, description="An idle file is closed after this (reopened on growth).")
    fingerprint_bytes: int = Field(256, ge=16, le=65536, description="Leading bytes hashed into a file's identity.")
    forget_after_s: float = Field(
        7 * 86400.0, gt=0, description="State of a file not seen for this long is dropped."
    )
    backoff_initial_s: float = Field(0.5, gt=0, description="First wait after a failed delivery.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between delivery retries.")
    max_gz_bytes: int = Field(
        4 << 30, ge=MIB, description="A rotated `.gz` larger than this decompressed is refused (a bomb), not read."
    )


class ProcessWatchConfig(StrictModel):
    """A process whose CPU and RSS the metrics agent reports."""

    name: str = Field(min_length=1, description="Label value; also matched against the process name.")
    match: str | None = Field(None, description="Substring of the command line instead of the name.")


class MetricsAgentConfig(StrictModel):
    """System-resource sampling with psutil."""

    enabled: bool = Field(True, description="Run the metrics agent inside `tocsin start agent`.")
    interval_s: float = Field(10.0, ge=0.1, description="Seconds between samples.")
    processes: list[ProcessWatchConfig | str] = Field(
        default_factory=list, description="Processes to report CPU % and RSS of (a name or {name, match})."
    )
    mounts: list[str] = Field(
        default_factory=list, description="Mount points for disk_usage; empty means every physical mount."
    )


class HttpCheckConfig(StrictModel):
    """An external HTTP service probed with a GET."""

    name: str = Field(min_length=1, description="Check name (reported as check `http:<name>`).")
    url: str = Field(min_length=1, description="URL probed with GET.")
    timeout_s: float = Field(5.0, gt=0, description="Request timeout; a timeout is unhealthy.")
    expected_status: list[int] = Field(default_factory=lambda: [200], description="Healthy status codes.")
    degraded_ms: float = Field(1000.0, gt=0, description="Slower than this is degraded.")


class HealthConfig(StrictModel):
    """The seed's health checks: database, cache, external services, disk and memory."""

    enabled: bool = Field(True, description="Run the probes on schedule inside `tocsin start agent`.")
    interval_s: float = Field(900.0, ge=1, description="Seconds between runs; the seed ran them every 15 minutes.")
    clickhouse: bool = Field(True, description="Probe the configured ClickHouse with SELECT 1.")
    database_dsn: str | None = Field(
        None, description="postgresql://... or mysql://... probed with SELECT 1 when its driver is installed."
    )
    database_degraded_ms: float = Field(
        100.0, gt=0, description="Slower SELECT 1 is degraded (the seed's database_query_time warning)."
    )
    redis_url: str | None = Field(None, description="redis://host:port/db probed with PING (needs `redis`).")
    http: list[HttpCheckConfig] = Field(default_factory=list, description="External services.")
    disk_paths: list[str] = Field(default_factory=lambda: ["/"], description="Paths whose filesystems are checked.")
    disk_warning_percent: float = Field(85.0, gt=0, le=100, description="The seed's disk_usage warning.")
    disk_critical_percent: float = Field(95.0, gt=0, le=100, description="The seed's disk_usage critical.")
    memory_warning_percent: float = Field(80.0, gt=0, le=100, description="The seed's memory_usage warning.")
    memory_critical_percent: float = Field(95.0, gt=0, le=100, description="The seed's memory_usage critical.")
    timeout_s: float = Field(5.0, gt=0, description="Timeout of database and cache probes.")


class AgentsConfig(StrictModel):
    """Agent settings: what `tocsin start agent` runs."""

    service: str = Field("app", min_length=1, description="Service name of metrics and health events.")
    logship: LogShipConfig = LogShipConfig()
    metrics: MetricsAgentConfig = MetricsAgentConfig()
    health: HealthConfig = HealthConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    otlp: OtlpConfig = OtlpConfig()
    syslog: SyslogConfig = SyslogConfig()
    metrics_addr: str | None = Field(
        None, description="host:port where `tocsin start agent` serves its inputs' counters as Prometheus /metrics "
                          "(`tocsin_agent_*`, e.g. 127.0.0.1:9464); none: not served.")

    @field_validator("metrics_addr")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        from tocsin.core.errors import ConfigError
        from tocsin.core.promserve import parse_addr

        if v is not None:
            try:
                parse_addr(v)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return v


class AgentSettings(Wiring, Protocol):
    """The configuration the agents read: the wiring and their own section."""

    @property
    def agents(self) -> AgentsConfig: ...
