"""The whole Tocsin configuration: every component's section gathered, from one YAML file plus
environment overrides, typed and validated. It sits above the components (they read it through
the protocols in their own config modules).

Resolution order, last wins: built-in defaults, the YAML file (``--config`` or
``TOCSIN_CONFIG``), then the environment variables in ``ENV_OVERRIDES`` (the
seed's ``LOG_DIR``, ``ALERT_EMAIL_RECIPIENTS``, ``MONITORING_SUMMARY_RECIPIENTS``
plus ``KAFKA_BOOTSTRAP_SERVERS``, ``CLICKHOUSE_URL``, ``TOCSIN_API_TOKEN``,
``TOCSIN_HTTP_ADDR``). Every problem is collected and reported as
``file: dotted.path: reason (got value)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from tocsin.app.watchdog import WatchdogConfig
from tocsin.core.config import (
    ApiConfig,
    ClickHouseConfig,
    KafkaConfig,
    StrictModel,
    TopicsConfig,
    format_validation_error,
    read_yaml,
)
from tocsin.core.errors import ConfigError
from tocsin.core.scheduler import JobsConfig
from tocsin.processors.config import ProcessorConfig
from tocsin.producers.config import AgentsConfig
from tocsin.sinks.clickhouse.config import ClickHouseSinkConfig
from tocsin.sinks.notify.config import NotifyConfig, SummaryConfig

__all__ = ["ApiConfig", "ClickHouseConfig", "KafkaConfig", "TocsinConfig", "TopicsConfig", "load_config"]


class TocsinConfig(StrictModel):
    """The whole configuration. Every section has defaults: an empty file is valid."""

    kafka: KafkaConfig = KafkaConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    api: ApiConfig = ApiConfig()
    log_dir: Path = Field(Path("logs"), description="The seed's LOG_DIR: where app logs are written and shipped from.")
    alert_email_recipients: list[str] = Field(default_factory=list, description="Who gets alert emails (the seed's).")
    monitoring_summary_recipients: list[str] = Field(
        default_factory=list, description="Who gets the daily summary (the seed's).")
    agents: AgentsConfig = AgentsConfig()
    processor: ProcessorConfig = ProcessorConfig()
    sink_clickhouse: ClickHouseSinkConfig = ClickHouseSinkConfig()
    notify: NotifyConfig = NotifyConfig()
    summary: SummaryConfig = SummaryConfig()
    jobs: JobsConfig = JobsConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    source: str | None = Field(None, description="The file this was loaded from (set by load_config).")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# environment variable -> (dotted path, converter)
ENV_OVERRIDES: dict[str, tuple[str, Any]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka.bootstrap_servers", str),
    "CLICKHOUSE_URL": ("clickhouse.url", str),
    "LOG_DIR": ("log_dir", str),
    "ALERT_EMAIL_RECIPIENTS": ("alert_email_recipients", _csv),
    "MONITORING_SUMMARY_RECIPIENTS": ("monitoring_summary_recipients", _csv),
    "TOCSIN_API_TOKEN": ("api.token", str),
    "TOCSIN_HTTP_ADDR": ("api.http_addr", str),
}


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> TocsinConfig:
    """Read, override and validate; raises ``ConfigError`` listing every problem."""
    env = os.environ if env is None else env
    path = path or env.get("TOCSIN_CONFIG") or None
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        loaded = read_yaml(path, "config file")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{origin}: (top level): expected a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    problems: list[str] = []
    for var, (dotted, convert) in ENV_OVERRIDES.items():
        if env.get(var):
            _set_path(data, dotted, convert(env[var]))
    data["source"] = str(path) if path is not None else None
    try:
        return TocsinConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(format_validation_error(origin, exc))
    raise ConfigError(problems)
