"""One failure never takes the others down, across the real parts.

* A member that raises in ``run()`` is rebuilt in its process while the real
  processor next to it keeps serving, and ``/health/detailed`` says so.
* A detached service SIGKILLed is started again by its supervisor.
* ``tocsin start all --detach`` frozen with SIGSTOP longer than the consumer
  session timeout, three times, during a notification storm: every service
  beats again within 30 s of SIGCONT and the webhook receiver got each
  (alert, status) exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import unique
from tests.kafkautil import consume_all, wait_for
from tests.processors.test_http_e2e import AUTH, TOKEN, free_port, processor_config
from tests.sinks.notify.support import alert_event, produce_alerts, record, resolved_of
from tocsin.app import supervisor
from tocsin.app.config import TocsinConfig
from tocsin.app.services import Backoff, ServiceGroup, grouped, with_heartbeats
from tocsin.core.component import Component
from tocsin.core.kafka import create_topics
from tocsin.schemas.codec import default_codec

ROOT = Path(__file__).resolve().parents[2]
FREEZE_S = 15.0  # longer than the 10 s consumer session timeout (processor.session_timeout_ms and kafka-python's)
BACK_WITHIN_S = 30.0


class Flaky(Component):
    """A service whose ``run()`` raises after a moment, as the notify sink's rebalance listener did."""

    built = 0

    def __init__(self) -> None:
        super().__init__()
        Flaky.built += 1

    def run(self) -> None:
        if not self._stop.wait(0.5):
            raise RuntimeError("listener raised on the IO thread")


def _detailed(url: str) -> dict[str, dict]:
    body = requests.get(f"{url}/health/detailed", headers=AUTH, timeout=10).json()
    return {c["name"] if "name" in c else c.get("check"): c for c in body["health_checks"]}


def _check(checks: dict[str, dict], name: str) -> dict | None:
    return next((c for k, c in checks.items() if k and k.endswith(name)), None)


def test_a_member_raising_in_run_restarts_while_the_processor_serves_and_health_shows_it(
        kafka_bootstrap, clickhouse_url) -> None:
    from tocsin.app.api_service import build as build_processor

    cfg = processor_config(kafka_bootstrap, clickhouse_url)
    cfg = cfg.model_copy(update={"processor": cfg.processor.model_copy(update={"heartbeat_interval_s": 1.0})})
    Flaky.built = 0
    inner = ServiceGroup({"processor": grouped(build_processor(cfg)), "sink-notify": Flaky()},
                         {"processor": lambda: grouped(build_processor(cfg)), "sink-notify": Flaky})
    group = with_heartbeats(cfg, "all", inner, Backoff(initial_s=0.5, max_s=2.0, reset_after_s=30))
    processor = group.members["processor"]
    url = f"http://{cfg.api.http_addr}"
    with group:
        t = threading.Thread(target=group.run, daemon=True)
        t.start()
        try:
            entry = wait_for(lambda: _check(_detailed(url), "restarts:sink-notify"), 90,
                             "restarts:sink-notify on /health/detailed", ignore=(requests.RequestException,))
            wait_for(lambda: Flaky.built >= 4, 30, "the flaky member rebuilt again and again")
            assert group.members["processor"] is processor, "the processor was never restarted"
            assert group.alive("processor") and group.status["processor"].restarts == 0
            assert requests.get(f"{url}/health", timeout=10).status_code == 200
            assert entry["status"] in ("unhealthy", "degraded"), entry
            text = json.dumps(entry)
            assert "listener raised on the IO thread" in text and "restarts" in text, entry
        finally:
            group.stop()
            t.join(60)
    metrics = [e for m in consume_all(cfg.kafka, cfg.kafka.topics.metrics, idle_s=2)
               for e in default_codec().decode_events(m.value)[1]]
    counts = [e["value"] for e in metrics if e["name"] == "tocsin_component_restarts_total"
              and e["labels"]["component"] == "sink-notify"]
    assert counts and max(counts) >= 2, "the restart counter metric rises"
    assert any(e["name"] == "tocsin_component_restarting" and e["value"] == 1.0 for e in metrics)


# ----------------------------------------------------------------------------- detached services


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    return {**env, "TOCSIN_HOME": str(home), "PYTHONPATH": str(ROOT)}


def _cli(home: Path, config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tocsin", "-c", str(config), *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(home), cwd=ROOT)


def _record(home: Path, name: str) -> supervisor.ServiceRecord:
    return supervisor.ServiceRecord(**json.loads((home / "run" / f"{name}.json").read_text()))


def _alive(pid: int) -> bool:
    from tocsin.core.localkafka import _pid_alive

    return _pid_alive(pid)


@contextlib.contextmanager
def _detached(home: Path, config: Path, name: str):
    out = _cli(home, config, "start", name, "--detach")
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield
    finally:
        _cli(home, config, "stop", name)
        print((home / "logs" / f"{name}.log").read_text(errors="replace")[-3000:])


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _base(kafka_bootstrap: str, tmp_path: Path) -> dict:
    run = unique("t")
    return {
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topics": {**{n: f"{run}.{n}" for n in ("logs", "metrics", "health", "alerts", "control",
                                                           "deadletter")}, "partitions": 3}},
        "clickhouse": {"url": f"chdb://{tmp_path / 'chdb'}", "database": run},
        "api": {"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}"},
        "processor": {"group_id": f"{run}-processor", "heartbeat_interval_s": 2.0},
        "summary": {"enabled": False},
    }


def test_a_detached_service_sigkilled_is_started_again_by_its_supervisor(kafka_bootstrap, tmp_path) -> None:
    data = _base(kafka_bootstrap, tmp_path)
    create_topics(TocsinConfig.model_validate(data).kafka)
    config = _write(tmp_path / "tocsin.yaml", data)
    home = tmp_path / "home"
    with _detached(home, config, "processor"):
        first = wait_for(lambda: _record(home, "processor").child_pid, 30, "the first child")
        os.kill(first, signal.SIGKILL)
        rec = wait_for(lambda: (r := _record(home, "processor")).child_pid not in (None, first) and r, 60,
                       "a new child after SIGKILL")
        assert rec.restarts == 1 and _alive(rec.child_pid) and _alive(rec.pid)
        url = f"http://{data['api']['http_addr']}"
        wait_for(lambda: requests.get(f"{url}/health", timeout=5).status_code == 200, 90,
                 "the restarted processor healthy", ignore=(requests.RequestException,))
    assert not _alive(rec.pid) and not _alive(rec.child_pid), "stop ends the supervisor and its child"


# ----------------------------------------------------------------------------- the freeze


SERVICES = [f"svc-{i:02d}" for i in range(12)]
RULES = ["error_rate", "p95_latency", "cpu_usage"]
BEATING = ("processor", "sink-notify", "sink-clickhouse", "agent")


@pytest.mark.slow
def test_start_all_frozen_past_the_session_timeout_three_times_comes_back_and_notifies_once(
        kafka_bootstrap, httpserver, tmp_path) -> None:
    hook = record(httpserver, "/hook")
    data = _base(kafka_bootstrap, tmp_path)
    data["notify"] = {
        "group_id": f"{data['clickhouse']['database']}-notify",
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook"),
                       "backoff_initial_s": 0.1}],
        "route": {"receiver": "hook", "group_by": ["service"], "group_wait_s": 0.5, "group_interval_s": 1.0},
        "inhibit_rules": [],
    }
    cfg = TocsinConfig.model_validate(data)
    create_topics(cfg.kafka)
    config = _write(tmp_path / "tocsin.yaml", data)
    home = tmp_path / "home"
    url = f"http://{data['api']['http_addr']}"
    firing = [alert_event(r, s, severity="warning") for s in SERVICES for r in RULES]
    waves = [firing[i::3] for i in range(3)]
    back_after: list[float] = []

    def beats_since(t_us: int) -> set[str]:
        checks = _detailed(url)
        out = set()
        for name in BEATING:
            c = _check(checks, f"heartbeat:{name}")
            details = (c or {}).get("details") or {}
            if c and int(details.get("last_beat", 0)) > t_us:
                out.add(name)
        return out

    with _detached(home, config, "all"):
        wait_for(lambda: beats_since(0) == set(BEATING), 120, "every service beating",
                 ignore=(requests.RequestException, ValueError))
        for n, wave in enumerate(waves):
            produce_alerts(cfg, wave)  # the storm: a wave of firing transitions, then freeze in mid-delivery
            wait_for(lambda: hook.count() > 0, 60, "deliveries under way")
            pid = _record(home, "all").child_pid
            os.kill(pid, signal.SIGSTOP)
            time.sleep(FREEZE_S)  # the fault itself is a duration, not a wait for a condition
            thawed = time.monotonic()
            thawed_us = time.time_ns() // 1000
            os.kill(pid, signal.SIGCONT)
            wait_for(lambda t=thawed_us: beats_since(t) == set(BEATING), BACK_WITHIN_S + 30,
                     f"every service beating after thaw {n + 1}", ignore=(requests.RequestException, ValueError))
            back_after.append(time.monotonic() - thawed)

        ours = {ev["fingerprint"] for ev in firing}

        def seen() -> Counter:  # the storm's alerts; the processor's own (cpu_usage of this host...) aside
            return Counter((a["fingerprint"], a["status"]) for b in hook.bodies() for a in b["alerts"]
                           if a["fingerprint"] in ours)

        wait_for(lambda: sum(1 for k in seen() if k[1] == "firing") >= len(firing), 120,
                 "every firing alert delivered", every_s=0.5)
        produce_alerts(cfg, [resolved_of(ev) for ev in firing])
        wait_for(lambda: sum(1 for k in seen() if k[1] == "resolved") >= len(firing), 120,
                 "every resolve delivered", every_s=0.5)
        restarts = _record(home, "all").restarts
    got = seen()
    others = sorted({(a["labels"].get("alertname"), a["status"]) for b in hook.bodies() for a in b["alerts"]
                     if a["fingerprint"] not in ours})
    log = (home / "logs" / "all.log").read_text(errors="replace")
    print(f"\nfreeze: other alerts {others}; in-process restarts {log.count('restarted a failed service')}")
    print(f"\nfreeze: back after {[round(b, 1) for b in back_after]} s; process restarts {restarts}; "
          f"{hook.count()} requests, {len(got)} (alert, status) pairs")
    expected = {(ev["fingerprint"], s) for ev in firing for s in ("firing", "resolved")}
    assert set(got) == expected, "none missed"
    assert not {k: v for k, v in got.items() if v > 1}, "each notification once"
    assert all(b <= BACK_WITHIN_S for b in back_after), f"services back after {back_after} s"
