"""Restart: ``tocsin start sink-notify`` SIGKILLed in the middle of a storm and started again.

The receiver (pytest-httpserver) counts what it got: every alert exactly once
firing and once resolved, so no (transition, receiver) was sent twice and none
was missed. The sink runs as a subprocess with its own embedded ClickHouse
path; its notification log is checked by a last subprocess after it exits.

The one window no at-least-once notifier can close is between the receiver's
200 and the log insert (about 10 ms with chdb): a kill there repeats that one
notification after the restart. The receiver's rate limit (one request per
250 ms, no burst) spaces requests out, and the test kills 100-200 ms after one
arrived, so the kill lands anywhere else: mid-grouping, mid-wait for a token,
between polls, with offsets not yet committed: the restarted sink re-reads
transitions already sent and must skip them by the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import unique
from tests.sinks.notify.support import alert_event, produce_alerts, record, resolved_of, wait_until
from tocsin.app.config import TocsinConfig
from tocsin.core.kafka import create_topics

ROOT = Path(__file__).resolve().parents[3]
SERVICES = [f"svc-{i:02d}" for i in range(30)]
RULES = ["error_rate", "p95_latency", "cpu_usage", "memory_usage", "disk_usage"]


def _write_config(tmp_path: Path, kafka_bootstrap: str, url: str) -> tuple[Path, TocsinConfig]:
    run = unique("t")
    data = {
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topics": {**{n: f"{run}.{n}" for n in ("logs", "metrics", "health", "alerts", "control",
                                                           "deadletter", "silences")}, "partitions": 3}},
        "clickhouse": {"url": f"chdb://{tmp_path / 'chdb'}", "database": run},
        "notify": {
            "group_id": f"{run}-notify",
            "group_instance_id": "notify-1",  # the restarted sink takes its partitions back at once
            # Commit once (at the first delivery) and then never before the kill: the restarted sink
            # re-reads every later transition, and only the notification log keeps it from resending.
            "commit_interval_s": 3600,
            "receivers": [{"name": "hook", "type": "webhook", "url": url, "rate_limit_per_s": 4,
                           "rate_limit_burst": 1, "backoff_initial_s": 0.1}],
            "route": {"receiver": "hook", "group_by": ["service"], "group_wait_s": 0.5, "group_interval_s": 1.0},
            "inhibit_rules": [],
        },
        "summary": {"enabled": False},
    }
    path = tmp_path / "tocsin.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = TocsinConfig.model_validate(data)
    create_topics(cfg.kafka)
    return path, cfg


def _start(config: Path, tmp_path: Path, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CLICKHOUSE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "tocsin", "-c", str(config), "start", "sink-notify"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"sink-{n}.log", "wb"))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


LOG_QUERY = """
import json, sys
from tocsin.app.config import load_config
from tocsin.core.clickhouse import connect
cfg = load_config(sys.argv[1])
rows = connect(cfg.clickhouse).query(
    f"SELECT alert_event_id, status, count() FROM `{cfg.clickhouse.database}`.notifications GROUP BY 1, 2"
).result_rows
print(json.dumps([list(r) for r in rows]))
"""


@pytest.mark.slow
def test_sigkill_mid_storm_then_restart_sends_each_transition_exactly_once(kafka_bootstrap, httpserver, tmp_path):
    hook = record(httpserver, "/hook")
    config, cfg = _write_config(tmp_path, kafka_bootstrap, httpserver.url_for("/hook"))
    firing = [alert_event(r, s, severity="warning") for s in SERVICES for r in RULES]
    proc = _start(config, tmp_path, 1)
    try:
        # The storm: 150 firing transitions in six waves.
        for i in range(0, len(firing), 25):
            produce_alerts(cfg, firing[i:i + 25])
            time.sleep(0.5)
        wait_until(lambda: hook.count() >= 6, timeout_s=60, what="some notifications before the kill")

        def between_requests() -> bool:
            with hook.lock:
                since = time.monotonic() - hook.requests[-1].at
            return 0.1 <= since <= 0.2

        wait_until(between_requests, timeout_s=30, interval_s=0.005, what="a moment between two requests")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before_restart = hook.count()
        proc = _start(config, tmp_path, 2)

        def alerts_seen() -> Counter:
            return Counter((a["fingerprint"], a["status"]) for b in hook.bodies() for a in b["alerts"])

        wait_until(lambda: sum(1 for k in alerts_seen() if k[1] == "firing") >= len(firing), timeout_s=120,
                   interval_s=0.2, what="every firing alert delivered")
        resolves = [resolved_of(ev) for ev in firing]
        produce_alerts(cfg, resolves)
        wait_until(lambda: sum(1 for k in alerts_seen() if k[1] == "resolved") >= len(firing), timeout_s=120,
                   interval_s=0.2, what="every resolve delivered")
        time.sleep(2.0)  # anything sent twice would arrive by now
    finally:
        _stop(proc)
    seen = alerts_seen()
    skipped = [line.split(": ", 1)[1] for line in (tmp_path / "sink-2.log").read_text().splitlines()
               if "Skipping" in line]
    print(f"\nrestart: {before_restart} notifications before SIGKILL, {hook.count()} in all; "
          f"{len(seen)} (alert, status) pairs; after the restart: {skipped}")
    assert skipped, "the restarted sink re-read transitions already sent and skipped them"
    assert 0 < before_restart < hook.count()
    expected = {(ev["fingerprint"], "firing") for ev in firing} | {(ev["fingerprint"], "resolved") for ev in firing}
    assert set(seen) == expected, "none missed"
    duplicates = {k: n for k, n in seen.items() if n > 1}
    assert not duplicates, f"sent twice: {duplicates}"

    # The log agrees: one sent row per transition, written by whichever process sent it.
    out = subprocess.run([sys.executable, "-c", LOG_QUERY, str(config)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    sent = {r[0]: r[2] for r in rows if r[1] == "sent"}
    assert set(sent) == {ev["event_id"] for ev in firing + resolves}
    assert set(sent.values()) == {1}
