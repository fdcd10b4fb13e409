"""Configuration of the stream processor: rules file, time model, recovery and consumer settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from tocsin.core.config import StrictModel, Wiring


class ProcessorConfig(StrictModel):
    """Stream processor settings (section ``processor``); every duration is event time unless it says wall."""

    rules_file: Path | None = Field(
        None, description="Rule YAML; None means the seed's thresholds in processors/rules/default.yaml.")
    group_id: str = Field("tocsin-processor", description="Kafka consumer group shared by every processor.")
    eval_interval_s: float = Field(
        0.5, gt=0, le=300, description="Rules are evaluated at multiples of this (Prometheus' evaluation interval).")
    grace_s: float = Field(
        10.0, ge=0, le=3600, description="Allowed lateness: events older than partition clock minus this are "
        "late (after a broker outage, as far back as the outage too).")
    max_future_s: float = Field(
        5.0, gt=0, description="Timestamps further than this ahead of the wall clock are capped to it or "
        "dead-lettered; keep it below grace_s so one fast clock cannot make other events late.")
    future_policy: Literal["cap", "deadletter"] = Field(
        "cap", description="What to do with a timestamp too far in the future: cap it to now, or dead-letter it.")
    tick_interval_s: float = Field(
        0.5, gt=0, le=60, description="Wall-clock tick that moves idle partitions' clocks and runs timers.")
    heartbeat_interval_s: float = Field(
        15.0, ge=0, description="How often the processor emits its own heartbeat MetricEvents; 0 turns them off.")
    replay_margin_s: float = Field(
        30.0, ge=0, description="Extra history replayed on assignment beyond the longest window plus timers.")
    start_without_commit: Literal["replay", "earliest", "latest"] = Field(
        "replay", description="Where a partition with no committed offset starts: now minus the replay span, "
        "the beginning, or the end.")
    control_lookback_s: float = Field(
        3600.0, ge=0, description="How far back the control topic (manual resolves) is read at start.")
    session_timeout_ms: int = Field(
        10_000, ge=6000, description="Consumer group session timeout: how fast a killed processor is replaced.")
    max_poll_records: int = Field(5000, ge=1, description="Records per poll (one evaluate/produce/commit cycle).")
    max_catchup_steps: int = Field(
        600, ge=2, description="Evaluation instants run across one clock jump before skipping to its end.")
    idle_series_evict_s: float = Field(
        3600.0, gt=0, description="An absence series silent this long with no open alert is forgotten.")
    delivery_timeout_s: float = Field(
        120.0, ge=1, description="How long the producer retries a transition or dead letter before the processor "
        "sends it again (kafka-python's delivery_timeout_ms; offsets are never committed past it meanwhile).")
    changelog_timeout_s: float = Field(
        60.0, gt=0, description="One attempt at reading the alert changelog on assignment; a timeout goes on "
        "from where it stopped after a backoff.")
    max_services: int = Field(
        5_000, ge=1, description="Services whose last-hour statistics (dashboard, summaries) are kept; the least "
        "recently updated are evicted beyond it, and any silent for idle_series_evict_s.")
    max_health_entries: int = Field(
        50_000, ge=1, description="Latest health entries (service, check) kept; evicted like max_services.")
    recent_transitions: int = Field(1000, ge=0, description="Transitions kept in memory for the HTTP API.")


class ProcessorSettings(Wiring, Protocol):
    """The configuration the processor reads: the wiring and its own section."""

    @property
    def processor(self) -> ProcessorConfig: ...
