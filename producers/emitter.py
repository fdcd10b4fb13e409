"""A bounded, non-blocking queue of events to Kafka, for code that must never wait on the network.

Application code (the logging handler, request middleware, query timers)
calls ``emit(record)``: it puts the record on a bounded queue and returns at
once; when the queue is full the record is dropped and ``dropped`` counts it.
A background thread encodes and produces what is queued; while Kafka is
unreachable it retries the connection with backoff and the queue fills.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

from tocsin.core.config import KafkaConfig
from tocsin.core.errors import EncodeError, KafkaError
from tocsin.schemas.codec import default_codec

log = logging.getLogger("tocsin.emitter")
_BATCH = 500
_BACKOFF_MAX_S = 30.0


class EventQueue:
    """Encodes and produces records of one name to one topic from a background thread.

    >>> q = EventQueue(cfg.kafka, cfg.kafka.topics.metrics, "MetricEvent")  # doctest: +SKIP
    >>> q.emit({...})                       # never blocks; False when dropped  # doctest: +SKIP
    >>> q.close()                           # flushes what is queued           # doctest: +SKIP
    """

    def __init__(self, kafka: KafkaConfig, topic: str, record_name: str, maxsize: int = 10_000,
                 key_field: str = "service") -> None:
        self.kafka = kafka
        self.topic = topic
        self.record_name = record_name
        self.key_field = key_field
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize)
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._producer: Any = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"tocsin-emit-{record_name}", daemon=True)
        self._thread.start()

    def emit(self, record: dict[str, Any]) -> bool:
        """Queues a record; returns False (and counts a drop) when the queue is full or closed."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _connect(self) -> bool:
        from tocsin.core import kafka as kafka_api

        try:
            self._producer = kafka_api.producer(self.kafka, max_block_ms=5000, bootstrap_timeout_ms=5000,
                                                reconnect_backoff_max_ms=2000)
            return True
        except KafkaError as exc:
            log.warning("Kafka unreachable; events wait in the queue.", extra={"error": str(exc)})
            return False

    def _run(self) -> None:
        codec = default_codec()
        backoff = 0.5
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    item = self._queue.get_nowait()
                    if item is None:
                        self._queue.put_nowait(None)  # keep the sentinel for the outer loop
                        break
                    batch.append(item)
            while self._producer is None and not self._connect():
                if self._closed:
                    self.failed += len(batch)
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            backoff = 0.5
            for record in batch:
                try:
                    value = codec.encode(self.record_name, record)
                except EncodeError as exc:
                    self.failed += 1
                    log.warning("Event does not fit its schema; dropped.", extra={"error": str(exc)})
                    continue
                key = str(record.get(self.key_field, "")).encode()
                try:
                    self._producer.send(self.topic, key=key, value=value)
                    self.sent += 1
                except Exception as exc:  # kafka-python raises several types; never kill the thread
                    self.failed += 1
                    log.warning("Producing an event failed.", extra={"error": f"{type(exc).__name__}: {exc}"})

    def flush(self, timeout_s: float = 10.0) -> None:
        """Waits until the queue is empty and the producer delivered (best effort, bounded)."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.flush(max(0.1, deadline - time.monotonic()))

    def close(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1)
        self._thread.join(timeout_s)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=timeout_s)
