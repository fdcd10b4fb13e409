"""Kafka round trip: produce N Avro-encoded LogEvents with kafka-python, consume and decode them,
beside kcat (librdkafka, C) producing and consuming the same payloads in the same run.

The kcat figures are the ceiling a Python client is measured against; the
ratios say how much of it kafka-python plus fastavro keep, with kafka-python's
record reader and with tocsin's (``tocsin.core.kafkafetch``, what tocsin's consumers use).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

from kafka import TopicPartition

from bench.harness import BenchContext
from tocsin.app.config import KafkaConfig, TopicsConfig
from tocsin.core import kafka as kafka_api
from tocsin.core.events import LOG_EVENT, now_us
from tocsin.schemas.codec import default_codec

DESCRIPTION = "produce and consume+decode N LogEvents: kafka-python vs kcat"
RATIOS = {
    "produce tocsin/kcat": ("tocsin.produce_events_per_s", "kcat.produce_events_per_s"),
    "consume+decode kafka-python/kcat": ("kafka_python.consume_decode_events_per_s", "kcat.consume_events_per_s"),
    "consume+decode tocsin reader/kcat": ("tocsin.consume_decode_events_per_s", "kcat.consume_events_per_s"),
}
PARTITIONS = 6
KEY_DELIM = b"\t@@K@@\t"
MSG_DELIM = b"\n@@TOCSIN@@\n"


def _payloads(n: int) -> list[tuple[bytes, bytes]]:
    codec = default_codec()
    base = now_us()
    out = []
    for i in range(n):
        service = f"svc-{i % 50}"
        record = {
            "event_id": f"bench-{i}", "ts": base + i, "service": service, "host": "bench-host",
            "level": "ERROR" if i % 20 == 0 else "INFO", "logger": "shop.checkout",
            "message": f"GET /api/orders/{i % 977} completed in {i % 300} ms", "trace_id": None,
            "attrs": {"route": "/api/orders/{id}", "status": "200"},
        }
        out.append((service.encode(), codec.encode(LOG_EVENT, record)))
    return out


def _kafka_cfg(ctx: BenchContext) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=ctx.bootstrap, topics=TopicsConfig(partitions=PARTITIONS))


def _new_topic(cfg: KafkaConfig, label: str) -> str:
    name = f"bench.{label}.{uuid.uuid4().hex[:8]}"
    kafka_api.create_topics(cfg, [kafka_api.TopicSpec(name, PARTITIONS, 1, {})])
    return name


def prepare(ctx: BenchContext) -> None:
    if shutil.which("kcat") is None:
        raise RuntimeError("kcat is not installed (Debian package kcat; `make setup` installs it)")
    n = ctx.n(200_000, 20_000)
    payloads = _payloads(n)
    assert not any(MSG_DELIM in v or KEY_DELIM in v or KEY_DELIM in k for k, v in payloads)
    path = ctx.workdir / "payloads.bin"
    with open(path, "wb") as f:
        for key, value in payloads:
            f.write(key + KEY_DELIM + value + MSG_DELIM)
    ctx.state.update(n=n, payloads=payloads, path=path)


def _produce_python(cfg: KafkaConfig, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = kafka_api.producer(cfg)
    started = time.perf_counter()
    send = producer.send
    for key, value in payloads:
        send(topic, key=key, value=value)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    producer.close()
    return elapsed


def consume_decode(cfg: KafkaConfig, topics: str | list[str], n: int, partitions: int = PARTITIONS,
                   lean: bool = False) -> tuple[float, int]:
    """``(seconds, events)`` consuming and decoding ``n`` events from the start of ``topics``, timed from the
    first fetched record (as the stages are: joining and the first fetch are not throughput).

    The baseline of every consuming stage: what kafka-python plus the codec cost before any work.
    ``lean`` reads batches with tocsin's record reader (``tocsin.core.kafkafetch``) instead of kafka-python's.
    """
    codec = default_codec()
    consumer = kafka_api.consumer(cfg.model_copy(update={"lean_reader": lean}), group_id=None)
    parts = [TopicPartition(t, p) for t in ([topics] if isinstance(topics, str) else topics)
             for p in range(partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    decode = codec.decode_events
    seen = first = 0
    started = None
    deadline = time.perf_counter() + 600
    while seen < n and time.perf_counter() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for m in records:
                seen += len(decode(m.value)[1])
        if started is None and seen:
            started, first = time.perf_counter(), seen
    elapsed = time.perf_counter() - (started or 0)
    consumer.close()
    if seen < n:
        raise RuntimeError(f"consumed {seen} of {n} events")
    return elapsed, seen - first


def _kcat(args: list[str], **kw) -> float:
    started = time.perf_counter()
    subprocess.run(["kcat", *args], check=True, stdout=subprocess.DEVNULL, timeout=300, **kw)
    return time.perf_counter() - started


def run(ctx: BenchContext) -> dict[str, float]:
    cfg = _kafka_cfg(ctx)
    n, payloads, path = ctx.state["n"], ctx.state["payloads"], ctx.state["path"]
    py_topic, kc_topic = _new_topic(cfg, "py"), _new_topic(cfg, "kcat")
    produce_py = _produce_python(cfg, py_topic, payloads)
    consume_py = consume_decode(cfg, py_topic, n)
    consume_lean = consume_decode(cfg, py_topic, n, lean=True)
    produce_kc = _kcat(["-P", "-b", ctx.bootstrap, "-t", kc_topic, "-K", KEY_DELIM.decode(),
                        "-D", MSG_DELIM.decode(), "-l", str(path), "-X", "acks=all", "-q"])
    consume_kc = _kcat(["-C", "-b", ctx.bootstrap, "-t", kc_topic, "-o", "beginning", "-e", "-q",
                        "-c", str(n), "-f", "%s"])
    return {
        "tocsin.produce_events_per_s": n / produce_py,
        "kafka_python.consume_decode_events_per_s": consume_py[1] / consume_py[0],
        "tocsin.consume_decode_events_per_s": consume_lean[1] / consume_lean[0],
        "kcat.produce_events_per_s": n / produce_kc,
        "kcat.consume_events_per_s": n / consume_kc,
        "payload_bytes_avg": sum(len(v) for _, v in payloads) / n,
    }
