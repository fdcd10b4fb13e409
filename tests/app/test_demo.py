"""The README's main job: `tocsin demo` catches the injected incident and leaves nothing running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tocsin.core.localkafka import _pid_alive


@pytest.mark.slow
def test_demo_fires_and_resolves_the_three_incidents_and_writes_the_report(tmp_path: Path) -> None:
    """As a user runs it: the demo starts its own broker (unless the run targets a cluster) and stops it."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "CLICKHOUSE_"))}
    env.update(TOCSIN_HOME=str(home))
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "tocsin", "demo", "--duration", "120", "--json-summary",
                           str(summary)], env=env, capture_output=True, text=True, timeout=420)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(summary.read_text())
    assert doc["ok"] is True
    assert set(doc["incidents"]) == {"error burst in checkout", "latency spike in payments",
                                     "disk usage breach on shop-db-1"}
    assert all(i["fired_at"] and i["resolved_at"] and i["severity"] == "critical" for i in doc["incidents"].values())
    assert doc["notifications"] >= 6  # a firing and a resolved notification per incident, at least

    report = Path(doc["reports"]["md"]).read_text()
    alerts_section = report.split("## Alerts", 1)[1].split("##", 1)[0]
    for rule, service in (("error_rate", "checkout"), ("api_response_time", "payments"), ("disk_usage", "shop-db")):
        line = next(ln for ln in alerts_section.splitlines() if f"| {rule} | {service} |" in ln)
        assert "open" not in line, line  # both its start and its end time are in the report
    assert "<svg" in Path(doc["reports"]["html"]).read_text()

    if "KAFKA_BOOTSTRAP_SERVERS" not in env:
        assert "stopped the local Kafka broker the demo started" in proc.stdout
    # `tocsin stop` (the demo calls it) leaves no tocsin process running, nor the broker it started.
    assert not list((home / "run").glob("*.json"))
    # every process the demo starts carries its config path, under this test's home, on its command line
    pids = [int(p) for p in subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split()]
    assert not [p for p in pids if _pid_alive(p)]
