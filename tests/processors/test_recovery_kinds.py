"""SIGKILL and restart per rule kind (forecast, spike, slo): the same transitions as an uninterrupted run.

As ``test_recovery``: a scripted stream in real time to two processors on their own topics, one of them
killed (SIGKILL) twice mid-stream and restarted; both must emit what the pure engine computes over the
same script, each (alert_id, state, severity) exactly once. (new_pattern has its own:
``test_rules_patterns_persist``.)
"""

from __future__ import annotations

import time

import pytest

from tocsin.core.events import now_us

from .kafkaproc import (
    ProcessorProcess,
    _l,
    _m,
    alert_events,
    expected_transitions,
    identities,
    processor_config,
    stamp,
    start_paced_producer,
    write_config,
)
from .test_recovery import _diff, _settle

DURATION_S = 40
RULES = {
    "forecast": {"name": "disk_fills", "kind": "forecast", "source": "metrics", "filter": {"name": "disk_usage"},
                 "window": "6s", "slices": 6, "predict": "10s", "critical": 100, "resolve_after": "1s"},
    "spike": {"name": "error_spike", "kind": "spike", "source": "logs", "filter": {"level": "ERROR"},
              "aggregate": "count", "window": "3s", "slices": 3, "baseline": {"median_of": 3}, "warning": 4,
              "min_current": 6, "resolve_after": "1s"},
    "slo": {"name": "availability", "kind": "slo", "source": "metrics", "filter": {"name": "api_response_time"},
            "good": {"status~": "^[1-4]"}, "objective": 90, "period": "1h",
            "burn_rates": [{"long": "6s", "short": "2s", "burn_rate": 5, "severity": "critical"},
                           {"long": "12s", "short": "4s", "burn_rate": 2, "severity": "warning"}]},
}


def _script(kind: str, services: list[str]) -> list[tuple[float, str, dict]]:
    """Per service, staggered: forecast a disk filling then emptied; spike an error burst over a steady
    trickle; slo a burst of 5xx (fast burn) and a longer slow one."""
    out = []
    for step in range(DURATION_S * 10):
        t = step / 10
        for i, svc in enumerate(services):
            at = (14 if kind == "spike" else 6) + 12 * i  # the incident's start (a spike's baseline learns first)
            u = t + i * 1e-3
            if kind == "forecast" and step % 2 == 0:
                value = 50 + 4 * (t - at) if at <= t < at + 8 else 50.0
                out.append((u, "metrics", _m(svc, "disk_usage", value)))
            elif kind == "spike" and (step % 5 == 0 or (at <= t < at + 3)):
                out.append((u, "logs", _l(svc, "ERROR")))
            elif kind == "slo":
                bad = at <= t < at + 4 or (at + 10 <= t < at + 22 and step % 4 == 0)
                rec = _m(svc, "api_response_time", 80.0)
                rec["labels"] = {"status": "503" if bad else "200"}
                out.append((u, "metrics", rec))
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["slo", "forecast", "spike"])
def test_sigkill_mid_stream_changes_no_transition(kind, kafka_bootstrap, clickhouse_url, tmp_path):
    services = ["svc0", "svc1"]
    rules = [RULES[kind]]
    clean = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, rules=rules, grace_s=5.0)
    crash = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, rules=rules, grace_s=5.0)
    a = ProcessorProcess(write_config(clean, tmp_path / "clean.yaml"), tmp_path / "clean.log").start()
    b = ProcessorProcess(write_config(crash, tmp_path / "crash.yaml"), tmp_path / "crash-0.log").start()
    procs = [a, b]
    try:
        time.sleep(8)  # both started and joined their groups
        script = stamp(_script(kind, services), now_us())
        expected = expected_transitions(clean, script)
        assert len({e[1:] for e in expected}) > 1, expected  # the script makes more than one kind of transition
        start = time.monotonic() + 2
        producer = start_paced_producer([clean, crash], script, start)
        kills = []
        for i, at in enumerate((9.0, 23.0), start=1):  # during the first incident, and during the second
            time.sleep(max(0.0, start + at - time.monotonic()))
            b.kill()
            kills.append((at, len(alert_events(crash, idle_s=0.3))))
            b = ProcessorProcess(tmp_path / "crash.yaml", tmp_path / f"crash-{i}.log").start()
            procs.append(b)
        producer.join(timeout=120)
        assert producer.exitcode == 0
        _settle([clean, crash], len(expected))
        time.sleep(3)  # room for a stray duplicate to show up
        got_clean, got_crash = alert_events(clean), alert_events(crash)
    finally:
        for p in procs:
            p.kill()
    print(f"\n{kind}: kills at (s, transitions already out): {kills}; expected {len(expected)}: {expected}")
    assert identities(got_clean) == expected, _diff(expected, identities(got_clean))
    assert identities(got_crash) == identities(got_clean), _diff(identities(got_clean), identities(got_crash))
    ids = [e["event_id"] for e in got_crash]
    assert len(ids) == len(set(ids)), "a transition was emitted twice"
