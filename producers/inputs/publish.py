"""Publishing for the agent's network inputs (scrape, OTLP, syslog): a call returns only once Kafka acknowledged.

``AckedPublisher.publish(records)`` sends every record (events and dead
letters alike) with ``acks=all`` and waits for all of their futures; it raises
``KafkaError`` when the broker is unreachable or did not acknowledge within
``ack_timeout_s``. The caller answers its peer only after that: OTLP replies
200 or 503, a scrape keeps its samples for the next turn, syslog over TCP stops
reading the connection. A record that timed out may still land later, so a
retried request can be stored twice; the inputs derive event ids from the
content where they can, so downstream stores keep one.

Dead letters go, redacted like the events (``redactor``), to ``tocsin.deadletter`` with
``tocsin.core.kafka.deadletter_headers``: the reason, the input as source topic (``otlp:/v1/logs``, ``syslog:udp``...),
partition and offset -1 (there is no Kafka origin) and the stage ``agent.<input>``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tocsin.core import kafka as kafka_api
from tocsin.core.config import KafkaConfig
from tocsin.core.errors import EncodeError, KafkaError
from tocsin.producers.redact import Redactor
from tocsin.schemas.codec import BATCH_OF, default_codec

log = logging.getLogger("tocsin.inputs")
BATCH_EVENTS = 500
"""Events per batch message: the shipper's batch size, far from kafka-python's 4 MiB request limit."""
MAX_BATCH_BYTES = 900_000
"""A larger batch is split: the broker's default message.max.bytes is 1,048,588."""
MAX_DEADLETTER_BYTES = 256 * 1024
"""A dead letter keeps at most this much of the bad input: enough to see what it was, far under message.max.bytes."""


@dataclass(frozen=True)
class Record:
    """One Kafka record to publish."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def content_id(*parts: Any) -> str:
    """An event id derived from what the event is, so a retried request keeps its ids."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


class InputCounters:
    """Thread-safe counters of one input (received, published, dead-lettered, refused...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] = self.values.get(name, 0) + n

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


def input_stats(counters: InputCounters, *redactors: Redactor | None) -> dict[str, int]:
    """An input's counters as the log shipper's ``stats_dict()`` has them: replacements as ``redacted_<name>``."""
    out = counters.snapshot()
    for redactor in redactors:
        if redactor is not None:
            for name, n in list(redactor.counts.items()):
                out[f"redacted_{name}"] = out.get(f"redacted_{name}", 0) + n
    return out


class AckedPublisher:
    """A producer shared by one input's threads; ``publish`` blocks until every record is acknowledged.

    >>> pub = AckedPublisher(cfg.kafka, "otlp")                     # doctest: +SKIP
    >>> pub.publish([pub.event("tocsin.logs", "LogEvent", rec)])  # doctest: +SKIP
    """

    def __init__(self, kafka: KafkaConfig, stage: str, ack_timeout_s: float = 10.0,
                 redactor: Redactor | None = None) -> None:
        self.kafka = kafka
        self.redactor = redactor  # dead letters carry the input as it came: redacted like the events
        self.stage = f"agent.{stage}"
        self.ack_timeout_s = ack_timeout_s
        self.codec = default_codec()
        self._producer: Any = None
        self._lock = threading.Lock()
        self._down_until = 0.0

    def _connect(self) -> Any:
        with self._lock:
            if self._producer is not None:
                return self._producer
            if time.monotonic() < self._down_until:  # do not hammer a broker that just refused
                raise KafkaError("Kafka was unreachable a moment ago; retrying shortly")
            wait_ms = int(self.ack_timeout_s * 1000)
            try:
                self._producer = kafka_api.producer(self.kafka, max_block_ms=wait_ms, bootstrap_timeout_ms=wait_ms,
                                                    reconnect_backoff_max_ms=2000)
            except KafkaError:
                self._down_until = time.monotonic() + 1.0
                raise
            return self._producer

    def event(self, topic: str, record_name: str, record: dict[str, Any]) -> Record:
        """An event encoded for ``topic``, keyed by its service (raises ``EncodeError`` when it does not fit)."""
        return Record(topic, str(record.get("service", "")).encode(), self.codec.encode(record_name, record))

    def dead(self, source: str, raw: bytes, reason: str, key: bytes = b"") -> Record:
        """A dead letter: the bad input (truncated) with why it was refused and where it came from."""
        headers = kafka_api.deadletter_headers(reason, source, -1, -1, self.stage)
        if self.redactor is not None:
            raw = self.redactor.raw(raw)
        if len(raw) > MAX_DEADLETTER_BYTES:
            headers.append(("truncated_from", str(len(raw)).encode()))
            raw = raw[:MAX_DEADLETTER_BYTES]
        return Record(self.kafka.topics.deadletter, key, raw, headers)

    def encode_all(self, topic: str, record_name: str, records: list[dict[str, Any]], source: str
                   ) -> tuple[list[Record], int]:
        """Kafka records for ``records``: batches (``LogBatch``/``MetricBatch``) per service where the schema has
        one, dead letters for records that do not fit their schema; returns (records, refused).

        A batch message costs one send instead of hundreds (kafka-python spends ~25 us a message); readers
        unpack either form (``Codec.decode_events``).
        """
        if record_name not in BATCH_OF:
            return self._singles(topic, record_name, records, source)
        by_key: dict[str, list[dict[str, Any]]] = {}
        for rec in records:
            by_key.setdefault(str(rec.get("service", "")), []).append(rec)
        out: list[Record] = []
        bad = 0
        for key, group in by_key.items():
            for i in range(0, len(group), BATCH_EVENTS):
                recs, refused = self._batch(topic, record_name, key.encode(), group[i:i + BATCH_EVENTS], source)
                out.extend(recs)
                bad += refused
        return out, bad

    def _batch(self, topic: str, record_name: str, key: bytes, chunk: list[dict[str, Any]], source: str
               ) -> tuple[list[Record], int]:
        if len(chunk) == 1:
            return self._singles(topic, record_name, chunk, source)
        try:
            value = self.codec.encode_batch(record_name, chunk)
        except EncodeError:  # find the record that does not fit: the others still go
            return self._singles(topic, record_name, chunk, source)
        if len(value) <= MAX_BATCH_BYTES:
            return [Record(topic, key, value)], 0
        half = len(chunk) // 2
        first, bad1 = self._batch(topic, record_name, key, chunk[:half], source)
        second, bad2 = self._batch(topic, record_name, key, chunk[half:], source)
        return first + second, bad1 + bad2

    def _singles(self, topic: str, record_name: str, records: list[dict[str, Any]], source: str
                 ) -> tuple[list[Record], int]:
        out: list[Record] = []
        bad = 0
        for rec in records:
            key = str(rec.get("service", "")).encode()
            try:
                out.append(self.event(topic, record_name, rec))
            except EncodeError as exc:
                bad += 1
                out.append(self.dead(source, repr(rec).encode("utf-8", "replace"), f"does not fit {record_name}: {exc}",
                                     key))
        return out, bad

    def publish(self, records: list[Record], timeout_s: float | None = None) -> None:
        """Sends ``records`` and returns when Kafka acknowledged all of them.

        Raises ``KafkaError`` naming the first failure (broker down, timeout, refused record).
        """
        if not records:
            return
        producer = self._connect()
        timeout = self.ack_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        try:
            futures = [producer.send(r.topic, key=r.key, value=r.value, headers=r.headers or None) for r in records]
        except Exception as exc:  # KafkaTimeoutError (buffer full / no metadata) and friends
            raise KafkaError(f"Kafka did not take the records: {type(exc).__name__}: {exc}") from exc
        for fut in futures:
            left = deadline - time.monotonic()
            try:
                fut.get(timeout=max(0.001, left))
            except Exception as exc:
                raise KafkaError(f"Kafka did not acknowledge within {timeout:g} s: {type(exc).__name__}: {exc}"
                                 ) from exc

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception as exc:
                log.warning("Closing an input's producer failed.", extra={"error": str(exc)})
