"""Evidence that the processor reads the broker: when its consumer's fetches last succeeded, per broker.

The processing-time tick moves an idle partition's event-time clock to the
wall clock, which is only right when the partition is known to be caught up.
A consumer's ``poll()`` returns nothing both when a partition is idle and when
the broker is gone, and ``highwater()`` keeps its last value while nothing is
fetched, so neither tells. ``FetchWatch`` hooks the consumer's fetcher (the
callbacks of kafka-python 3.0's ``Fetcher``, on this one instance) and notes
every fetch response and every failed fetch, per broker node.

After a gap in the responses (the broker was down, or the loop could not
poll), ``holding()`` stays true for as long as the gap lasted (at least
``min_hold_s``): producers that buffered through the outage deliver their
backlog in that time (their reconnect backoff grows with the outage), and
event time follows those events rather than the wall clock. Producers
reconnect one by one, so one's backlog lands behind another's fresh events
on the same partition: ``backlog_s()`` is how far back such events can
reach, and the engine accepts them that far while the hold lasts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

GAP_S = 3.0
"""Fetch responses further apart than this are an outage (a healthy consumer sees one per fetch_max_wait_ms)."""


class FetchWatch:
    """Fetch outcomes of one kafka-python consumer; ``installed`` is false where kafka-python's internals differ."""

    def __init__(self, consumer: Any, *, min_hold_s: float, gap_s: float = GAP_S,
                 clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.gap_s = gap_s
        self.min_hold_s = min_hold_s
        self._lock = threading.Lock()
        self.ok_at: dict[Any, float] = {}  # node id -> when a fetch response from it last arrived
        self.last_ok = -1.0
        self.last_error = -1.0
        self.hold_until = -1.0
        self.outage_from = -1.0
        self.first_error = -1.0
        self.outages = 0
        self.installed = self._install(consumer)

    def _install(self, consumer: Any) -> bool:
        fetcher = getattr(consumer, "_fetcher", None)
        on_response = getattr(fetcher, "_handle_fetch_response", None)
        on_error = getattr(fetcher, "_handle_fetch_error", None)
        if on_response is None or on_error is None:
            log.warning("kafka-python's fetcher differs from 3.0's: fetch outcomes are not watched, "
                        "the idle tick trusts the last high-water mark")
            return False

        def response(node_id: Any, *args: Any, **kwargs: Any) -> Any:
            self.fetched(node_id)
            return on_response(node_id, *args, **kwargs)

        def error(node_id: Any, *args: Any, **kwargs: Any) -> Any:
            self.failed(node_id)
            return on_error(node_id, *args, **kwargs)

        fetcher._handle_fetch_response = response  # looked up per send: this instance's fetches go through it
        fetcher._handle_fetch_error = error
        return True

    def fetched(self, node_id: Any) -> None:
        """A fetch response arrived from ``node_id`` (IO thread)."""
        now = self.clock()
        with self._lock:
            # No response yet but failed fetches: started during an outage, which began no later than the first.
            last = self.last_ok if self.last_ok >= 0 else (self.first_error if self.first_error >= 0 else now)
            if now - last > self.gap_s:
                gap = now - last
                if not self.holding():
                    self.outage_from = last
                self.hold_until = max(self.hold_until, now + max(self.min_hold_s, gap))
                self.outages += 1
                log.info("fetches resumed; idle clocks held", extra={"gap_s": round(gap, 1),
                                                                      "hold_s": round(max(self.min_hold_s, gap), 1)})
            self.last_ok = now
            self.ok_at[node_id] = now

    def failed(self, node_id: Any) -> None:
        """A fetch to ``node_id`` failed (IO thread)."""
        now = self.clock()
        with self._lock:
            self.last_error = now
            if self.last_ok < 0 and self.first_error < 0:
                self.first_error = now

    def ok_since(self, since: float, node_id: Any = None) -> bool:
        """A fetch response arrived after ``since`` (from ``node_id`` when given and known, else from any node)."""
        if not self.installed:
            return True
        at = self.ok_at.get(node_id, self.last_ok) if node_id is not None else self.last_ok
        return at > since

    def holding(self) -> bool:
        """True while idle clocks wait for producers' backlogs after an outage."""
        return self.clock() < self.hold_until

    def backlog_s(self) -> float:
        """While holding: seconds since the outage began (how old a backlog delivered now can be), else 0."""
        now = self.clock()
        return now - self.outage_from if now < self.hold_until else 0.0

    def fetching(self) -> bool:
        """Fetches succeed: a response within ``gap_s`` (or nothing watched or fetched yet to judge by)."""
        if not self.installed or self.last_ok < 0:
            return self.last_error < 0
        return self.clock() - self.last_ok <= self.gap_s
