"""Config loading: defaults, YAML, environment overrides, and errors that name file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tocsin.app.config import load_config
from tocsin.core.errors import ConfigError


def test_defaults_need_no_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.kafka.topics.alerts == "tocsin.alerts"
    assert cfg.clickhouse.resolved_url().startswith("chdb://")
    assert cfg.clickhouse.retention_days == 30  # the seed's "keep 30 days"
    assert cfg.api.http_addr == "127.0.0.1:8080"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tocsin.yaml"
    path.write_text("kafka:\n  bootstrap_servers: file:9092\nlog_dir: /from/file\n")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "env:9092", "CLICKHOUSE_URL": "http://u:p@ch:8123",
        "LOG_DIR": "/var/log/ecommerce", "ALERT_EMAIL_RECIPIENTS": "admin@company.com, ops@company.com",
        "MONITORING_SUMMARY_RECIPIENTS": "ops@company.com", "TOCSIN_API_TOKEN": "s3cret",
        "TOCSIN_HTTP_ADDR": "0.0.0.0:9000",
    }
    cfg = load_config(path, env=env)
    assert cfg.kafka.bootstrap_servers == "env:9092"
    assert cfg.clickhouse.url == "http://u:p@ch:8123"
    assert cfg.log_dir == Path("/var/log/ecommerce")
    assert cfg.alert_email_recipients == ["admin@company.com", "ops@company.com"]
    assert cfg.monitoring_summary_recipients == ["ops@company.com"]
    assert cfg.api.token is not None and cfg.api.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)  # secrets never reach logs
    assert (cfg.api.host, cfg.api.port) == ("0.0.0.0", 9000)
    assert cfg.source == str(path)


def test_every_problem_is_reported_with_file_and_dotted_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  topics:\n    partitions: 0\n  bootstrap_server: x\nclickhouse:\n  url: mysql://x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = info.value.problems
    assert len(problems) == 3
    assert any(p.startswith(f"{path}: kafka.topics.partitions: ") and "(got 0)" in p for p in problems)
    assert any(p.startswith(f"{path}: kafka.bootstrap_server: Extra inputs") for p in problems)
    assert any(p.startswith(f"{path}: clickhouse.url: must start with chdb://") for p in problems)


@pytest.mark.parametrize(("text", "expected"), [
    ("kafka: [1, 2\n", "not valid YAML at line"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_unparseable_file_is_a_config_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", env={})


def test_bad_env_value_is_reported_as_the_field_it_overrides() -> None:
    with pytest.raises(ConfigError, match=r"defaults: api.http_addr: must be host:port"):
        load_config(None, env={"TOCSIN_HTTP_ADDR": "nonsense"})


def test_cli_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  topics:\n    partitions: many\n")
    proc = subprocess.run([sys.executable, "-m", "tocsin", "--config", str(path), "topics", "list"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {path}: kafka.topics.partitions: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')"
    )
    assert "Traceback" not in proc.stderr
