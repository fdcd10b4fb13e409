"""Configuration of the ClickHouse sink, the reports and the store API.

Batching defaults follow ClickHouse's insert guidance (large batches, about one
insert per second per table): a batch closes at ``batch_max_rows`` rows or
``batch_max_age_s`` seconds, whichever comes first::

    sink_clickhouse:
      batch_max_rows: 100000
      batch_max_age_s: 1.0
      report_request_metrics: [api_response_time]
"""

from __future__ import annotations

from typing import Protocol

from pydantic import Field, model_validator

from tocsin.core.config import ConsumerGroupConfig, Wiring
from tocsin.core.scheduler import JobsConfig


class ClickHouseSinkConfig(ConsumerGroupConfig):
    """Settings of ``tocsin start sink-clickhouse`` and of the reports built on its tables."""

    group_id: str = Field("tocsin-sink-clickhouse", description="Kafka consumer group of the sink.")
    batch_max_rows: int = Field(100_000, ge=1, description="Rows that close a batch (all partitions together).")
    batch_max_age_s: float = Field(1.0, gt=0, description="Age of the oldest buffered row that closes a batch.")
    batch_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="Message bytes that close a batch; at most two batches (in flight, forming) are held.",
    )
    poll_timeout_ms: int = Field(200, ge=1, description="Longest wait of one consumer poll.")
    retry_backoff_initial_s: float = Field(0.5, gt=0, description="First wait after a failed insert.")
    retry_backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between insert retries.")
    migrate_on_start: bool = Field(True, description="Run the idempotent schema migrations when the sink starts.")
    cluster: str | None = Field(None, description="ClickHouse cluster name for ON CLUSTER DDL; none on one server.")
    report_request_metrics: list[str] = Field(
        default_factory=lambda: ["api_response_time", "http_request_duration_ms"],
        description="Metric names (ms) that count one request each and give the report's latency percentiles.",
    )
    report_error_levels: list[str] = Field(
        default_factory=lambda: ["ERROR", "CRITICAL"], description="Log levels the report counts as errors."
    )
    report_top_errors: int = Field(10, ge=1, le=1000, description="Error messages listed per report.")
    store_api_timeout_s: float = Field(60.0, gt=0, description="Timeout of CLI calls to the store owner's HTTP API.")
    query_max_rows: int = Field(100_000, ge=1, description="Rows `tocsin query` returns at most (result_rows limit).")
    # Limits of every query through `tocsin query` and the store API, set in the read-only session
    # (readonly=1), so no query can raise them; the engine cancels a query past any of them.
    query_max_execution_s: float = Field(30.0, gt=0, le=3600, description="Wall time a query may run.")
    query_max_memory_bytes: int = Field(2 * 1024**3, ge=16 * 1024**2, description="Memory one query may use.")
    query_max_rows_to_read: int = Field(2_000_000_000, ge=1, description="Rows one query may read.")
    query_max_result_bytes: int = Field(256 * 1024**2, ge=1024, description="Bytes one result may hold.")
    store_api_workers: int = Field(2, ge=1, le=32, description="Store calls the owner runs at once (own pool).")
    store_api_queue_wait_s: float = Field(2.0, ge=0, description="Wait for a free store worker before 503.")

    @model_validator(mode="after")
    def _backoff_order(self) -> ClickHouseSinkConfig:
        if self.retry_backoff_max_s < self.retry_backoff_initial_s:
            raise ValueError("retry_backoff_max_s must be >= retry_backoff_initial_s")
        return self


class ClickHouseSinkSettings(Wiring, Protocol):
    """The configuration the ClickHouse sink and the store read: the wiring, the sink's section, the jobs."""

    @property
    def sink_clickhouse(self) -> ClickHouseSinkConfig: ...
    @property
    def jobs(self) -> JobsConfig: ...
