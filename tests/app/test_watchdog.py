"""The dead man's switch across real processes: a real HTTP receiver gets pings while the processor and the
notify sink run, none within two intervals of a SIGKILL of either, and pings again once it is started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from werkzeug import Request, Response

from tests.kafkautil import wait_for
from tests.sinks.notify.support import record
from tocsin.app.config import TocsinConfig
from tocsin.app.watchdog import WatchdogConfig
from tocsin.core.kafka import create_topics

from .test_resilience import _base

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 2.0


class Pings:
    def __init__(self) -> None:
        self.at: list[float] = []
        self.lock = threading.Lock()

    def handler(self, request: Request) -> Response:
        with self.lock:
            self.at.append(time.monotonic())
        return Response("OK")

    def after(self, t: float) -> list[float]:
        with self.lock:
            return [x for x in self.at if x > t]


def _start(config: Path, name: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    return subprocess.Popen([sys.executable, "-m", "tocsin", "-c", str(config), "start", name], cwd=ROOT,
                            env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"))


def _kill(proc: subprocess.Popen) -> float:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return time.monotonic()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_the_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        WatchdogConfig(url="file:///etc/passwd")
    assert not WatchdogConfig().enabled


@pytest.mark.slow
def test_pings_stop_within_two_intervals_of_a_kill_and_resume_after_restart(kafka_bootstrap, httpserver,
                                                                            tmp_path) -> None:
    pings = Pings()
    httpserver.expect_request("/ping", method="POST").respond_with_handler(pings.handler)
    hook = record(httpserver, "/hook")
    data = _base(kafka_bootstrap, tmp_path)
    data["processor"]["heartbeat_interval_s"] = 1.0
    data["watchdog"] = {"url": httpserver.url_for("/ping"), "interval_s": INTERVAL_S, "method": "POST",
                        "events_within_s": 10}
    data["notify"] = {"group_id": f"{data['clickhouse']['database']}-notify",
                      "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")}],
                      "route": {"receiver": "hook", "group_wait_s": 0.2, "group_interval_s": 0.5},
                      "inhibit_rules": []}
    cfg = TocsinConfig.model_validate(data)
    create_topics(cfg.kafka)
    config = tmp_path / "tocsin.yaml"
    config.write_text(yaml.safe_dump(data))
    procs = {name: _start(config, name, tmp_path / f"{name}.log") for name in ("processor", "sink-notify")}
    gaps: dict[str, float] = {}
    try:
        wait_for(lambda: len(pings.after(0)) >= 3, 120, "pings while both run")
        for name in ("processor", "sink-notify"):
            killed = _kill(procs[name])
            time.sleep(3 * INTERVAL_S)  # the outage itself: long enough for a late ping to show
            late = [round(t - killed, 2) for t in pings.after(killed + 2 * INTERVAL_S)]
            assert not late, f"pings {late} s after SIGKILL of {name}"
            restarted = time.monotonic()
            procs[name] = _start(config, name, tmp_path / f"{name}.log")
            wait_for(lambda t=restarted: len(pings.after(t)) >= 2, 120, f"pings again after {name} restarted")
            gaps[name] = pings.after(restarted)[0] - restarted
    finally:
        for p in procs.values():
            _stop(p)
    print(f"\nwatchdog: {len(pings.at)} pings; first ping after restart: "
          f"{ {k: round(v, 1) for k, v in gaps.items()} } s")
    assert hook.count() == 0, "the Watchdog alert is routed to no receiver"
