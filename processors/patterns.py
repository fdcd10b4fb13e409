"""The seen-pattern memory of ``kind: new_pattern`` rules: per service, pattern id -> last time seen.

Bounded per service (``max_per_service``): when full, the pattern seen
longest ago is forgotten and counted in ``evicted``, so a service that logs
a million distinct messages costs a fixed amount of memory and, at worst,
re-reports a very old pattern as new. ``snapshot()``/``load()`` give and
take ``(service, pattern_id, last_seen_us)`` rows, the form a store or a
compacted topic keeps across restarts; ``changes`` collects the rows to
write (a new pattern at once, a known one when its written sighting is a
twentieth of ``unseen_us`` old, so a busy pattern costs a few writes a
week; ``None`` for a forgotten one: a tombstone).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class PatternMemory:
    """Which error patterns each service logged, and when last (event time, microseconds)."""

    def __init__(self, unseen_us: int, max_per_service: int) -> None:
        self.unseen_us = unseen_us
        self.max_per_service = max_per_service
        self.seen: dict[str, dict[str, int]] = {}
        """service -> {pattern id: last seen}, oldest first (a dict keeps insertion order: an LRU)."""
        self.evicted = 0
        self.refresh_us = max(1, unseen_us // 20)
        self.written: dict[tuple[str, str], int] = {}
        """(service, pattern id) -> the sighting last handed out in ``changes``."""
        self.changes: list[tuple[str, str, int | None]] = []
        self.restored: set[str] = set()
        """Services whose patterns were loaded at start: they need no new learning period."""
        self.examples: dict[tuple[str, str], list] = {}
        """(service, pattern id) -> [pattern, first line, occurrences] of the patterns that fired, for the alert."""

    def observe(self, service: str, pid: str, ts: int) -> bool:
        """Records one occurrence; True when the pattern was not seen in the service within ``unseen_us``."""
        known = self.seen.get(service)
        if known is None:
            known = self.seen[service] = {}
        last = known.pop(pid, None)
        if last is not None and ts < last:
            known[pid] = last  # an older (late or replayed) occurrence does not move it back
            return False
        known[pid] = ts
        written = self.written.get((service, pid))
        if written is None or ts - written >= self.refresh_us:
            self.written[(service, pid)] = ts
            self.changes.append((service, pid, ts))
        if last is None and len(known) > self.max_per_service:
            oldest = next(iter(known))  # the least recently seen
            del known[oldest]
            self.examples.pop((service, oldest), None)
            self.written.pop((service, oldest), None)
            self.changes.append((service, oldest, None))
            self.evicted += 1
        return last is None or ts - last > self.unseen_us

    def snapshot(self) -> Iterator[tuple[str, str, int]]:
        for service, known in self.seen.items():
            for pid, ts in known.items():
                yield service, pid, ts

    def load(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Adopts rows read back (from the patterns topic); they are not written again."""
        for service, pid, ts in sorted(rows, key=lambda r: r[2]):
            self.observe(service, pid, ts)
            self.restored.add(service)
        self.changes = [c for c in self.changes if c[2] is None]  # only evictions of the load need writing

    def take_changes(self) -> list[tuple[str, str, int | None]]:
        out, self.changes = self.changes, []
        return out

    def size(self) -> int:
        return sum(len(k) for k in self.seen.values())
