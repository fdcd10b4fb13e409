"""What the processor publishes (alert transitions, dead letters) until the broker acknowledged each record.

kafka-python's ``KafkaProducer.flush()`` returns normally for batches that
failed (their delivery timeout expired), so a flush says nothing about
delivery; each record's future does. The outbox keeps every record with its
future and hands out input positions only once everything those positions
produced is acknowledged:

1. dead letters are sent at once; transitions wait in ``queue`` while a
   checkpoint is in flight, so a transition is never on the alerts topic
   ahead of an earlier one of the same fingerprint that failed;
2. ``pump()`` seals a checkpoint: the queued transitions are sent, and the
   checkpoint holds their records, the dead letters sent since the last one
   and the input positions of that moment;
3. when every future of the checkpoint is done: records that failed are sent
   again (in order) and the checkpoint stays; when all succeeded, its
   positions are returned, and only those may be committed.

A crash before step 3 loses nothing: the input is replayed from the last
commit and recovery recomputes the transitions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Positions = dict[tuple[str, int], tuple[int, int]]
"""(topic, partition) -> (next offset, Kafka timestamp of the last record processed)."""


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    future: Any = None


@dataclass
class Checkpoint:
    positions: Positions
    records: list[Record] = field(default_factory=list)


class Outbox:
    """Records on their way to Kafka and the input positions they allow to commit (see the module docstring)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.queue: list[Record] = []  # transitions not sent yet (a checkpoint is in flight)
        self.open: list[Record] = []  # dead letters sent since the last checkpoint was sealed
        self.inflight: Checkpoint | None = None
        self.failures = 0  # records whose delivery failed and were sent again
        self._lock = threading.Lock()  # the revocation listener flushes from kafka-python's IO thread

    def _send(self, r: Record) -> Record:
        """Hands ``r`` to the producer; a send that raises (no metadata or buffer space in time) leaves
        ``future`` None, which counts as failed: sent again by the next ``pump()``, never skipped."""
        try:
            r.future = self.producer.send(r.topic, key=r.key, value=r.value, headers=r.headers)
        except Exception as exc:  # the record stays here; the loop goes on
            r.future = None
            log.warning("handing a record to the producer failed; it is sent again", extra={"error": str(exc)})
        return r

    def send_ordered(self, topic: str, key: bytes, value: bytes) -> None:
        """A transition: sent with the next checkpoint, after everything before it is acknowledged."""
        with self._lock:
            self.queue.append(Record(topic, key, value))

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        """A dead letter (or a patterns record; None is a tombstone): sent now (order does not matter),
        confirmed with the next checkpoint."""
        with self._lock:
            self.open.append(self._send(Record(topic, key, value, headers)))

    @property
    def pending(self) -> int:
        """Records not acknowledged yet (queued, open or in flight)."""
        return len(self.queue) + len(self.open) + (len(self.inflight.records) if self.inflight else 0)

    def pump(self, positions: Callable[[], Positions]) -> Positions | None:
        """Steps 2 and 3: the positions that may be committed now, or None (something is unacknowledged)."""
        with self._lock:
            if self.inflight is None:
                if not self.queue and not self.open:
                    return positions()  # nothing was produced since the last checkpoint
                self.inflight = Checkpoint(positions(), self.open + [self._send(r) for r in self.queue])
                self.open, self.queue = [], []
            cp = self.inflight
            if not all(r.future is None or r.future.is_done for r in cp.records):
                return None
            failed = [r for r in cp.records if r.future is None or r.future.failed()]
            if failed:
                self.failures += len(failed)
                log.warning("publishing failed; sending again, committing nothing past it",
                            extra={"records": len(failed),
                                   "error": str(failed[0].future.exception if failed[0].future else "send raised")})
                for r in failed:
                    self._send(r)
                return None
            self.inflight = None
            return cp.positions

    def send_all(self) -> None:
        """Sends the queued transitions now (a revocation: the next owner reads the alerts topic next)."""
        with self._lock:
            if self.queue:
                sent = [self._send(r) for r in self.queue]
                self.queue = []
                if self.inflight is not None:
                    self.inflight.records.extend(sent)
                else:
                    self.open.extend(sent)
