"""Log shipping: a JSON log file into Kafka with ``tocsin ship --exit-at-eof``, beside ``kcat -P`` loading the
same file in the same run.

The shipper parses every line, builds a LogEvent, Avro-encodes it and waits
for Kafka's acknowledgement of every line before it exits; kcat sends each
line as it is (no parsing, no encoding), so it is the ceiling of a
line-per-message shipper on this machine and broker.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.harness import BenchContext
from tocsin.app.config import KafkaConfig, TopicsConfig
from tocsin.core import kafka as kafka_api

DESCRIPTION = "ship an N-line JSON log file: tocsin ship --exit-at-eof vs kcat -P"
RATIOS = {"ship tocsin/kcat (lines/s)": ("tocsin.lines_per_s", "kcat.lines_per_s")}
PARTITIONS = 3
SERVICE = "shop"
_LOGGERS = ["shop.api", "shop.checkout", "shop.db", "shop.payments", "shop.search"]
_LEVELS = ["info"] * 16 + ["debug"] * 2 + ["warning", "error"]
_ROUTES = ["/api/orders/{}", "/api/cart/{}/items", "/api/products/{}", "/api/users/{}/profile", "/api/search"]


def write_log(path: Path, n: int, seed: int = 7) -> int:
    """Writes ``n`` structlog-style JSON lines (about 230 bytes each); returns the file size."""
    rnd = random.Random(seed)
    base = 1_700_000_000.0
    with open(path, "w") as f:
        for i in range(n):
            ts = base + i / 1000.0
            secs = int(ts)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{int((ts - secs) * 1e6):06d}Z"
            route = rnd.choice(_ROUTES).format(rnd.randint(1, 99999))
            f.write(json.dumps({
                "timestamp": stamp, "level": rnd.choice(_LEVELS), "logger": rnd.choice(_LOGGERS),
                "event": f"request handled {route}", "trace_id": f"{rnd.getrandbits(64):016x}",
                "path": route, "status": 200, "duration_ms": round(rnd.random() * 300, 2), "seq": i,
            }) + "\n")
    return path.stat().st_size


def _new_topic(bootstrap: str, label: str) -> str:
    cfg = KafkaConfig(bootstrap_servers=bootstrap, topics=TopicsConfig(partitions=PARTITIONS))
    name = f"bench.ship.{label}.{uuid.uuid4().hex[:8]}"
    kafka_api.create_topics(cfg, [kafka_api.TopicSpec(name, PARTITIONS, 1, {})])
    return name


def _topic_count(bootstrap: str, topic: str) -> int:
    from kafka import TopicPartition

    consumer = kafka_api.consumer(KafkaConfig(bootstrap_servers=bootstrap), group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def prepare(ctx: BenchContext) -> None:
    if shutil.which("kcat") is None:
        raise RuntimeError("kcat is not installed (Debian package kcat; `make setup` installs it)")
    n = ctx.n(1_000_000, 50_000)
    path = ctx.workdir / "app.log"
    size = write_log(path, n)
    ctx.state.update(n=n, path=path, size=size)


def _ship(ctx: BenchContext, topic_prefix: str) -> tuple[float, dict[str, float]]:
    config = ctx.workdir / f"tocsin-{ctx.repetition}.yaml"
    config.write_text(json.dumps({"kafka": {"bootstrap_servers": ctx.bootstrap,
                                            "topics": {"logs": f"{topic_prefix}.logs",
                                                       "metrics": f"{topic_prefix}.metrics"}}}))
    env = {**os.environ, "TOCSIN_CONFIG": str(config)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "from tocsin.app.cli import main; main()", "ship", str(ctx.state["path"]),
         "--service", SERVICE, "--exit-at-eof", "--stats"],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"tocsin ship exited {proc.returncode}: {proc.stderr[-2000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, stats


def run(ctx: BenchContext) -> dict[str, float]:
    n, path, size = ctx.state["n"], ctx.state["path"], ctx.state["size"]
    prefix = f"bench.ship.{uuid.uuid4().hex[:8]}"
    kafka_api.create_topics(KafkaConfig(bootstrap_servers=ctx.bootstrap),
                            [kafka_api.TopicSpec(f"{prefix}.logs", PARTITIONS, 1, {}),
                             kafka_api.TopicSpec(f"{prefix}.metrics", PARTITIONS, 1, {})])
    wall, stats = _ship(ctx, prefix)
    shipped = _topic_count(ctx.bootstrap, f"{prefix}.logs")
    if shipped < n or stats["acked"] < n:
        raise RuntimeError(f"shipped {shipped} events (acked {stats['acked']}) of {n} lines")
    kc_topic = _new_topic(ctx.bootstrap, "kcat")
    started = time.perf_counter()
    subprocess.run(["kcat", "-P", "-b", ctx.bootstrap, "-t", kc_topic, "-k", SERVICE, "-l", str(path),
                    "-X", "acks=all", "-q"], check=True, stdout=subprocess.DEVNULL, timeout=600)
    kcat_s = time.perf_counter() - started
    inner = stats["elapsed_s"]
    return {
        "tocsin.lines_per_s": n / wall,
        "tocsin.mb_per_s": size / wall / 1e6,
        "tocsin.lines_per_s_after_startup": n / inner,
        "tocsin.startup_s": wall - inner,
        "kcat.lines_per_s": n / kcat_s,
        "kcat.mb_per_s": size / kcat_s / 1e6,
        "events_in_topic": shipped,
        "line_bytes_avg": size / n,
    }
