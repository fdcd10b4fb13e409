"""/health latency under 200 requests/s while the processor works, and what that load costs the processor.

Two runs of the processor service (a subprocess, with its HTTP API in a
thread, wired as in production), each a fresh consumer group:

1. saturated: events/s through a pre-filled backlog, in alternating windows
   without and with 200 /health requests/s (the ratio is what the load costs;
   alternating makes the machine's other work hit both alike), and /health
   latency in the loaded windows;
2. live 10,000 events/s from a paced producer process, 200 /health requests/s:
   /health latency while the processor keeps up, and its lag at the end.

Latency is measured from each request's scheduled send time (open loop), so a
stalled server cannot hide its queue (no coordinated omission). The load
generator runs in the harness process, the producer in its own process.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BenchContext

DESCRIPTION = "/health p99 at 200 req/s beside a busy processor, and the processor's events/s with and without it"
RATIOS = {
    "processor events/s, /health load on it vs none": ("tocsin.loaded_events_per_s", "tocsin.baseline_events_per_s"),
    "processor events/s, /health load on it vs on another process": ("tocsin.loaded_events_per_s",
                                                                     "tocsin.elsewhere_events_per_s"),
}
REQUESTS_PER_S = 200
LIVE_EVENTS_PER_S = 10_000
EVENTS_PER_MESSAGE = int(os.environ.get("TOCSIN_BENCH_EVENTS_PER_MESSAGE", "100"))
"""Events per Kafka message: LogBatch/MetricBatch as agents send at volume; 1 sends single events."""
SERVICES = 50
PARTITIONS = 6
TOKEN = "bench-token"
WARMUP_S = 3.0
MAX_EVENTS_PER_S = 300_000
"""Sizes the backlog above what the processor reaches on batched messages here, so it never runs dry."""


# -- events ------------------------------------------------------------------------------------

def _batches(n_events: int, start_us: int, spread_us: int, first: int = 0) -> list[tuple[str, bytes, bytes]]:
    """(topic kind, key, value): half logs (5 % errors), half api_response_time metrics, per service.

    Message ``m`` (counting from ``first``) goes to service ``m % SERVICES``, alternating logs and metrics.
    """
    from tocsin.core.events import LOG_EVENT, METRIC_EVENT
    from tocsin.schemas.codec import default_codec

    codec = default_codec()
    out = []
    n_msgs = max(1, n_events // EVENTS_PER_MESSAGE)
    for k in range(n_msgs):
        m = first + k
        service = f"svc-{m % SERVICES}"
        ts = start_us + (k * spread_us) // n_msgs
        if m % 2:
            name, kind = METRIC_EVENT, "metrics"
            recs = [{"event_id": f"b{m}-{i}", "ts": ts + i, "service": service, "host": "h1",
                     "name": "api_response_time", "value": float(50 + (m * 7 + i) % 400), "unit": "ms",
                     "labels": {}} for i in range(EVENTS_PER_MESSAGE)]
        else:
            name, kind = LOG_EVENT, "logs"
            recs = [{"event_id": f"b{m}-{i}", "ts": ts + i, "service": service, "host": "h1",
                     "level": "ERROR" if (m // 2 + i) % 20 == 0 else "INFO", "logger": "shop",
                     "message": f"GET /x/{i}", "trace_id": None, "attrs": {}} for i in range(EVENTS_PER_MESSAGE)]
        value = codec.encode_batch(name, recs) if EVENTS_PER_MESSAGE > 1 else codec.encode(name, recs[0])
        out.append((kind, service.encode(), value))
    return out


def _config_data(ctx: BenchContext, run: str, port: int, start: str) -> dict[str, Any]:
    topics = ctx.state["topics"]
    return {
        "kafka": {"bootstrap_servers": ctx.bootstrap, "topics": {**topics, "partitions": PARTITIONS}},
        "clickhouse": {"url": f"chdb://{ctx.workdir / 'chdb'}"},
        "api": {"token": TOKEN, "http_addr": f"127.0.0.1:{port}"},
        # A poll of ~5,000 events, as with single-event messages: with 5,000 messages of 100 events a poll
        # is seconds of work, and the windows' processed counts would move in steps of that size.
        "processor": {"group_id": f"bench-health-{run}-{uuid.uuid4().hex[:6]}", "start_without_commit": start,
                      "heartbeat_interval_s": 0, "max_poll_records": max(1, 5000 // EVENTS_PER_MESSAGE)},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(ctx: BenchContext) -> None:
    from tocsin.app.config import KafkaConfig, TopicsConfig
    from tocsin.core import kafka as kafka_api
    from tocsin.core.events import now_us

    run = f"bench_health_{uuid.uuid4().hex[:8]}"
    topics = {name: f"{run}.{name}" for name in ("logs", "metrics", "health", "alerts", "control", "deadletter")}
    ctx.state["topics"] = topics
    kcfg = KafkaConfig(bootstrap_servers=ctx.bootstrap, topics=TopicsConfig(**topics, partitions=PARTITIONS))
    kafka_api.create_topics(kcfg)
    # A backlog the processor cannot finish within warm-up plus the measuring window.
    ctx.state["window_s"] = 3.0 if ctx.quick else 5.0
    ctx.state["rounds"] = 2 if ctx.quick else 4
    n = int(MAX_EVENTS_PER_S * (WARMUP_S + 3 * ctx.state["rounds"] * ctx.state["window_s"]))
    n_msgs = max(1, n // EVENTS_PER_MESSAGE)
    producer = kafka_api.producer(kcfg)
    start_us = now_us() - 600_000_000
    chunk = 5000
    for first in range(0, n_msgs, chunk):
        count = min(chunk, n_msgs - first) * EVENTS_PER_MESSAGE
        spread = 540_000_000 * count // n
        offset = 540_000_000 * first * EVENTS_PER_MESSAGE // n
        for kind, key, value in _batches(count, start_us + offset, spread, first=first):
            producer.send(topics[kind], key=key, value=value)
    producer.flush(300)
    producer.close()
    ctx.state["backlog_events"] = n_msgs * EVENTS_PER_MESSAGE


# -- the processor and the producer as subprocesses ----------------------------------------------

class _Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen([sys.executable, "-m", "bench.health_load", *args], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=Path(__file__).resolve().parents[1])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _start_processor(ctx: BenchContext, run: str, start: str = "earliest") -> tuple[_Proc, int]:
    """The processor subprocess, reading from the beginning of the topics or (``latest``) only what comes next."""
    port = _free_port()
    path = ctx.workdir / f"{run}.yaml"
    path.write_text(yaml.safe_dump(_config_data(ctx, run, port, start)))
    proc = _Proc(["serve", str(path)], ctx.workdir / f"{run}.log")
    _wait_healthy(proc, port)
    return proc, port


def _wait_healthy(proc: _Proc, port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.log.name} exited: {proc.log.read_text()[-2000:]}")
        try:
            status, _ = _get(port, "/health")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"{proc.log.name} did not become healthy: {proc.log.read_text()[-2000:]}")


def _get(port: int, path: str, token: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _processed(port: int) -> tuple[float, int]:
    """(monotonic time, events processed so far, all topics) from /metrics."""
    _, body = _get(port, "/metrics", token=True)
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("tocsin_processor_events_processed_total{"):
            total += float(line.rpartition(" ")[2])
    return time.monotonic(), int(total)


def _lag(port: int) -> int:
    _, body = _get(port, "/api/dashboard", token=True)
    return int(json.loads(body)["throughput"]["consumer_lag"])


# -- the /health load ----------------------------------------------------------------------------

def _health_load(port: int, duration_s: float, rate: float = REQUESTS_PER_S) -> dict[str, float]:
    """Open-loop GETs of /health on one keep-alive connection (a load balancer's probe), timed from schedule."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    interval = 1.0 / rate
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    n = int(duration_s * rate)
    for i in range(n):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies.append((time.perf_counter() - scheduled) * 1000)
    conn.close()
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": statistics.median(latencies), "p99_ms": q[98], "max_ms": max(latencies),
            "requests_per_s": n / elapsed, "errors": errors}


def _saturated(ctx: BenchContext, run: str) -> dict[str, float]:
    """One processor on the backlog, in rotating windows: no load, load on a bystander, load on the processor.

    Rotating makes the machine's other work hit every kind of window alike. The
    bystander is the same app in another process over a static view: the
    difference between its windows and the processor's own is what serving
    /health in the processor's process costs, apart from sharing the cores.
    """
    bystander_port = _free_port()
    bystander = _Proc(["bystander", str(bystander_port)], ctx.workdir / f"{run}-bystander.log")
    proc: _Proc | None = None
    windows: dict[str, list[float]] = {"quiet": [], "elsewhere": [], "own": []}
    latencies: list[dict[str, float]] = []
    try:
        _wait_healthy(bystander, bystander_port)
        proc, port = _start_processor(ctx, run)
        time.sleep(WARMUP_S)
        if _processed(port)[1] == 0:
            raise RuntimeError("the processor processed none of the backlog: does it read LogBatch/MetricBatch "
                               "(codec.decode_events)? TOCSIN_BENCH_EVENTS_PER_MESSAGE=1 sends single events")
        w = ctx.state["window_s"]
        for _ in range(ctx.state["rounds"]):
            for kind in windows:
                t0, p0 = _processed(port)
                if kind == "quiet":
                    time.sleep(w)
                elif kind == "elsewhere":
                    _health_load(bystander_port, w)
                else:
                    latencies.append(_health_load(port, w))
                t1, p1 = _processed(port)
                windows[kind].append((p1 - p0) / (t1 - t0))
        lag = _lag(port)
    finally:
        if proc is not None:
            proc.stop()
        bystander.stop()
    if lag == 0:
        raise RuntimeError("the backlog ran out inside the windows: the figures would undercount; raise the backlog")
    return {"baseline_events_per_s": statistics.mean(windows["quiet"]),
            "elsewhere_events_per_s": statistics.mean(windows["elsewhere"]),
            "loaded_events_per_s": statistics.mean(windows["own"]),
            "p50_ms": statistics.median(x["p50_ms"] for x in latencies),
            "p99_ms": max(x["p99_ms"] for x in latencies), "max_ms": max(x["max_ms"] for x in latencies),
            "errors": sum(x["errors"] for x in latencies)}


def _live(ctx: BenchContext) -> dict[str, float]:
    """A processor starting at the end of the topics, fed 10,000 events/s live while /health is probed."""
    run = f"live{ctx.repetition}"
    proc, port = _start_processor(ctx, run, start="latest")
    duration = 2 * ctx.state["window_s"] + 5
    producer = None
    try:
        path = ctx.workdir / f"{run}.yaml"
        producer = _Proc(["produce", str(path), str(LIVE_EVENTS_PER_S), str(duration + 2)],
                         ctx.workdir / "producer.log")
        time.sleep(2)
        t0, p0 = _processed(port)
        health = _health_load(port, duration - 2)
        t1, p1 = _processed(port)
        lag = _lag(port)
    finally:
        if producer is not None:
            producer.stop()
        proc.stop()
    return {**health, "events_per_s": (p1 - p0) / (t1 - t0), "lag_end": lag}


def run(ctx: BenchContext) -> dict[str, float]:
    sat = _saturated(ctx, f"saturated{ctx.repetition}")
    live = _live(ctx)
    return {
        "tocsin.baseline_events_per_s": sat["baseline_events_per_s"],
        "tocsin.elsewhere_events_per_s": sat["elsewhere_events_per_s"],
        "tocsin.loaded_events_per_s": sat["loaded_events_per_s"],
        "health.saturated_p50_ms": sat["p50_ms"],
        "health.saturated_p99_ms": sat["p99_ms"],
        "health.saturated_max_ms": sat["max_ms"],
        "health.saturated_errors": sat["errors"],
        "health.live_p50_ms": live["p50_ms"],
        "health.live_p99_ms": live["p99_ms"],
        "health.live_max_ms": live["max_ms"],
        "health.live_requests_per_s": live["requests_per_s"],
        "health.live_errors": live["errors"],
        "tocsin.live_events_per_s": live["events_per_s"],
        "tocsin.live_lag_end_events": live["lag_end"],
    }


# -- subprocess entry points ---------------------------------------------------------------------

def _serve(config_path: str) -> None:
    """The processor service with its HTTP API, until SIGTERM."""
    from tocsin.app.config import load_config
    from tocsin.processors.http import create_app, serve, stop
    from tocsin.processors.service import ProcessorService
    from tocsin.processors.view import ProcessorView

    cfg = load_config(config_path, env={})
    service = ProcessorService(cfg)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    service.start()
    view = ProcessorView(service)
    switch = os.environ.get("TOCSIN_BENCH_SWITCH_INTERVAL_S")  # compare against CPython's default 5 ms
    server, thread = serve(create_app(view, cfg), cfg,
                           **({"switch_interval_s": float(switch)} if switch else {}))
    try:
        service.run()
    finally:
        stop(server, thread)
        view.close()
        service.close()


class _IdleView:
    """A ServiceView of a healthy processor with nothing going on: what the bystander server reads."""

    def snapshot(self) -> Any:
        from tocsin.processors.view import Snapshot

        return Snapshot()  # running, polled and taken "forever ago in the future": always consuming

    def resolve(self, alert_id: str, reason: str, actor: str) -> str:
        return "unknown"


def _bystander(port: int) -> None:
    """The same HTTP app in a process of its own, until SIGTERM."""
    from tocsin.app.config import TocsinConfig
    from tocsin.processors.http import create_app, serve

    cfg = TocsinConfig.model_validate({"api": {"token": TOKEN, "http_addr": f"127.0.0.1:{port}"}})
    serve(create_app(_IdleView(), cfg), cfg)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])


def _produce(config_path: str, rate: float, seconds: float) -> None:
    """``rate`` events/s for ``seconds``, in batches, paced every 10 ms."""
    from tocsin.app.config import load_config
    from tocsin.core import kafka as kafka_api
    from tocsin.core.events import now_us

    cfg = load_config(config_path, env={})
    topics = {"logs": cfg.kafka.topics.logs, "metrics": cfg.kafka.topics.metrics}
    producer = kafka_api.producer(cfg.kafka)
    tick_s = EVENTS_PER_MESSAGE / rate  # one batch message per tick: 10 ms at 10,000 events/s
    start = time.perf_counter()
    for m in range(int(seconds / tick_s)):
        delay = start + m * tick_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for kind, key, value in _batches(EVENTS_PER_MESSAGE, now_us(), 1, first=m):
            producer.send(topics[kind], key=key, value=value)
    producer.flush(60)
    producer.close()


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    os.environ.pop("TOCSIN_CONFIG", None)
    if command == "serve":
        _serve(rest[0])
    elif command == "bystander":
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
        _bystander(int(rest[0]))
    elif command == "produce":
        _produce(rest[0], float(rest[1]), float(rest[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")
