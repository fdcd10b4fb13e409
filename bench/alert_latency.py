"""Alert latency: from the produce time of the first breaching event to its AlertEvent on the alerts topic,
under a steady background load, with the real processor running as ``tocsin start processor``.

Each probe is a new series (``bench_probe`` of service ``probe-N``) whose one sample breaches a
``for: 0s`` rule; its latency is the AlertEvent record's timestamp (set when the processor produced
it) minus the probe's event time (set when the bench produced it). The processor evaluates at
multiples of ``eval_interval_s`` (0.5 s by default), so up to one interval of the latency is the wait
for the next evaluation instant; with a ``for`` the same holds beyond the ``for``.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kafka import TopicPartition

from bench.harness import BenchContext
from bench.processor import bench_config
from tocsin.app.config import KafkaConfig, TocsinConfig
from tocsin.core import kafka as kafka_api
from tocsin.core.events import METRIC_EVENT, now_us
from tocsin.processors.rules import DEFAULT_RULES
from tocsin.schemas.codec import default_codec

DESCRIPTION = "produce of a breaching event -> its AlertEvent, p50/p99, under background load"
RATIOS: dict[str, tuple[str, str]] = {}
REPO = Path(__file__).resolve().parents[1]
PROBE_RULE = {"name": "bench_probe", "source": "metrics", "filter": {"name": "bench_probe"}, "aggregate": "latest",
              "window": "10s", "warning": 100, "for": "0s", "group_by": ["service"]}
LOAD_SERIES = 1000


def load_main(bootstrap: str, topic: str, rate: float, seconds: float) -> None:
    """Background load (run in its own process): healthy metrics over 1,000 series at ``rate`` events/s."""
    codec = default_codec()
    producer = kafka_api.producer(KafkaConfig(bootstrap_servers=bootstrap))
    names = ("api_response_time", "cpu_usage", "memory_usage", "database_query_time")
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        if sent >= due:
            time.sleep(0.001)
            continue
        ts = now_us()
        for _ in range(min(due - sent, 500)):
            k = sent % LOAD_SERIES
            svc = f"load-{k % 250}"
            rec = {"event_id": f"load-{sent}", "ts": ts, "service": svc, "host": f"{svc}-h{k // 250}",
                   "name": names[k % 4], "value": 20.0 + sent % 30, "unit": "", "labels": {}}
            producer.send(topic, key=svc.encode(), value=codec.encode(METRIC_EVENT, rec))
            sent += 1
    producer.flush(60)
    producer.close()
    print(sent / (time.monotonic() - started))


def _start_processor(cfg: TocsinConfig, workdir: Path) -> subprocess.Popen:
    rules_file = workdir / "rules.yaml"
    rules = yaml.safe_load(DEFAULT_RULES.read_text())["rules"] + [PROBE_RULE]
    rules_file.write_text(yaml.safe_dump({"rules": rules}))
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["processor"]["rules_file"] = str(rules_file)
    data["processor"]["start_without_commit"] = "latest"
    config_file = workdir / "tocsin.yaml"
    config_file.write_text(yaml.safe_dump(data))
    code = "import sys; from tocsin.app.cli import main; sys.argv = ['tocsin', *sys.argv[1:]]; main()"
    log = open(workdir / "processor.log", "ab")  # noqa: SIM115 - owned by the child
    with socket.socket() as sock:  # the processor serves its HTTP API too: on a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "TOCSIN_HTTP_ADDR": f"127.0.0.1:{port}"}
    return subprocess.Popen([sys.executable, "-c", code, "--config", str(config_file), "start", "processor"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


class _Alerts:
    """Reads the alerts topic from its end: probe service -> AlertEvent record timestamp (ms)."""

    def __init__(self, cfg: TocsinConfig) -> None:
        self.codec = default_codec()
        self.consumer = kafka_api.consumer(cfg.kafka, group_id=None, fetch_max_wait_ms=10)
        topic = cfg.kafka.topics.alerts
        parts = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or [])]
        self.consumer.assign(parts)
        self.consumer.seek_to_end(*parts)
        self.fired: dict[str, int] = {}

    def poll(self, timeout_ms: int = 100) -> None:
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for m in records:
                _, rec = self.codec.decode(m.value)
                if rec["rule"] == PROBE_RULE["name"] and rec["state"] == "firing":
                    self.fired.setdefault(rec["labels"]["service"], m.timestamp)

    def close(self) -> None:
        self.consumer.close()


def run(ctx: BenchContext) -> dict[str, float]:
    rate = ctx.n(10_000, 5_000)
    seconds = ctx.n(40, 12)
    probes = ctx.n(120, 30)
    cfg = bench_config(ctx)
    workdir = ctx.workdir / f"rep{ctx.repetition}"
    workdir.mkdir(parents=True, exist_ok=True)
    proc = _start_processor(cfg, workdir)
    alerts = _Alerts(cfg)
    codec = default_codec()
    producer = kafka_api.producer(cfg.kafka, linger_ms=0)
    load = None
    try:
        # Warm up: the processor has joined and fires when one probe arrives.
        deadline = time.monotonic() + 120
        k = 0
        while "probe-warm" not in alerts.fired:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the processor never fired the warm-up probe; see {workdir / 'processor.log'}")
            rec = {"event_id": f"warm-{k}", "ts": now_us(), "service": "probe-warm", "host": "bench",
                   "name": "bench_probe", "value": 1000.0, "unit": "", "labels": {}}
            producer.send(cfg.kafka.topics.metrics, key=b"probe-warm", value=codec.encode(METRIC_EVENT, rec))
            producer.flush()
            k += 1
            end = time.monotonic() + 1
            while time.monotonic() < end:
                alerts.poll()
        code = (f"from bench.alert_latency import load_main; load_main({ctx.bootstrap!r}, "
                f"{cfg.kafka.topics.metrics!r}, {rate}, {seconds})")
        load = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(2)  # load at full rate first
        sent: dict[str, int] = {}
        gap = (seconds - 4) / probes
        for i in range(probes):
            svc = f"probe-{i}"
            ts = now_us()
            rec = {"event_id": svc, "ts": ts, "service": svc, "host": "bench", "name": "bench_probe",
                   "value": 1000.0, "unit": "", "labels": {}}
            producer.send(cfg.kafka.topics.metrics, key=svc.encode(), value=codec.encode(METRIC_EVENT, rec))
            sent[svc] = ts
            end = time.monotonic() + gap
            while time.monotonic() < end:
                alerts.poll(timeout_ms=int(max(1, (end - time.monotonic()) * 1000)))
        deadline = time.monotonic() + 30
        while len([s for s in sent if s in alerts.fired]) < probes and time.monotonic() < deadline:
            alerts.poll()
        out, _ = load.communicate(timeout=120)
        achieved = float(out.strip().splitlines()[-1])
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        producer.close()
        alerts.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    latencies = sorted(alerts.fired[s] - sent[s] / 1000 for s in sent if s in alerts.fired)
    if not latencies:
        raise RuntimeError("no probe fired")
    return _figures(latencies, probes, achieved)


def _figures(latencies_ms: list[float], probes: int, load_rate: float) -> dict[str, Any]:
    def pct(q: float) -> float:
        return latencies_ms[min(len(latencies_ms) - 1, int(q * len(latencies_ms)))]

    return {
        "tocsin.alert_latency_p50_ms": statistics.median(latencies_ms),
        "tocsin.alert_latency_p99_ms": pct(0.99),
        "tocsin.alert_latency_max_ms": latencies_ms[-1],
        "tocsin.probes_fired": len(latencies_ms),
        "tocsin.probes_lost": probes - len(latencies_ms),
        "load.events_per_s": load_rate,
    }
