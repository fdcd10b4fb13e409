"""Acknowledgements: which reads Kafka confirmed, so the checkpoint may move past them.

Each read that handed records to the producer becomes a ``Chunk``: the
futures of its records (one per batch with the batch appender) and the safe
offset after it. Chunks are acknowledged in order, per file:

1. the oldest chunk whose futures all succeeded moves the file's offset to
   its end (what the next checkpoint saves);
2. a failed future, or one unanswered past ``stall_s``, stops there: the
   caller rewinds the file to its acknowledged offset and re-reads (same
   event ids);
3. ``inflight_bytes`` counts the bytes read but not acknowledged over all
   files: the shipper stops reading at ``max_inflight_bytes`` (backpressure:
   the files are the buffer while the broker is down).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tocsin.core.errors import KafkaError
from tocsin.producers.kafkasend import batch_failure
from tocsin.producers.logship.reader import Tailer, safe_offset
from tocsin.producers.logship.stats import ShipStats


@dataclass
class Chunk:
    """One read handed to the producer: acknowledged when every future in it succeeded."""

    end: int
    futures: list[Any]
    nbytes: int
    records: int
    sent_at: float


class AckTracker:
    """Unacknowledged reads of every file and the bytes they hold."""

    def __init__(self, stall_s: float, stats: ShipStats) -> None:
        self.stall_s = stall_s
        self.stats = stats
        self.inflight_bytes = 0

    def add(self, t: Tailer, futures: list[Any], nbytes: int, records: int) -> bool:
        """Remembers a read; True when the file's acknowledged offset moved at once (nothing to wait for)."""
        safe = safe_offset(t)
        if not futures and not t.chunks:
            if safe != t.state.offset:
                t.state.offset = safe
                return True
            return False
        t.chunks.append(Chunk(safe, futures, nbytes, records, time.monotonic()))
        t.inflight += nbytes
        self.inflight_bytes += nbytes
        return False

    def reap(self, t: Tailer, now: float) -> tuple[bool | BaseException, bool]:
        """Pops acknowledged chunks: (progressed, or the delivery error; whether the offset moved)."""
        progressed = moved = False
        chunks = t.chunks
        while chunks:
            chunk = chunks[0]
            futures = chunk.futures
            if futures:
                pending = False
                for f in futures:
                    if not f.is_done:
                        pending = True
                        break
                    error = batch_failure(f)
                    if error is not None:
                        return error, moved
                if pending:
                    if now - chunk.sent_at > self.stall_s:
                        # kafka-python fails a batch after delivery_timeout_ms; one never answered is lost
                        # to us: send it again rather than stall.
                        return KafkaError(f"no acknowledgement after {self.stall_s:.0f} s"), moved
                    break
            chunks.popleft()
            t.inflight -= chunk.nbytes
            self.inflight_bytes -= chunk.nbytes
            self.stats.acked += chunk.records
            if chunk.end != t.state.offset:
                t.state.offset = chunk.end
                moved = True
            progressed = True
        return progressed, moved

    def rewind(self, t: Tailer) -> None:
        """Drops a file's unacknowledged reads; reading resumes at its acknowledged offset."""
        self.stats.rewinds += 1
        self.inflight_bytes -= t.inflight
        t.inflight = 0
        t.chunks.clear()
        t.read_pos = t.state.offset
        t.reset_reading()
