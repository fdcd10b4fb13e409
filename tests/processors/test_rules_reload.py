"""Reloading rules without a restart: the engine's swap (pure, injected clock) and the running service.

The service test runs ``tocsin start processor`` as a subprocess with a config
file, changes its rule file and sends SIGHUP, then ``POST /api/rules/reload``s a
bad file: unchanged rules keep their alerts, a removed rule's alert resolves
with a reason, a bad file keeps the old rules and answers 400 with the same
lines as ``tocsin rules check``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from tests.kafkautil import wait_for
from tocsin.core.events import now_us
from tocsin.processors.alerts import FIRING, RESOLVED

from .helpers import T0, FakeWall, S, engine, metric, rules, states
from .kafkaproc import REPO, ProcessorProcess, alert_events, kafka_producer, processor_config, write_config

CPU = {"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"}, "aggregate": "latest",
       "window": "10s", "slices": 5, "warning": 80}
MEM = {"name": "mem", "source": "metrics", "filter": {"name": "mem_usage"}, "aggregate": "latest",
       "window": "10s", "slices": 5, "warning": 80}
SILENT = {"name": "silent", "kind": "absence", "source": "metrics", "filter": {"name": "mem_usage"},
          "absent_for": "20s"}


def _feed(eng, ps, wall, start_s: int, end_s: int, **values: float) -> None:
    for t in range(start_s, end_s):
        wall.t = T0 + t * S
        for name, v in values.items():
            eng.ingest(ps, "metrics", metric(T0 + t * S, v, name))


def _setup(*specs):
    wall = FakeWall()
    eng = engine(rules(*specs), wall=wall, grace_s=1)
    return eng, eng.add_partition("metrics", 0, "metrics"), wall


def test_unchanged_rules_keep_their_alert_and_a_removed_rule_resolves_with_a_reason():
    eng, ps, wall = _setup(CPU, MEM, SILENT)
    _feed(eng, ps, wall, 0, 15, cpu_usage=90, mem_usage=90)
    first = eng.take_transitions()
    assert sorted(t.rule for t in first) == ["cpu", "mem"]
    cpu_alert = next(t.alert_id for t in first if t.rule == "cpu")
    summary = eng.reload(rules(SILENT, CPU))  # mem removed, the other two moved (new indexes)
    assert summary == {"added": [], "changed": [], "removed": ["mem"], "unchanged": ["silent", "cpu"]}
    out = eng.take_transitions()
    assert states(out) == [(FIRING, RESOLVED, "none")] and out[0].rule == "mem"
    assert out[0].resolved_by == "reload" and "removed" in out[0].annotations["reason"]
    _feed(eng, ps, wall, 15, 40, cpu_usage=90, mem_usage=90)
    assert eng.take_transitions() == []  # cpu goes on firing in the same incident; mem is gone
    assert [a["alert_id"] for a in eng.open_alerts()] == [cpu_alert]
    _feed(eng, ps, wall, 40, 70, cpu_usage=10)  # mem stops: the kept absence rule still knows its groups
    got = eng.take_transitions()
    assert sorted((t.rule, t.state) for t in got) == [("cpu", RESOLVED), ("silent", FIRING)]


def test_a_changed_threshold_carries_the_open_alert_and_judges_after_one_window():
    eng, ps, wall = _setup(CPU)
    _feed(eng, ps, wall, 0, 15, cpu_usage=90)
    [fired] = eng.take_transitions()
    summary = eng.reload(rules({**CPU, "warning": 95, "critical": 99}))
    assert summary["changed"] == ["cpu"]
    _feed(eng, ps, wall, 15, 24, cpu_usage=90)
    assert eng.take_transitions() == []  # less than a window since the reload: no verdict, still open
    assert eng.open_alerts()[0]["alert_id"] == fired.alert_id
    _feed(eng, ps, wall, 24, 40, cpu_usage=90)
    [resolved] = eng.take_transitions()  # 90 is under the new warning: the same incident resolves
    assert resolved.alert_id == fired.alert_id and resolved.state == RESOLVED and resolved.resolved_by == "auto"
    assert (resolved.ts - T0) // S == 24  # a whole window after the reload (at the clock, 14 s, + 10 s)


def test_regrouping_resolves_the_old_alerts_and_a_new_rule_waits_a_window():
    eng, ps, wall = _setup(CPU)
    _feed(eng, ps, wall, 0, 15, cpu_usage=90)
    [fired] = eng.take_transitions()
    eng.reload(rules({**CPU, "group_by": ["service", "host"]}, {**MEM, "name": "mem2"}))
    [gone] = eng.take_transitions()
    assert gone.alert_id == fired.alert_id and gone.resolved_by == "reload"
    _feed(eng, ps, wall, 15, 40, cpu_usage=90, mem_usage=90)
    got = eng.take_transitions()
    assert sorted((t.rule, t.state, (t.ts - T0) // S) for t in got) == [("cpu", FIRING, 24), ("mem2", FIRING, 24)]
    assert next(t for t in got if t.rule == "cpu").labels["host"] == "h1"  # the new grouping


def test_reload_keeps_new_pattern_memory_by_rule_name():
    from .helpers import log

    pat = {"name": "newerr", "kind": "new_pattern", "source": "logs", "filter": {"level": ["ERROR"]},
           "window": "10s", "learn_for": "5s"}
    wall = FakeWall()
    eng = engine(rules(pat), wall=wall, grace_s=1)
    ps = eng.add_partition("logs", 0, "logs")
    for t in range(0, 10):
        eng.ingest(ps, "logs", log(T0 + t * S, message=f"db timeout after {t} ms"))  # learnt
    eng.reload(rules({**pat, "window": "20s"}))  # changed: the memory is the service's, it stays
    for t in range(10, 30):
        eng.ingest(ps, "logs", log(T0 + t * S, message="db timeout after 3 ms"))
    assert eng.take_transitions() == []


# -- the running service ---------------------------------------------------------------------------

CLI = "import sys; from tocsin.app.cli import main; sys.argv = ['tocsin', *sys.argv[1:]]; main()"
FAST = {"window": "3s", "slices": 3}
LIVE_RULES = [{**CPU, **FAST}, {**MEM, **FAST}]


def _produce_until(cfg, stop: threading.Event, values: dict[str, float]) -> None:
    """cpu_usage and mem_usage of one service, 5 a second with the current time, until ``stop``."""
    from tocsin.schemas.codec import default_codec

    codec = default_codec()
    producer = kafka_producer(cfg)
    i = 0
    try:
        while not stop.is_set():
            for name, v in list(values.items()):
                rec = {"event_id": f"r{i}-{name}", "ts": now_us(), "service": "shop", "host": "h1", "name": name,
                       "value": v, "unit": "percent", "labels": {}}
                producer.send(cfg.kafka.topics.metrics, key=b"shop", value=codec.encode("MetricEvent", rec))
            i += 1
            producer.flush(10)
            stop.wait(0.2)
    finally:
        producer.close(timeout=10)


def _events(cfg, rule: str) -> list[dict]:
    return [e for e in alert_events(cfg, idle_s=0.5) if e["rule"] == rule]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sighup_and_http_reload_against_a_running_processor(kafka_bootstrap, clickhouse_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TOCSIN_API_TOKEN", "reload-test-token")
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, partitions=1, rules=LIVE_RULES)
    rules_file = Path(cfg.processor.rules_file)
    proc = ProcessorProcess(write_config(cfg, tmp_path / "tocsin.yaml"), tmp_path / "processor.log").start()
    values = {"cpu_usage": 90.0, "mem_usage": 90.0}
    stop = threading.Event()
    producer = threading.Thread(target=_produce_until, args=(cfg, stop, values), daemon=True)
    producer.start()
    try:
        wait_for(lambda: _events(cfg, "cpu") and _events(cfg, "mem"), 90, "cpu and mem firing")
        [cpu_fired] = _events(cfg, "cpu")

        # 1. SIGHUP with a changed file: mem removed, cpu unchanged, a new rule reading cpu too.
        rules_file.write_text(yaml.safe_dump({"rules": [{**CPU, **FAST}, {**CPU, **FAST, "name": "cpu_hot"}]}))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["state"] == RESOLVED for e in _events(cfg, "mem")), 60, "mem resolved by the reload")
        mem_resolved = next(e for e in _events(cfg, "mem") if e["state"] == RESOLVED)
        assert mem_resolved["resolved_by"] == "reload" and "removed" in mem_resolved["annotations"]["reason"]
        wait_for(lambda: _events(cfg, "cpu_hot"), 60, "the added rule firing")
        assert _events(cfg, "cpu") == [cpu_fired]  # unchanged: the same incident, no transition

        # 2. A bad file over HTTP: 400 with `tocsin rules check`'s lines; the old rules stay.
        bad = {"rules": [{**CPU, **FAST, "window": "soon"}, {**MEM, "group_by": ["host"]}]}
        rules_file.write_text(yaml.safe_dump(bad))
        checked = subprocess.run([sys.executable, "-c", CLI, "rules", "check", str(rules_file)],
                                 capture_output=True, text=True, timeout=120, cwd=REPO)
        assert checked.returncode == 2, checked.stderr
        expected = [line.removeprefix("error: ") for line in checked.stderr.splitlines()]
        assert len(expected) == 2 and all(line.startswith(str(rules_file)) for line in expected), expected
        host, port = proc.http_addr.rsplit(":", 1)
        url = f"http://{host}:{port}/api/rules/reload"
        headers = {"Authorization": "Bearer reload-test-token"}
        reply = wait_for(lambda: _post(url, headers), 60, "the HTTP API answering")
        assert reply.status_code == 400, reply.text
        assert reply.json()["errors"] == expected
        proc.proc.send_signal(signal.SIGHUP)  # the same bad file by signal: logged, nothing changes

        # The old rules still run: cpu (and cpu_hot) clear and resolve by themselves, not by a reload.
        values["cpu_usage"] = 10.0
        wait_for(lambda: any(e["state"] == RESOLVED for e in _events(cfg, "cpu")), 60, "cpu resolved")
        cpu = _events(cfg, "cpu")
        assert [e["state"] for e in cpu] == [FIRING, RESOLVED] and cpu[1]["resolved_by"] == "auto"
        assert cpu[1]["alert_id"] == cpu_fired["alert_id"]

        # 3. A good file over HTTP: 200 naming what changed.
        rules_file.write_text(yaml.safe_dump({"rules": [{**CPU, **FAST}]}))
        ok = _post(url, headers)
        assert ok.status_code == 200 and ok.json()["removed"] == ["cpu_hot"], ok.text
        assert proc.alive
        log_text = (tmp_path / "processor.log").read_text(errors="replace")
        assert "rule reload failed" in log_text and "soon" in log_text
    finally:
        stop.set()
        producer.join(timeout=30)
        proc.stop()


def _post(url: str, headers: dict[str, str]) -> httpx.Response | None:
    try:
        return httpx.post(url, headers=headers, timeout=10)
    except httpx.TransportError:
        return None
