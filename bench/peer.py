"""Tocsin's processor beside the peer a user would pick instead (Quix Streams), on the same topic.

The job, on both sides: a 1-minute sliding count of ERROR log events per
service with a threshold (5), over a pre-filled logs topic of single LogEvents
(what the shipper sends), 50 services, 5 % errors, event times spread over ten
minutes. Both read the same bytes with tocsin's codec; tocsin runs its real
``ProcessorService`` with a one-rule file, Quix its ``sliding_window().count()``
with RocksDB state. Events/s is counted from the first consumed event to the last.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import yaml

from bench.harness import BenchContext
from bench.processor import PARTITIONS, process
from bench.quix_job import THRESHOLD, WINDOW_MS, run_quix
from tocsin.app.config import TocsinConfig
from tocsin.core import kafka as kafka_api
from tocsin.core.events import LOG_EVENT, now_us
from tocsin.schemas.codec import default_codec

DESCRIPTION = "1-minute sliding error count per service with a threshold: tocsin processor vs Quix Streams"
RATIOS = {"tocsin/quix": ("tocsin.events_per_s", "quix.events_per_s")}
SERVICES = 50


def _events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = now_us() - 600_000_000
    step = 600_000_000 // n
    return [{"event_id": f"peer-{i}", "ts": start + i * step, "service": f"svc-{rng.randrange(SERVICES)}",
             "host": "h", "level": "ERROR" if rng.random() < 0.05 else "INFO", "logger": "shop",
             "message": "request handled", "trace_id": None, "attrs": {}} for i in range(n)]


def prepare(ctx: BenchContext) -> None:
    ctx.state["events"] = _events(ctx.n(300_000, 20_000))
    rules = ctx.workdir / "peer-rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{
        "name": "errors_per_service", "source": "logs", "filter": {"level": ["ERROR"]}, "aggregate": "count",
        "window": f"{WINDOW_MS // 1000}s", "group_by": ["service"], "warning": THRESHOLD, "critical": THRESHOLD * 4,
        "for": "0s", "resolve_after": "0s"}]}))
    ctx.state["rules"] = rules


def run(ctx: BenchContext) -> dict[str, float]:
    events = ctx.state["events"]
    run_id = f"bench.peer.{uuid.uuid4().hex[:8]}"
    topics = {t: f"{run_id}.{t}" for t in ("logs", "metrics", "health", "alerts", "control", "deadletter")}
    cfg = TocsinConfig.model_validate({
        "kafka": {"bootstrap_servers": ctx.bootstrap, "topics": {**topics, "partitions": PARTITIONS}},
        "processor": {"group_id": f"{run_id}.group", "start_without_commit": "earliest", "heartbeat_interval_s": 0,
                      "rules_file": str(ctx.state["rules"])},
    })
    kafka_api.create_topics(cfg.kafka)
    codec = default_codec()
    producer = kafka_api.producer(cfg.kafka)
    for e in events:
        producer.send(cfg.kafka.topics.logs, key=e["service"].encode(), value=codec.encode(LOG_EVENT, e))
    producer.flush(300)
    producer.close()
    n = len(events)
    seconds, counted, counters = process(cfg, n)
    quix = run_quix(ctx.bootstrap, cfg.kafka.topics.logs, n)
    return {"tocsin.events_per_s": counted / seconds, "quix.events_per_s": quix["quix.events_per_s"],
            "tocsin.transitions": counters["transitions"], "quix.breaches": quix["quix.breaches"]}
