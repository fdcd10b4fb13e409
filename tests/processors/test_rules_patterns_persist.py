"""new_pattern's seen set survives a SIGKILL: the compacted patterns topic is read at start.

A pattern logged only during the first process's learning period, long
before the replay span, is not new to a second process started after a
SIGKILL (without the topic it would be: it is not in the replayed logs),
while a pattern never seen still fires.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.kafkautil import consume_all, wait_for
from tocsin.core.events import now_us
from tocsin.processors.engine import Engine
from tocsin.processors.patterns import PatternMemory
from tocsin.schemas.codec import default_codec

from .helpers import T0, S, log, rules
from .kafkaproc import ProcessorProcess, alert_events, kafka_producer, processor_config, write_config

NEW = {"name": "new_error", "kind": "new_pattern", "source": "logs", "filter": {"level": ["ERROR"]},
       "window": "5s", "slices": 5, "unseen_for": "1h", "learn_for": "3s"}


def test_memory_hands_out_new_sightings_refreshes_and_tombstones():
    m = PatternMemory(unseen_us=40 * S, max_per_service=2)
    assert m.observe("shop", "a", T0) and m.take_changes() == [("shop", "a", T0)]
    m.observe("shop", "a", T0 + S)  # under a twentieth of unseen_for since the written sighting: no write
    assert m.take_changes() == []
    m.observe("shop", "a", T0 + 2 * S)
    assert m.take_changes() == [("shop", "a", T0 + 2 * S)]
    m.observe("shop", "b", T0 + 3 * S)
    m.observe("shop", "c", T0 + 4 * S)  # over the limit: a is forgotten, and its row is deleted
    assert m.take_changes() == [("shop", "b", T0 + 3 * S), ("shop", "c", T0 + 4 * S), ("shop", "a", None)]
    fresh = PatternMemory(unseen_us=40 * S, max_per_service=2)
    fresh.load([("shop", "b", T0 + 3 * S), ("shop", "c", T0 + 4 * S)])
    assert fresh.take_changes() == [] and fresh.restored == {"shop"}
    assert not fresh.observe("shop", "c", T0 + 5 * S)


def test_a_restored_service_needs_no_learning_period():
    eng = Engine(rules(NEW), eval_interval_us=S, grace_us=S)
    assert eng.load_patterns([("new_error", "shop", "0123", T0), ("gone_rule", "shop", "x", T0)]) == 1
    ps = eng.add_partition("logs", 0, "logs")
    for t in range(5):
        eng.ingest(ps, "logs", log(T0 + 100 * S + t * S, message="disk quota exceeded for tenant 7"))
    eng.ingest(ps, "logs", log(T0 + 110 * S, level="INFO"))
    out = eng.take_transitions()  # inside what would be the learning period: shop is known
    assert [t.state for t in out] == ["firing", "resolved"]  # (it stopped recurring for a window)
    fired = out[0]
    assert fired.annotations["pattern"].startswith("disk quota exceeded")
    assert [c[:3] for c in eng.take_pattern_changes()] == [("new_error", "shop", fired.labels["pattern_id"])]


def _produce(cfg, stop: threading.Event, messages: list[str]) -> None:
    """One ERROR line of each current message 5 times a second, stamped now, until ``stop``."""
    codec, producer, i = default_codec(), kafka_producer(cfg), 0
    try:
        while not stop.is_set():
            for msg in list(messages):
                rec = {"event_id": f"p{i}-{msg}", "ts": now_us(), "service": "shop", "host": "h1",
                       "level": "ERROR", "logger": "app", "message": msg, "trace_id": None, "attrs": {}}
                producer.send(cfg.kafka.topics.logs, key=b"shop", value=codec.encode("LogEvent", rec))
                i += 1
            producer.flush(10)
            stop.wait(0.2)
    finally:
        producer.close(timeout=10)


def _fired(cfg) -> set[str]:
    return {e["annotations"].get("pattern", "") for e in alert_events(cfg, idle_s=0.5) if e["state"] == "firing"}


def _stored(cfg) -> set[str]:
    return {json.loads(m.value)["pattern_id"] for m in consume_all(cfg.kafka, cfg.kafka.topics.patterns, idle_s=0.5)
            if m.value is not None}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_seen_patterns_survive_a_sigkill(kafka_bootstrap, clickhouse_url, tmp_path):
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, partitions=1, rules=[NEW])
    config_file = write_config(cfg, tmp_path / "tocsin.yaml")
    first = ProcessorProcess(config_file, tmp_path / "first.log").start()
    messages = ["connection reset by peer 10.0.0.7"]  # A: only while the first process learns
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(cfg, stop, messages), daemon=True)
    producer.start()
    second = None
    try:
        wait_for(lambda: _stored(cfg), 90, "pattern A written to the patterns topic")
        messages[:] = []
        a_ended = time.monotonic()
        wait_for(lambda: time.monotonic() - a_ended > 6, 10, "a pause")  # past learn_for (3 s) of the first
        messages[:] = ["payment gateway returned 502"]  # B: new, after learning
        wait_for(lambda: any(p.startswith("payment gateway") for p in _fired(cfg)), 90, "B firing in the first")
        assert not any(p.startswith("connection reset") for p in _fired(cfg))
        # A must be older than the replay span (window + bucket + grace + margin, ~10 s) when the second starts.
        wait_for(lambda: time.monotonic() - a_ended > 16 and len(_stored(cfg)) >= 2, 90, "A out of the replay span")
        first.kill()
        second = ProcessorProcess(config_file, tmp_path / "second.log").start()
        messages[:] = ["payment gateway returned 502", "connection reset by peer 10.0.0.9"]  # A again
        time_a = time.monotonic()
        wait_for(lambda: time.monotonic() - time_a > 2, 10, "A logged again for a while")
        messages.append("certificate expired for api.example.com")  # C: never seen
        wait_for(lambda: any(p.startswith("certificate expired") for p in _fired(cfg)), 120, "C firing in the second")
        fired = sorted(_fired(cfg))
        assert not any(p.startswith("connection reset") for p in fired), fired
        assert "error patterns restored" in (tmp_path / "second.log").read_text(errors="replace")
    finally:
        stop.set()
        producer.join(timeout=30)
        first.kill() if first.alive else None
        if second is not None:
            second.stop()
