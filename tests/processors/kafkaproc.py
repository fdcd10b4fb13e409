"""Helpers for processor tests against the real broker: configs, services in threads or subprocesses."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import make_config
from tests.kafkautil import consume_all
from tocsin.app.config import TocsinConfig
from tocsin.core.kafka import create_topics
from tocsin.processors.service import ProcessorService
from tocsin.processors.view import ProcessorView
from tocsin.schemas.codec import default_codec

REPO = Path(__file__).resolve().parents[2]

FAST_PROCESSOR = {  # seconds-scale windows for integration tests
    "eval_interval_s": 0.5, "grace_s": 2.0, "max_future_s": 1.0, "tick_interval_s": 0.2,
    "heartbeat_interval_s": 0, "replay_margin_s": 2.0, "session_timeout_ms": 6000, "max_poll_records": 500,
}

TEST_RULES = [
    {"name": "latency", "source": "metrics", "filter": {"name": "api_response_time"}, "aggregate": "p95",
     "window": "5s", "slices": 5, "warning": 500, "critical": 2000, "for": "2s", "resolve_after": "2s",
     "cooldown": "3s", "annotations": {"summary": "{{ labels.service }} p95 {{ value | round(0) }} ms"}},
    {"name": "errors", "source": "logs", "filter": {"level": ["ERROR", "CRITICAL"]}, "aggregate": "rate_per_min",
     "window": "5s", "slices": 5, "warning": 60, "critical": 300, "resolve_after": "2s"},
    {"name": "silent", "kind": "absence", "source": "metrics", "filter": {"name": "cpu_usage"},
     "group_by": ["service", "host"], "absent_for": "4s"},
]


def processor_config(bootstrap: str, ch_url: str, tmp: Path, partitions: int = 3,
                     rules: list[dict[str, Any]] | None = None, **overrides: Any) -> TocsinConfig:
    """Fresh topics, a rule file in ``tmp`` and the fast processor settings; topics are created."""
    rules_file = tmp / f"rules-{time.monotonic_ns()}.yaml"
    rules_file.write_text(yaml.safe_dump({"rules": rules or TEST_RULES}))
    group = f"tocsin-processor-{uuid.uuid4().hex[:8]}"  # tests never share a consumer group
    cfg = make_config(bootstrap, ch_url, processor={**FAST_PROCESSOR, "rules_file": str(rules_file),
                                                    "group_id": group, **overrides})
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["kafka"]["topics"]["partitions"] = partitions
    cfg = TocsinConfig.model_validate(data)
    create_topics(cfg.kafka)
    return cfg


def write_config(cfg: TocsinConfig, path: Path) -> Path:
    data = cfg.model_dump(mode="json", exclude={"source"})
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def running(cfg: TocsinConfig) -> Iterator[ProcessorView]:
    """A processor service looping in a thread, seen through its view (``refresh()`` reads it); closed (offsets
    committed, group left) on exit."""
    svc = ProcessorService(cfg)
    svc.start()
    thread = threading.Thread(target=svc.run, name="processor-under-test", daemon=True)
    thread.start()
    try:
        yield ProcessorView(svc, background=False)
    finally:
        svc.stop()
        thread.join(timeout=30)
        svc.close()


class ProcessorProcess:
    """``tocsin start processor`` in a subprocess (so it can be SIGKILLed)."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    def start(self) -> ProcessorProcess:
        code = "import sys; from tocsin.app.cli import main; sys.argv = ['tocsin', *sys.argv[1:]]; main()"
        # Each process serves its own HTTP API (``tocsin start processor``): give it a port of its own.
        self.http_addr = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TOCSIN_HTTP_ADDR": self.http_addr}
        self.log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--config", str(self.config_file), "start", "processor"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alert_events(cfg: TocsinConfig, idle_s: float = 2.0) -> list[dict[str, Any]]:
    """Every AlertEvent on the alerts topic, in (partition, offset) order."""
    codec = default_codec()
    return [codec.decode(m.value)[1] for m in consume_all(cfg.kafka, cfg.kafka.topics.alerts, idle_s=idle_s)]


# -- scripted incidents -----------------------------------------------------------------------

S_US = 1_000_000


def incident_script(services: list[str], duration_s: float, seed: int = 11) -> list[tuple[float, str, dict]]:
    """(second offset, source, record without ts) of a scripted incident stream, in time order.

    Every service sends latency 10/s, cpu 2/s and INFO logs 2/s; service i has a 6 s latency spike
    (warning, then critical), every third an error burst (10/s for 4 s), every fourth a host that
    goes silent (no metrics) after its spike.
    """
    rng = random.Random(seed)
    out: list[tuple[float, str, dict]] = []
    n = len(services)
    spikes = [3 + i * (duration_s - 15) / n for i in range(n)]  # evenly spread over the run
    for step in range(int(duration_s * 10)):
        t = step / 10
        for i, svc in enumerate(services):
            spike_at = spikes[i]
            silent = i % 4 == 3 and t >= spike_at + 8
            if not silent:
                slow = spike_at <= t < spike_at + 6
                crit = spike_at + 2 <= t < spike_at + 5
                value = rng.uniform(2100, 4000) if crit else rng.uniform(600, 1500) if slow else rng.uniform(20, 200)
                out.append((t + i * 1e-4, "metrics", _m(svc, "api_response_time", value)))
                if step % 5 == 0:
                    out.append((t + i * 1e-4 + 2e-5, "metrics", _m(svc, "cpu_usage", rng.uniform(10, 50))))
            if step % 5 == 2:
                out.append((t + i * 1e-4 + 4e-5, "logs", _l(svc, "INFO")))
            if i % 3 == 1 and spike_at + 1 <= t < spike_at + 5:
                out.append((t + i * 1e-4 + 6e-5, "logs", _l(svc, "ERROR")))
    return out


def _m(svc: str, name: str, value: float) -> dict:
    return {"service": svc, "host": f"{svc}-host", "name": name, "value": value, "unit": "", "labels": {}}


def _l(svc: str, level: str) -> dict:
    return {"service": svc, "host": f"{svc}-host", "level": level, "logger": "app", "message": f"{level} line",
            "trace_id": None, "attrs": {}}


def stamp(script: list[tuple[float, str, dict]], base_us: int) -> list[tuple[float, str, dict]]:
    """Sets ts (and a unique event_id) from the offsets: every run with the same base gets identical records."""
    out = []
    for i, (offset, source, rec) in enumerate(script):
        ts = base_us + int(offset * S_US)
        out.append((offset, source, {"event_id": f"e{i}", "ts": ts, **rec}))
    return out


def paced_produce(cfgs: list[TocsinConfig], script: list[tuple[float, str, dict]], start_mono: float,
                  stop: threading.Event | None = None) -> int:
    """Produces each record to every config's topics when its offset comes due (real time)."""
    codec = default_codec()
    names = {"metrics": "MetricEvent", "logs": "LogEvent"}
    producers = [kafka_producer(c) for c in cfgs]
    sent = 0
    try:
        for offset, source, rec in script:
            if stop is not None and stop.is_set():
                break
            delay = start_mono + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            value = codec.encode(names[source], rec)
            for c, p in zip(cfgs, producers, strict=True):
                p.send(getattr(c.kafka.topics, source), key=rec["service"].encode(), value=value)
            sent += 1
        for p in producers:
            p.flush(30)
    finally:
        for p in producers:
            p.close(timeout=10)
    return sent


def start_paced_producer(cfgs: list[TocsinConfig], script: list[tuple[float, str, dict]],
                         start_mono: float) -> multiprocessing.process.BaseProcess:
    """``paced_produce`` in its own process: the test's polling must not hold up the real-time stream.

    (A producer that stalls for longer than grace makes idle partitions' clocks move on and its next
    events late, which no processor could be blamed for.) CLOCK_MONOTONIC is shared by processes.
    """
    proc = multiprocessing.get_context("spawn").Process(target=paced_produce, args=(cfgs, script, start_mono),
                                                         daemon=True)
    proc.start()
    return proc


def kafka_producer(cfg: TocsinConfig):
    from tocsin.core import kafka as kafka_api

    return kafka_api.producer(cfg.kafka, linger_ms=1)


def expected_transitions(cfg: TocsinConfig, script: list[tuple[float, str, dict]]) -> list[tuple[str, str, str]]:
    """The pure engine over the same (stamped) script: what the service must emit, each exactly once."""
    from tocsin.processors.engine import Engine
    from tocsin.processors.rules import load_rules

    p = cfg.processor
    last = max(rec["ts"] for _, _, rec in script)
    eng = Engine(load_rules(p.rules_file), eval_interval_us=int(p.eval_interval_s * 1e6),
                 grace_us=int(p.grace_s * 1e6), max_future_us=10**15, wall=lambda: last)
    parts = {src: eng.add_partition(src, 0, src) for src in ("metrics", "logs")}
    for _, source, rec in sorted(script, key=lambda x: x[2]["ts"]):
        eng.ingest(parts[source], source, dict(rec))
    for ps in parts.values():  # the stream ends: idle partitions follow the wall clock
        for k in range(1, 121):
            eng.advance_idle(ps, last + k * 500_000)
    return sorted(t.identity for t in eng.take_transitions())


def identities(events: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((e["alert_id"], e["state"], e["severity"]) for e in events)
