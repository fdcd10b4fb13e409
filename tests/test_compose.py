"""docker/compose.yaml is a valid Compose file (validated by the docker client; no engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).parents[1] / "docker" / "compose.yaml"


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates_with_the_docker_client() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose client (scripts/setup.sh installs Debian's docker-compose)")
    proc = subprocess.run([*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    services = rendered["services"]
    assert {"kafka", "clickhouse", "init", "processor", "sink-clickhouse", "sink-notify", "agent"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["processor"]["command"] == ["start", "processor"]
    assert services["processor"]["environment"]["CLICKHOUSE_URL"].startswith("http://")
