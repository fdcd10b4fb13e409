"""The peer: Quix Streams running the benchmark job on a pre-filled tocsin topic.

The job is the one both sides run: a 1-minute sliding count of ERROR events
per service (the Kafka key), flagging windows above a threshold. Quix reads
the same Avro batches with tocsin's codec (a custom deserializer), explodes
them into events and uses each event's own timestamp, so the two sides do the
same work from the same bytes. Quix keeps window state in RocksDB, as it does
in production.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import time
from typing import Any

from tocsin.schemas.codec import default_codec

WINDOW_MS = 60_000
THRESHOLD = 5


def run_quix(bootstrap: str, topic: str, n_events: int, idle_timeout_s: float = 5.0) -> dict[str, float]:
    """Consumes ``topic`` from the start with Quix Streams; returns events/s over the busy period."""
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer

    codec = default_codec()

    class TocsinDeserializer(Deserializer):
        def __call__(self, value: bytes, ctx: Any) -> list[dict[str, Any]]:
            return codec.decode_events(value)[1]

    seen = {"events": 0, "first": 0.0, "last": 0.0, "breaches": 0}

    def count_event(_value: Any) -> None:
        if not seen["events"]:
            seen["first"] = time.perf_counter()
        seen["events"] += 1
        seen["last"] = time.perf_counter()

    def breach(window: dict[str, Any]) -> None:
        seen["breaches"] += 1

    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=bootstrap, consumer_group=f"bench-quix-{time.time_ns()}", auto_offset_reset="earliest",
            state_dir=state_dir, loglevel=logging.WARNING, use_changelog_topics=False,
        )
        sdf = app.dataframe(app.topic(topic, value_deserializer=TocsinDeserializer(), key_deserializer="str"))
        sdf = sdf.apply(lambda events: events, expand=True)
        sdf = sdf.set_timestamp(lambda value, key, ts, headers: value["ts"] // 1000)
        sdf = sdf.update(count_event)
        sdf = sdf.filter(lambda e: e["level"] in ("ERROR", "CRITICAL"))
        sdf = sdf.sliding_window(duration_ms=WINDOW_MS).count().current()
        sdf = sdf.filter(lambda w: w["value"] > THRESHOLD).update(breach)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            app.run(timeout=idle_timeout_s, collect=False)
        finally:  # Application.run installs its own SIGINT/SIGTERM handlers: the harness must stay killable
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    if seen["events"] < n_events:
        raise RuntimeError(f"quix consumed {seen['events']} of {n_events} events")
    # From the first event consumed to the last, as the tocsin side is timed: the group join and the
    # first fetch are start-up, not throughput.
    busy = seen["last"] - seen["first"]
    return {"quix.events_per_s": seen["events"] / busy, "quix.breaches": seen["breaches"]}
