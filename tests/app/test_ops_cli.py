"""`tocsin alerts`, `alerts --follow` and `resolve` read and write the real alert and control topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.kafkautil import consume_all, produce
from tocsin.core.events import ALERT_EVENT, now_us


def _alert(fp: str, state: str, severity: str, ts: int, started: int, service: str) -> dict:
    return {"event_id": f"{fp}-{state}-{ts}", "ts": ts, "alert_id": f"{fp}-{started}", "fingerprint": fp,
            "rule": "error_rate", "severity": severity, "previous_severity": "none", "state": state,
            "previous_state": "inactive", "value": 6.0, "threshold": 5.0, "labels": {"service": service},
            "annotations": {"summary": f"errors in {service}"}, "started_at": started,
            "ended_at": ts if state == "resolved" else None, "resolved_by": "auto" if state == "resolved" else None}


def _cli(cfg, tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tocsin.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json(exclude_none=True, exclude={"source"}))))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    return subprocess.run([sys.executable, "-m", "tocsin", "--config", str(path), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_alerts_lists_latest_state_and_resolve_publishes_a_control_event(tocsin_config, tmp_path: Path) -> None:
    cfg = tocsin_config
    t0 = now_us()
    events = [
        _alert("fp-a", "firing", "warning", t0, t0, "checkout"),
        _alert("fp-a", "firing", "critical", t0 + 10, t0, "checkout"),  # escalation: same incident
        _alert("fp-b", "firing", "warning", t0 + 20, t0 + 20, "payments"),
        _alert("fp-b", "resolved", "warning", t0 + 30, t0 + 20, "payments"),
    ]
    produce(cfg.kafka, cfg.kafka.topics.alerts, ALERT_EVENT, events, key_field="fingerprint")

    active = json.loads(_cli(cfg, tmp_path, "alerts", "--json").stdout)
    assert [(a["fingerprint"], a["severity"], a["state"]) for a in active] == [("fp-a", "critical", "firing")]
    everything = json.loads(_cli(cfg, tmp_path, "alerts", "--all", "--json").stdout)
    assert {a["fingerprint"]: a["state"] for a in everything} == {"fp-a": "firing", "fp-b": "resolved"}

    unknown = _cli(cfg, tmp_path, "resolve", "nope")
    assert unknown.returncode == 1 and "no alert 'nope'" in unknown.stderr
    already = _cli(cfg, tmp_path, "resolve", f"fp-b-{t0 + 20}")
    assert already.returncode == 0 and "already resolved" in already.stdout
    done = _cli(cfg, tmp_path, "resolve", f"fp-a-{t0}", "--reason", "rolled back", "--actor", "ops")
    assert done.returncode == 0, done.stderr

    from tocsin.schemas.codec import default_codec

    controls = [default_codec().decode(m.value)[1] for m in consume_all(cfg.kafka, cfg.kafka.topics.control, 1)]
    assert len(controls) == 1
    c = controls[0]
    assert (c["action"], c["alert_id"], c["fingerprint"], c["reason"], c["actor"]) == (
        "resolve", f"fp-a-{t0}", "fp-a", "rolled back", "ops")


def test_alerts_follow_prints_transitions_as_they_happen(tocsin_config, tmp_path: Path) -> None:
    cfg = tocsin_config
    path = tmp_path / "tocsin.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json(exclude_none=True, exclude={"source"}))))
    proc = subprocess.Popen([sys.executable, "-m", "tocsin", "--config", str(path), "alerts", "--follow", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)  # let the subscriber reach the end of the topic before anything is published
        t0 = now_us()
        produce(cfg.kafka, cfg.kafka.topics.alerts, ALERT_EVENT,
                [_alert("fp-f", "firing", "warning", t0, t0, "search"),
                 _alert("fp-f", "resolved", "warning", t0 + 5, t0, "search")], key_field="fingerprint")
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert [(e["fingerprint"], e["state"]) for e in lines] == [("fp-f", "firing"), ("fp-f", "resolved")]
