"""Processor throughput: decode, windows and the default rules over a pre-filled topic, beside loops that
only consume and decode the same topics, with kafka-python's record reader (the baseline) and with
tocsin's (``tocsin.core.kafkafetch``, which the processor uses), in the same run.

The data: 10,000 metric series (2,000 hosts of 500 services, each host sending api_response_time,
database_query_time, cpu_usage, memory_usage and disk_usage{mount="/"}) plus their services' log lines
(15 % of events, 5 % of those ERROR), in event-time order over ~17 minutes, a few services slow or
erroring so that rules fire. The processor is the real ``ProcessorService`` (default rules, fresh
consumer group from the earliest offset) driven until it has consumed everything.
"""

from __future__ import annotations

import gc
import os
import random
import time
import uuid
from typing import Any

from bench.harness import BenchContext
from bench.kafka import consume_decode
from tocsin.app.config import TocsinConfig
from tocsin.core import kafka as kafka_api
from tocsin.core.events import LOG_EVENT, METRIC_EVENT, now_us
from tocsin.processors.service import GC_THRESHOLDS
from tocsin.schemas.codec import default_codec

DESCRIPTION = "events/s through decode, windows and rules (default rules) vs consume+decode only"
RATIOS = {
    "processor/consume+decode": ("tocsin.process_events_per_s", "kafka_python.consume_decode_events_per_s"),
    "processor/consume+decode with tocsin's reader": ("tocsin.process_events_per_s",
                                                      "tocsin_reader.consume_decode_events_per_s"),
}
PARTITIONS = 6
METRICS = ("api_response_time", "database_query_time", "cpu_usage", "memory_usage", "disk_usage")
LOG_SHARE = 0.15
SERIES_INTERVAL_S = 10.0
"""Each metric series reports every 10 s of event time (a typical scrape / agent interval)."""


def mixed_events(n: int, series: int, seed: int = 1, end_us: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (source, record) pairs over ``series`` metric series and their services' logs, in ts order."""
    rng = random.Random(seed)
    hosts = max(1, series // len(METRICS))
    services = max(1, hosts // 4)
    n_metric = int(n * (1 - LOG_SHARE))
    # Event time: every series once per SERIES_INTERVAL_S, so the stream spans n_metric / series intervals.
    span_us = int(max(1.0, n_metric / series) * SERIES_INTERVAL_S * 1e6)
    end_us = end_us if end_us is not None else now_us() - 5_000_000
    start = end_us - span_us
    slow = {f"svc-{i}" for i in range(0, services, 50)}  # 2 % of services slow: their p95 alert fires
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        ts = start + (i * span_us) // n
        if rng.random() < LOG_SHARE:
            svc = f"svc-{rng.randrange(services)}"
            level = "ERROR" if rng.random() < 0.05 else "INFO"
            out.append(("logs", {"event_id": f"l{i}", "ts": ts, "service": svc, "host": f"{svc}-h0",
                                 "level": level, "logger": "shop.views", "message": f"GET /api/items/{i % 97}",
                                 "trace_id": None, "attrs": {"status": "500" if level == "ERROR" else "200"}}))
            continue
        k = rng.randrange(series)
        host_i, metric = divmod(k, len(METRICS))
        host_i %= hosts
        svc = f"svc-{host_i % services}"
        name = METRICS[metric]
        if name == "api_response_time":
            value = rng.lognormvariate(5.5 if svc in slow else 4.0, 0.6)
        elif name == "database_query_time":
            value = rng.lognormvariate(2.5, 0.7)
        else:
            value = rng.uniform(20, 70)
        out.append(("metrics", {"event_id": f"m{i}", "ts": ts, "service": svc, "host": f"{svc}-h{host_i}",
                                "name": name, "value": value, "unit": "ms" if "time" in name else "percent",
                                "labels": {"mount": "/"} if name == "disk_usage" else {}}))
    return out


def bench_config(ctx: BenchContext, inputs: str | None = None, **processor: Any) -> TocsinConfig:
    """Fresh topics for one run; with ``inputs``, that run's logs and metrics topics (already filled)."""
    run = f"bench.proc.{uuid.uuid4().hex[:8]}"
    topics = {t: f"{run}.{t}" for t in ("logs", "metrics", "health", "alerts", "control", "deadletter")}
    if inputs:
        topics.update(logs=f"{inputs}.logs", metrics=f"{inputs}.metrics")
    cfg = TocsinConfig.model_validate({
        "kafka": {"bootstrap_servers": ctx.bootstrap, "topics": {**topics, "partitions": PARTITIONS}},
        "processor": {"group_id": f"{run}.group", "start_without_commit": "earliest", "heartbeat_interval_s": 0,
                      "rules_file": os.environ.get("TOCSIN_BENCH_RULES"), **processor},
    })
    kafka_api.create_topics(cfg.kafka)
    return cfg


def fill(cfg: TocsinConfig, events: list[tuple[str, dict[str, Any]]]) -> int:
    codec = default_codec()
    producer = kafka_api.producer(cfg.kafka)
    names = {"metrics": METRIC_EVENT, "logs": LOG_EVENT}
    topics = {"metrics": cfg.kafka.topics.metrics, "logs": cfg.kafka.topics.logs}
    for source, rec in events:
        producer.send(topics[source], key=rec["service"].encode(), value=codec.encode(names[source], rec))
    producer.flush(300)
    producer.close()
    return len(events)


def prepare(ctx: BenchContext) -> None:
    """Fills the input topics once; the events are not kept, so the measured process holds only its own state
    (a million event dicts in the heap would make every garbage collection of either side slower)."""
    n = ctx.n(1_000_000, 60_000)
    cfg = bench_config(ctx)
    fill(cfg, mixed_events(n, ctx.n(10_000, 2_000)))
    ctx.state.update(n=n, inputs=cfg.kafka.topics.logs.rsplit(".", 1)[0])
    gc.collect()


def process(cfg: TocsinConfig, n: int) -> tuple[float, int, dict[str, Any]]:
    """Runs the real service until it consumed ``n`` records; (seconds, records, counters) from the first data."""
    from tocsin.processors.service import ProcessorService

    svc = ProcessorService(cfg)
    svc.start()
    try:
        while not svc.engine.partitions:  # join the group and get the assignment first
            svc.run_once(poll_timeout_ms=200)
        counters = svc.engine.counters
        while counters.consumed == 0:
            svc.run_once(poll_timeout_ms=500)
        started, first = time.perf_counter(), counters.consumed
        deadline = started + 900
        while counters.consumed < n and time.perf_counter() < deadline:
            svc.run_once(poll_timeout_ms=500)
        elapsed = time.perf_counter() - started
        result = {**counters.as_dict(), "series": svc.engine.series_count()}
    finally:
        svc.close()
    if result["consumed"] < n:
        raise RuntimeError(f"processor consumed {result['consumed']} of {n} events")
    return elapsed, result["consumed"] - first, result


def run(ctx: BenchContext) -> dict[str, float]:
    """Both sides in the same process settings: the processor's garbage-collector thresholds, set for the run."""
    n = ctx.state["n"]
    cfg = bench_config(ctx, inputs=ctx.state["inputs"])  # fresh group and output topics, same input
    topics = [cfg.kafka.topics.metrics, cfg.kafka.topics.logs]
    saved = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        base_s, base_n = consume_decode(cfg.kafka, topics, n, PARTITIONS)
        lean_s, lean_n = consume_decode(cfg.kafka, topics, n, PARTITIONS, lean=True)
        proc_s, proc_n, counters = process(cfg, n)
    finally:
        gc.set_threshold(*saved)
    base_us, lean_us, proc_us = base_s / base_n * 1e6, lean_s / lean_n * 1e6, proc_s / proc_n * 1e6
    return {
        "kafka_python.consume_decode_events_per_s": 1e6 / base_us,
        "tocsin_reader.consume_decode_events_per_s": 1e6 / lean_us,
        "tocsin.process_events_per_s": 1e6 / proc_us,
        "tocsin.process_us_per_event": proc_us,
        "tocsin.added_us_per_event": proc_us - lean_us,
        "tocsin.series": counters["series"],
        "tocsin.transitions": counters["transitions"],
        "tocsin.late_events": counters["late"],
    }


def cleanup(ctx: BenchContext) -> None:
    ctx.state.clear()
