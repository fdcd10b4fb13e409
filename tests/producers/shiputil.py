"""Helpers of the log shipper tests: configs, numbered lines, reading the logs topic back."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.kafkautil import consume_all, wait_for
from tocsin.app.config import TocsinConfig
from tocsin.producers.logship import LogShipper
from tocsin.schemas.codec import default_codec

FAST_SHIP = {"poll_interval_s": 0.05, "scan_interval_s": 0.2, "checkpoint_interval_s": 0.2, "rotate_wait_s": 0.5,
             "multiline_flush_s": 0.2, "backoff_initial_s": 0.2, "backoff_max_s": 2.0}


def numbered(i: int, pad: int = 0) -> str:
    """One JSON log line carrying its number (``seq``)."""
    return json.dumps({"timestamp": "2024-03-01T12:00:00Z", "level": "info", "logger": "t",
                       "message": f"line {i}" + "x" * pad, "seq": i}) + "\n"


@contextlib.contextmanager
def running(shipper: LogShipper) -> Iterator[threading.Thread]:
    """The shipper started and run on a thread for the block; closed and joined after it."""
    thread = threading.Thread(target=lambda: (shipper.start(), shipper.run()), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        shipper.close()
        thread.join(10)


def wait_acked(shipper: LogShipper, n: int, timeout_s: float = 30.0) -> None:
    wait_for(lambda: shipper.stats.acked >= n, timeout_s, f"{n} lines acknowledged", every_s=0.05)


def write_config(tmp_path: Path, cfg: TocsinConfig, **logship: Any) -> Path:
    """A YAML (JSON) config file for a shipper subprocess with this test's topics."""
    data = {
        "kafka": {"bootstrap_servers": cfg.kafka.bootstrap_servers,
                  "topics": {"logs": cfg.kafka.topics.logs, "metrics": cfg.kafka.topics.metrics}},
        "agents": {"logship": {**FAST_SHIP, **logship}},
    }
    path = tmp_path / "tocsin.yaml"
    path.write_text(json.dumps(data))
    return path


def shipped(cfg: TocsinConfig, expect: int | None = None, timeout_s: float = 60.0,
            topic: str | None = None) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, decoded event) of everything in the logs topic."""
    codec = default_codec()
    records = consume(cfg, topic or cfg.kafka.topics.logs, expect=expect, timeout_s=timeout_s)
    return [(r.key, codec.decode(r.value)[1]) for r in records]


def consume(cfg: TocsinConfig, topic: str, expect: int | None = None, timeout_s: float = 60.0) -> list[Any]:
    """``consume_all``, waiting first until the consumer's metadata knows the (just created) topic."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consume_all(cfg.kafka, topic, expect=expect, timeout_s=max(1.0, deadline - time.monotonic()))
        except ValueError:  # "No partitions are currently assigned": metadata not propagated yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def seq_counts(events: list[tuple[bytes, dict[str, Any]]]) -> collections.Counter[int]:
    return collections.Counter(int(e["attrs"]["seq"]) for _, e in events if "seq" in e["attrs"])


def env_for(cfg: TocsinConfig) -> dict[str, str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers, "PYTHONUNBUFFERED": "1"}
    env.pop("TOCSIN_CONFIG", None)
    return env
