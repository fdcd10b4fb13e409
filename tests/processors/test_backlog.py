"""After a broker outage producers reconnect one by one: a backlog behind fresh events is windowed, not late.

Pure logic (the engine and ``FetchWatch`` with injected clocks); the real
broker outage is ``test_broker_outage.py``.
"""

from __future__ import annotations

from typing import Any

from tocsin.processors.alerts import FIRING, PENDING
from tocsin.processors.fetches import FetchWatch

from .helpers import T0, S, engine, metric, rules, states

LATENCY = {"name": "lat", "source": "metrics", "filter": {"name": "api_response_time"}, "aggregate": "count",
           "window": "60s", "slices": 6, "warning": 1000}
SILENT = {"name": "silent", "kind": "absence", "source": "metrics", "group_by": ["service", "host"],
          "absent_for": "5s"}


def _count(ps, t: int) -> int:
    return next(iter(ps.tables[0].values())).window.count(t)


def test_a_backlog_within_the_hold_is_windowed_and_counted_reordered_not_late():
    eng = engine(rules(LATENCY), grace_s=2)
    ps = eng.add_partition("metrics", 0, "metrics")
    eng.ingest(ps, "metrics", metric(T0 + 40 * S, 1, host="fresh"))
    eng.ingest(ps, "metrics", metric(T0 + 20 * S, 1, host="backlog"))  # 20 s behind, no hold: late
    assert eng.counters.late == 1 and eng.counters.reordered == 0
    eng.hold_backlog(30 * S)  # fetches resumed after a 30 s outage
    for t in range(15, 40):
        eng.ingest(ps, "metrics", metric(T0 + t * S, 1, host="backlog"))
    assert eng.counters.late == 1 and eng.counters.reordered == 25 - 2  # 38 and 39 are within the grace
    assert _count(ps, T0 + 40 * S) == 1 + 25
    eng.ingest(ps, "metrics", metric(T0 + 5 * S, 1, host="backlog"))  # older than the outage: late still
    assert eng.counters.late == 2
    eng.hold_backlog(0)  # the hold is over: the grace again
    eng.ingest(ps, "metrics", metric(T0 + 30 * S, 1, host="backlog"))
    assert eng.counters.late == 3 and not eng.holding


def test_no_absence_is_declared_while_backlogs_may_still_show_the_host():
    eng = engine(rules(SILENT), grace_s=2)
    ps = eng.add_partition("metrics", 0, "metrics")
    for t in range(0, 10):
        for host in ("h1", "h2", "gone"):
            eng.ingest(ps, "metrics", metric(T0 + t * S, 1, name="cpu", host=host))
    assert eng.take_transitions() == []
    eng.hold_backlog(40 * S)
    for t in range(10, 40):  # h1 reconnected first: its fresh samples move the clock 30 s on
        eng.ingest(ps, "metrics", metric(T0 + t * S, 1, name="cpu", host="h1"))
    assert eng.take_transitions() == [], "h2 and gone are silent by the clock, but their backlogs may come"
    for t in range(10, 40):  # h2's backlog
        eng.ingest(ps, "metrics", metric(T0 + t * S, 1, name="cpu", host="h2"))
    eng.hold_backlog(0)
    for t in range(40, 45):
        for host in ("h1", "h2"):
            eng.ingest(ps, "metrics", metric(T0 + t * S, 1, name="cpu", host=host))
    out = eng.take_transitions()
    assert {t.labels["host"] for t in out} == {"gone"}  # only the host that did stop
    assert states(out)[0][1] in (PENDING, FIRING) and (out[0].ts - T0) // S == 39  # the first instant judged after


def test_a_replay_takes_the_backlog_its_log_holds():
    """The live pass windowed a backlog within its hold; a replay of that log (a restart, a takeover) does too."""
    eng = engine(rules(LATENCY), grace_s=2)
    ps = eng.add_partition("metrics", 0, "metrics")
    ps.replay_until = 1_000  # replaying up to offset 1000
    eng.ingest(ps, "metrics", metric(T0 + 40 * S, 1, host="fresh"))
    eng.ingest(ps, "metrics", metric(T0 + 10 * S, 1, host="backlog"))  # 30 s behind: within the 60 s window
    assert eng.counters.late == 0 and eng.counters.reordered == 1
    eng.ingest(ps, "metrics", metric(T0 - 30 * S, 1, host="backlog"))  # beyond every window: late
    assert eng.counters.late == 1
    assert _count(ps, T0 + 40 * S) == 2


class _Fetcher:
    """Stands in for kafka-python's Fetcher: FetchWatch wraps these two callbacks on the instance."""

    def _handle_fetch_response(self, node_id: Any, *args: Any) -> None:
        pass

    def _handle_fetch_error(self, node_id: Any, *args: Any) -> None:
        pass


class _Consumer:
    def __init__(self) -> None:
        self._fetcher = _Fetcher()


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_fetchwatch_holds_as_long_as_the_gap_and_reports_how_far_back_a_backlog_reaches():
    clock = _Clock()
    consumer = _Consumer()
    watch = FetchWatch(consumer, min_hold_s=10, clock=clock)
    assert watch.installed
    consumer._fetcher._handle_fetch_response(1)
    clock.t += 1
    consumer._fetcher._handle_fetch_response(1)
    assert not watch.holding() and watch.backlog_s() == 0
    clock.t += 60  # the broker is down for a minute
    consumer._fetcher._handle_fetch_error(1)
    consumer._fetcher._handle_fetch_response(1)
    assert watch.holding() and watch.backlog_s() == 60
    clock.t += 30
    consumer._fetcher._handle_fetch_response(1)
    assert watch.holding() and watch.backlog_s() == 90  # everything since the outage began
    clock.t += 31
    assert not watch.holding() and watch.backlog_s() == 0


def test_fetchwatch_started_during_an_outage_holds_from_its_start_and_a_clean_start_does_not():
    clock = _Clock()
    down = _Consumer()
    watch = FetchWatch(down, min_hold_s=10, clock=clock)
    clock.t += 20
    down._fetcher._handle_fetch_error(1)  # no broker yet
    clock.t += 10
    down._fetcher._handle_fetch_error(1)
    clock.t += 10
    down._fetcher._handle_fetch_response(1)
    assert watch.holding() and watch.backlog_s() == 20  # since the first failed fetch
    clean = _Consumer()
    watch = FetchWatch(clean, min_hold_s=10, clock=clock)
    clock.t += 5  # joining the group takes a while, and one fetch fails just before the first answer
    clean._fetcher._handle_fetch_error(1)
    clock.t += 1
    clean._fetcher._handle_fetch_response(1)
    assert not watch.holding()
