"""Exactly once from Kafka into ClickHouse while the sink is SIGKILLed three times and ClickHouse fails for 30 s.

The sink runs as ``python -m tocsin start sink-clickhouse`` subprocesses on their
own embedded ClickHouse path (chdb locks a path to one process), one at a time:

1. killed with SIGKILL from outside while it is inserting;
2. killed by its fault switch with SIGKILL right after an insert and before its
   offset commit (the window exactly-once is about);
3. started with inserts failing for 30 s (fault switch), killed with SIGKILL
   from outside during the outage;
4. started again (the outage still running), left to finish, stopped with SIGTERM.

Then ``tocsin query`` (a fifth process, which can open the path now) counts:
every table holds exactly the events produced, each event_id once, and the
rollups count each event once too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kafka import TopicPartition
from kafka.errors import KafkaError

from tests.conftest import make_config
from tocsin.core import kafka as kafka_api
from tocsin.core.events import ALERT_EVENT, HEALTH_EVENT, LOG_EVENT, METRIC_EVENT, now_us
from tocsin.schemas.codec import default_codec

# 500,000 events as the issue asks; they travel as agents send them (batches of 50
# log or metric events per message), plus single health and alert events.
N_LOGS = 350_000
N_METRICS = 140_000
N_HEALTH = 7_000
N_ALERTS = 3_000
BATCH = 50
GARBAGE = 25
OUTAGE_S = 30.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _messages(base: int) -> dict[str, list[tuple[bytes, bytes]]]:
    codec = default_codec()
    rnd = random.Random(7)
    out: dict[str, list[tuple[bytes, bytes]]] = {"logs": [], "metrics": [], "health": [], "alerts": []}
    services = [f"svc-{i}" for i in range(12)]
    for start in range(0, N_LOGS, BATCH):
        svc = services[(start // BATCH) % len(services)]
        events = [{"event_id": f"log-{i}", "ts": base - rnd.randrange(3_600_000_000), "service": svc, "host": "h1",
                   "level": "ERROR" if i % 17 == 0 else "INFO", "logger": "shop", "message": f"request {i} done",
                   "trace_id": None, "attrs": {"i": str(i)}} for i in range(start, min(start + BATCH, N_LOGS))]
        out["logs"].append((svc.encode(), codec.encode_batch(LOG_EVENT, events)))
    for start in range(0, N_METRICS, BATCH):
        svc = services[(start // BATCH) % len(services)]
        events = [{"event_id": f"metric-{i}", "ts": base - rnd.randrange(3_600_000_000), "service": svc,
                   "host": "h1", "name": "api_response_time", "value": rnd.random() * 900, "unit": "ms",
                   "labels": {}} for i in range(start, min(start + BATCH, N_METRICS))]
        out["metrics"].append((svc.encode(), codec.encode_batch(METRIC_EVENT, events)))
    for i in range(N_HEALTH):
        svc = services[i % len(services)]
        rec = {"event_id": f"health-{i}", "ts": base - i * 1000, "service": svc, "host": "h1", "check": "database",
               "status": "healthy" if i % 9 else "unhealthy", "response_time_ms": 3.5, "details": {}, "error": None}
        out["health"].append((svc.encode(), codec.encode(HEALTH_EVENT, rec)))
    for i in range(N_ALERTS):
        svc = services[i % len(services)]
        rec = {"event_id": f"alert-{i}", "ts": base - i * 1000, "alert_id": f"a{i // 3}", "fingerprint": f"f{i % 40}",
               "rule": "error_rate", "severity": "critical", "state": ("pending", "firing", "resolved")[i % 3],
               "labels": {"service": svc}, "started_at": base - i * 1000}
        out["alerts"].append((f"f{i % 40}".encode(), codec.encode(ALERT_EVENT, rec)))
    return out


def _produce(cfg, topic_of: dict[str, str], messages: dict[str, list[tuple[bytes, bytes]]]) -> None:
    producer = kafka_api.producer(cfg.kafka)
    for kind, msgs in messages.items():
        for key, value in msgs:
            producer.send(topic_of[kind], key=key, value=value)
    for i in range(GARBAGE):
        producer.send(topic_of["logs"], key=b"junk", value=b"not an event %d" % i)
    producer.flush(120)
    producer.close()


def _committed_fraction(cfg, tps: list[TopicPartition], ends: dict[TopicPartition, int]) -> float:
    admin = kafka_api.admin(cfg.kafka)
    try:
        offsets = admin.list_group_offsets(cfg.sink_clickhouse.group_id).get(cfg.sink_clickhouse.group_id, {})
    except KafkaError as exc:
        if not exc.retriable:  # the coordinator is still loading or the group does not exist yet
            raise
        return 0.0
    finally:
        admin.close()
    done = sum(min(offsets[tp].offset, ends[tp]) if tp in offsets and offsets[tp].offset >= 0 else 0 for tp in tps)
    return done / max(1, sum(ends.values()))


def _start(config_path: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tocsin", "-c", str(config_path), "start", "sink-clickhouse"],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=env, cwd=Path(__file__).parents[3],
    )


def _wait(pred, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sink exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_sigkill_three_times_and_a_30s_outage_store_every_event_once(kafka_bootstrap, tmp_path):
    cfg = make_config(kafka_bootstrap, f"chdb://{tmp_path / 'chdb'}", sink_clickhouse={
        # Its own group, so tests running at the same time never share members.
        "group_id": f"sink-eo-{uuid.uuid4().hex[:8]}", "group_instance_id": "sink-under-test",
        "session_timeout_ms": 6000, "batch_max_rows": 20_000,
        "batch_max_age_s": 0.5, "retry_backoff_initial_s": 0.2, "retry_backoff_max_s": 2.0,
    })
    kafka_api.create_topics(cfg.kafka)
    t = cfg.kafka.topics
    topic_of = {"logs": t.logs, "metrics": t.metrics, "health": t.health, "alerts": t.alerts}
    config_path = tmp_path / "tocsin.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"source"})))
    log = tmp_path / "sink.log"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}
    env.pop("TOCSIN_CONFIG", None)

    messages = _messages(now_us())
    first = {k: v[: len(v) // 2] for k, v in messages.items()}
    rest = {k: v[len(v) // 2:] for k, v in messages.items()}
    _produce(cfg, topic_of, first)
    late = threading.Thread(target=_produce, args=(cfg, topic_of, rest))  # the rest arrives while the sink runs

    probe = kafka_api.consumer(cfg.kafka, group_id=None)
    tps = [TopicPartition(topic, p) for topic in topic_of.values() for p in range(3)]
    procs: list[subprocess.Popen] = []
    try:
        # 1. SIGKILL from outside while data flows.
        p1 = _start(config_path, log, env)
        procs.append(p1)
        late.start()
        ends = probe.end_offsets(tps)
        _wait(lambda: _committed_fraction(cfg, tps, ends) > 0.1, 120, "first commits", p1)
        time.sleep(random.Random(1).uniform(0.1, 0.6))
        p1.send_signal(signal.SIGKILL)
        p1.wait(30)
        late.join(120)

        # 2. SIGKILL by the fault switch between insert and commit.
        p2 = _start(config_path, log, {**env, "TOCSIN_FAULT_SINK_KILL_AFTER_INSERTS": "2"})
        procs.append(p2)
        assert p2.wait(120) == -signal.SIGKILL

        # 3. Inserts fail for 30 s; SIGKILL from outside during the outage.
        outage_env = {**env, "TOCSIN_FAULT_CLICKHOUSE_UNTIL": str(time.time() + OUTAGE_S)}
        p3 = _start(config_path, log, outage_env)
        procs.append(p3)
        time.sleep(8)
        assert p3.poll() is None, "the sink must survive a ClickHouse outage"
        p3.send_signal(signal.SIGKILL)
        p3.wait(30)

        # 4. Restart inside the outage; it must wait, then finish.
        p4 = _start(config_path, log, outage_env)
        procs.append(p4)
        ends = probe.end_offsets(tps)
        _wait(lambda: _committed_fraction(cfg, tps, ends) >= 1.0, 240, "all offsets committed", p4)
        p4.send_signal(signal.SIGTERM)
        assert p4.wait(60) == 0
    finally:
        probe.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    sink_log = log.read_text(errors="replace")
    assert "re-forming a pending range" in sink_log, "no restart found a range recorded before a kill"
    assert "batch insert failed" in sink_log, "the outage never reached the sink"

    sql = (
        "SELECT (SELECT count() FROM {db}.logs), (SELECT uniqExact(event_id) FROM {db}.logs),"
        # the sink's own heartbeats (service 'tocsin') land in metrics too: count the test's events
        " (SELECT count() FROM {db}.metrics WHERE service != 'tocsin'),"
        " (SELECT uniqExact(event_id) FROM {db}.metrics WHERE service != 'tocsin'),"
        " (SELECT count() FROM {db}.health_checks), (SELECT uniqExact(event_id) FROM {db}.health_checks),"
        " (SELECT count() FROM {db}.alerts), (SELECT uniqExact(event_id) FROM {db}.alerts),"
        " (SELECT uniqExactMerge(events) FROM {db}.log_counts_1m),"
        " (SELECT uniqExactMerge(samples) FROM {db}.metrics_1m WHERE service != 'tocsin')"
    ).format(db=f"`{cfg.clickhouse.database}`")
    out = subprocess.run(
        [sys.executable, "-m", "tocsin", "-c", str(config_path), "query", sql, "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).parents[3],
    )
    assert out.returncode == 0, out.stderr
    counts = list(json.loads(out.stdout)[0].values())
    assert counts == [N_LOGS, N_LOGS, N_METRICS, N_METRICS, N_HEALTH, N_HEALTH, N_ALERTS, N_ALERTS,
                      N_LOGS, N_METRICS]
