"""The processor's pure core: events in, alert transitions out, no Kafka (so it is unit-testable).

Time model (event time everywhere, processing time only to move idle clocks):

* Each input partition has a clock: the largest event timestamp seen on it.
  Series are keyed by service and a service lives in one partition, so a
  partition's clock orders everything its series see, whatever other
  partitions do or however polls interleave: replaying a partition gives
  the same evaluations.
* Rules are evaluated at fixed instants of event time, the multiples of
  ``eval_interval_s`` (Prometheus' evaluation interval). Instant ``g`` is
  evaluated when the first event later than ``g`` arrives on the
  partition, so the window at ``g`` holds every in-order event up to ``g``.
  Only series that got a sample that could breach, whose alert's timer
  (``for``, ``resolve_after``) is due, or whose window slid (a bucket
  boundary) are evaluated; absence groups from their earliest possible
  deadline on.
* An event older than ``clock - grace`` is late: counted, not windowed.
  After an outage of the broker the bound widens (``hold_backlog``) for as
  long as producers may still deliver what they buffered: one producer's
  backlog lands behind another's fresh events, and is windowed, not lost.
  Absences are not declared meanwhile (the backlog may show the host).
  Timestamps more than ``max_future_s`` ahead of the wall clock are capped
  to it (or dead-lettered, by the caller, with ``future_policy``).
* A partition with nothing to read (caught up, no event for ``grace``)
  has its clock moved by the processing-time ``tick`` to ``wall - grace``:
  that is how a silent service raises its absence alert and a cleared
  condition resolves without new events. A partition that is replaying or
  has a backlog is never moved by the wall clock.
* Transition times are evaluation instants, alert ids the instant the
  condition started: both event time, so a replay reproduces them and
  their event ids exactly.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tocsin.core.events import iso, now_us
from tocsin.core.patterns import MESSAGE_MAX_CHARS, normalize_message, pattern_id
from tocsin.core.validation import event_reason
from tocsin.processors.ack import ack_from_control
from tocsin.processors.alerts import RESOLVED, AlertTracker, Transition, fingerprint_of
from tocsin.processors.patterns import PatternMemory
from tocsin.processors.rules import CRITICAL, ERROR_LEVELS, KEEP, NONE, WARNING, Rule, RuleSet
from tocsin.processors.windows import SlidingWindow

LATENCY_METRIC = "api_response_time"
HEARTBEAT_METRIC = "tocsin_heartbeat"  # tocsin.core.heartbeat.HEARTBEAT_METRIC
STATS_BUCKET_US = 60_000_000
STATS_BUCKETS = 60
MAX_SERVICES = 5_000
"""Services with last-hour statistics kept (~5 KB each): least recently updated go first beyond it."""
MAX_HEALTH = 50_000
"""Latest-health entries (service, check) kept; least recently updated go first beyond it."""
"""Per-service summary for the HTTP API: one hour in one-minute buckets."""
RETIRED = 1 << 62
"""``Series.evaluated_at`` of a series whose rule a reload removed: never evaluated again."""
RELOAD_ACTOR = "reload"
"""``resolved_by`` of an alert whose rule a reload removed (or regrouped)."""


@dataclass
class Counters:
    """Monotonic counters the service exposes (HTTP /metrics, heartbeats)."""

    consumed: int = 0
    processed: int = 0
    late: int = 0
    reordered: int = 0  # older than the grace, windowed: a backlog delivered after a broker outage
    future_capped: int = 0
    deadlettered: int = 0
    decode_errors: int = 0
    invalid: int = 0
    transitions: int = 0
    duplicates_suppressed: int = 0
    evaluations: int = 0
    control_applied: int = 0
    evicted: int = 0  # per-service statistics and latest-health entries forgotten (idle, or over the cap)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Series:
    """One group of one rule in one partition: its window (or last-seen time) and its alert tracker."""

    __slots__ = ("dirty", "evaluated_at", "history", "key", "last_seen", "rule", "timer_at", "tracker", "window")

    def __init__(self, rule: Rule, key: tuple[str, ...]) -> None:
        self.rule = rule
        self.key = key
        self.window: SlidingWindow | None = None if rule.is_absence else rule.new_window(key)
        self.history: SlidingWindow | None = rule.new_history(key)
        """spike rules: one bucket per past window, the baseline's source."""
        self.tracker: AlertTracker | None = None
        self.last_seen = -1
        self.dirty = False
        self.evaluated_at = -1
        self.timer_at = -1
        """The deadline this series is queued for in its partition's timers (-1: none)."""


class PartitionState:
    """Clock, series and evaluation bookkeeping of one input partition."""

    def __init__(self, topic: str, partition: int, source: str, rules: RuleSet, eval_us: int) -> None:
        self.topic, self.partition, self.source = topic, partition, source
        self.rules = rules.by_source.get(source, [])
        self.tables: dict[int, dict[tuple[str, ...], Series]] = {r.index: {} for r in self.rules}
        self.clock = -1
        self.next_eval = -1
        self.eval_us = eval_us
        self.dirty: list[Series] = []
        """Series that got a possibly breaching sample since the last instant (the same list, always)."""
        self.feeds: list[Callable[[dict[str, Any], int], None]] = []
        self.feeds_by_metric: dict[str, list[Callable[[dict[str, Any], int], None]]] = {}
        self.feeds_any_metric: list[Callable[[dict[str, Any], int], None]] = []
        self.active: set[Series] = set()
        """Series evaluated at every instant: absence groups with an open alert (their data may return)."""
        self.timers: list[tuple[int, int, Series]] = []
        """Heap of (deadline, seq, series): trackers whose ``for`` or ``resolve_after`` runs."""
        self.last_bucket: dict[int, int] = {}
        self.absence_next: dict[int, float] = {}
        """Per absence rule: the earliest instant any of its groups can go silent."""
        self.seen: dict[int, dict[tuple[str, ...], int]] = {r.index: {} for r in self.rules if r.is_absence}
        """Per absence rule: group -> last event time. A plain map on the hot path; a Series (and a
        tracker) exists only for groups that went silent or have an alert."""
        self.complete_from: float = -math.inf
        """Event time from which windows are whole; set to the first replayed event after a mid-log seek."""
        self.awaiting_first_event = False
        self.replay_until = -1
        """Offset the previous owner had committed: before it, transitions are recomputed, not new."""
        self.last_event_wall = 0
        self.watched_from = math.inf
        """Event time of the first event seen: periods before it are unknown, not empty (spike baselines)."""
        self.rule_from: dict[int, int] = {}
        """Per rule added or changed by a reload: the partition clock then (its windows are whole a window later)."""

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition

    def series_count(self) -> int:
        return sum(len(t) for t in self.tables.values()) + sum(len(m) for m in self.seen.values())


class ServiceStats:
    """Last-hour error count and latency sketch of one service (cheap answers for the HTTP API)."""

    __slots__ = ("errors", "latency", "seen")

    def __init__(self) -> None:
        self.errors = SlidingWindow(STATS_BUCKET_US, STATS_BUCKETS, extrema=False)
        self.latency = SlidingWindow(STATS_BUCKET_US, STATS_BUCKETS, quantiles=True, extrema=False)
        self.seen = -1  # event time of the newest sample (idle eviction)


class Engine:
    """Windows, rules and alert trackers of the partitions this process owns.

    >>> from tocsin.processors.patterns import PatternMemory
from tocsin.processors.rules import parse_rules
    >>> rules = parse_rules([{"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"},
    ...     "aggregate": "latest", "window": "1m", "warning": 80}])
    >>> eng = Engine(rules, eval_interval_us=1_000_000, grace_us=5_000_000)
    >>> ps = eng.add_partition("metrics", 0, "metrics")
    >>> for s in range(3):
    ...     eng.ingest(ps, "metrics", {"ts": s * 1_000_000 + 1, "service": "shop", "host": "h", "name": "cpu_usage",
    ...                                "value": 90.0, "unit": "percent", "labels": {}})
    >>> [(t.state, t.severity) for t in eng.take_transitions()]
    [('firing', 'warning')]
    """

    def __init__(self, rules: RuleSet, *, eval_interval_us: int = 1_000_000, grace_us: int = 10_000_000,
                 max_future_us: int = 5_000_000, max_catchup_steps: int = 600,
                 idle_evict_us: int = 3600_000_000, wall: Callable[[], int] = now_us,
                 max_services: int = MAX_SERVICES, max_health: int = MAX_HEALTH) -> None:
        self.rules = rules
        self.eval_us = eval_interval_us
        self.grace_us = grace_us
        self.late_us = grace_us
        """The lateness bound now: the grace, widened while backlogs arrive after an outage (``hold_backlog``)."""
        self.holding = False
        self.replay_late_us = grace_us + _widest_window(rules)
        """The bound while a partition replays: its log may hold a backlog an outage left behind fresh events
        (windowed then, within the hold), so a replay takes what the windows can hold, as the live pass did."""
        self.max_future_us = max_future_us
        self.max_steps = max(2, max_catchup_steps)
        self.idle_evict_us = idle_evict_us
        self.wall = wall
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self._seq = itertools.count()
        self.by_fingerprint: dict[str, tuple[PartitionState, Series]] = {}
        self.outbox: list[Transition] = []
        self.counters = Counters()
        # Least recently updated first: eviction by idle time and by cap pops from the front (memory follows
        # live services, not every name ever seen).
        self.service_stats: collections.OrderedDict[str, ServiceStats] = collections.OrderedDict()
        self.latest_health: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
        self.max_services = max_services
        self.max_health = max_health
        self.patterns = {r.index: PatternMemory(int(r.spec.unseen_for * 1e6), r.spec.max_patterns_per_service)
                         for r in rules.rules if r.is_pattern}
        """new_pattern rules: the patterns each service logged (shared by the partitions of this process)."""

    # -- partitions --------------------------------------------------------------------------

    def add_partition(self, topic: str, partition: int, source: str) -> PartitionState:
        ps = PartitionState(topic, partition, source, self.rules, self.eval_us)
        self._wire(ps)
        self.partitions[ps.key] = ps
        return ps

    def _wire(self, ps: PartitionState) -> None:
        """Builds the partition's per-rule feeds and the metric-name dispatch over them."""
        feeds = {r.index: self._feed(ps, r) for r in ps.rules}
        ps.feeds = [feeds[r.index] for r in ps.rules]
        if ps.source == "metrics":
            ps.feeds_any_metric = [feeds[r.index] for r in self.rules.any_metric]
            ps.feeds_by_metric = {name: [feeds[r.index] for r in rules]
                                  for name, rules in self.rules.by_metric.items()}
        else:
            ps.feeds_any_metric, ps.feeds_by_metric = [], {}

    def drop_partition(self, key: tuple[str, int]) -> None:
        """Forgets a revoked partition: its series, trackers and fingerprints."""
        ps = self.partitions.pop(key, None)
        if ps is None:
            return
        for table in ps.tables.values():
            for s in table.values():
                if s.tracker is not None:
                    self.by_fingerprint.pop(s.tracker.fingerprint, None)

    # -- validation --------------------------------------------------------------------------

    def check(self, source: str, rec: dict[str, Any], future_policy: str = "cap", wall_us: int | None = None
              ) -> str | None:
        """Why a decoded event is unusable (for the dead-letter header), or None. Caps future timestamps.

        Field types are the schema's (the codec guarantees them); ``wall_us`` lets a caller read the
        clock once per batch instead of once per event.
        """
        reason = event_reason(source, rec)  # the checks every stage shares (tocsin.core.validation)
        if reason is not None:
            return reason
        ts = rec["ts"]
        wall = self.wall() if wall_us is None else wall_us
        if ts > wall + self.max_future_us:
            if future_policy == "deadletter":
                return f"timestamp {iso(ts)} is more than {self.max_future_us / 1e6:g}s in the future"
            rec["ts"] = wall  # capped to now: a clock far ahead must not drag the partition clock with it
            self.counters.future_capped += 1
        return None

    # -- the hot path ------------------------------------------------------------------------

    def ingest(self, ps: PartitionState, source: str, rec: dict[str, Any]) -> None:
        """Adds one validated event to every matching rule's window (evaluating instants it passes)."""
        ts = rec["ts"]
        if ts > ps.clock:
            if ts > ps.next_eval:
                self._advance(ps, ts)
            ps.clock = ts
        elif ts < ps.clock - self.grace_us:
            if ts < ps.clock - (self.late_us if ps.replay_until < 0 else self.replay_late_us):
                self.counters.late += 1
                return
            self.counters.reordered += 1
        if ps.awaiting_first_event:
            ps.awaiting_first_event = False
            ps.complete_from = ts
        self.counters.processed += 1
        if source == "metrics":
            name = rec["name"]
            feeds = ps.feeds_by_metric.get(name, ps.feeds_any_metric)
            if name == LATENCY_METRIC:
                self._stats(rec["service"], ts).latency.add(ts, rec["value"])
            elif name == HEARTBEAT_METRIC:  # self-monitoring: each component's last beat, as a health entry
                component = rec["labels"].get("component", "?")
                self._health((rec["service"], f"heartbeat:{component}"), {
                    "event_id": rec["event_id"], "ts": ts, "service": rec["service"], "host": rec["host"],
                    "check": f"heartbeat:{component}", "status": "healthy", "response_time_ms": None,
                    "details": {"component": component, "last_beat": str(ts)}, "error": None})
        else:
            feeds = ps.feeds
            if source == "logs":
                if rec["level"] in ERROR_LEVELS:
                    self._stats(rec["service"], ts).errors.add(ts, 1.0)
            elif source == "health":
                self._health((rec["service"], rec["check"]), rec)
        for feed in feeds:
            feed(rec, ts)

    def _feed(self, ps: PartitionState, rule: Rule) -> Callable[[dict[str, Any], int], None]:
        """The per-event work of one rule in one partition, as a closure over everything it touches.

        Built once per (partition, rule), so the hot path reads fast locals instead of attributes.
        """
        post, key_of, index = rule.post_filter, rule.key_of, rule.index
        counters = self.counters
        if rule.is_absence:
            seen = ps.seen[index]
            absence_deadline = self._absence_deadline

            def feed_absence(rec: dict[str, Any], ts: int) -> None:
                if post is not None and not post(rec):
                    return
                key = key_of(rec)
                last = seen.get(key)
                if last is None:
                    seen[key] = ts
                    absence_deadline(ps, rule, ts)
                elif ts > last:
                    seen[key] = ts
            return feed_absence

        table = ps.tables[index]
        dirty = ps.dirty
        if rule.is_pattern:
            return self._feed_pattern(ps, rule, table, dirty)
        numerator = rule.is_numerator
        safe_low, safe_high = rule.safe_low, rule.safe_high
        value_of = None if rule.source == "metrics" else rule.value_of
        spiky = rule.is_spike
        seeded_before = rule.spike_cutoff_us
        """spike baselines seeded from the store: the stream counts from the seeds' cutoff on."""
        lazy = rule.spec.kind in ("forecast", "slo")
        """A forecast (an slo) is judged at bucket boundaries (the sweep), not per sample: a 4 h line (a 1 h
        burn rate) moves slowly."""

        def feed_window(rec: dict[str, Any], ts: int) -> None:
            if post is not None and not post(rec):
                return
            key = key_of(rec)
            s = table.get(key)
            if s is None:
                s = table[key] = Series(rule, key)
            value = rec["value"] if value_of is None else value_of(rec)
            if value is None:
                return
            unsafe = not safe_low <= value <= safe_high
            is_num = numerator(rec) if numerator is not None else False
            if not s.window.add(ts, value, is_num, unsafe):
                counters.late += 1
                return
            if spiky and ts >= seeded_before:
                s.history.add(ts, value, is_num)
            if not s.dirty and ((unsafe and not lazy) or s.tracker is not None):
                s.dirty = True  # (a clear sample in a clear window needs no evaluation: see Rule._safe_range)
                dirty.append(s)
        return feed_window

    def _feed_pattern(self, ps: PartitionState, rule: Rule, table: dict[tuple[str, ...], Series],
                      dirty: list[Series]) -> Callable[[dict[str, Any], int], None]:
        """new_pattern: an error whose pattern the service did not log within ``unseen_for`` opens a series."""
        post, key_of, allowed, index = rule.post_filter, rule.key_of, rule.allowed, rule.index
        memory = self.patterns[rule.index]
        learn_us = int(rule.spec.learn_for * 1e6)

        def feed_pattern(rec: dict[str, Any], ts: int) -> None:
            if post is not None and not post(rec):
                return
            pattern = normalize_message(rec["message"])
            if allowed is not None and allowed(pattern):
                return
            group = key_of(rec)
            pid = pattern_id(pattern)
            key = (*group, pid)
            s = table.get(key)
            new = memory.observe(rec["service"], pid, ts)
            if s is None:
                if not new or (ts < max(ps.watched_from, ps.rule_from.get(index, -1)) + learn_us
                               and rec["service"] not in memory.restored):
                    return  # known, or still learning what this service usually logs
                s = table[key] = Series(rule, key)
                memory.examples[(rec["service"], pid)] = [pattern, rec["message"][:MESSAGE_MAX_CHARS], 0]
            memory.examples[(rec["service"], pid)][2] += 1
            if s.window.add(ts, 1.0) and not s.dirty:  # type: ignore[union-attr]
                s.dirty = True
                dirty.append(s)
        return feed_pattern

    @staticmethod
    def _absence_deadline(ps: PartitionState, rule: Rule, ts: int) -> None:
        """Absence series are scanned only from their earliest possible deadline on (see ``_evaluate``)."""
        deadline = ts + rule.absent_us
        if deadline < ps.absence_next.get(rule.index, math.inf):
            ps.absence_next[rule.index] = deadline

    def _stats(self, service: str, ts: int) -> ServiceStats:
        stats = self.service_stats
        st = stats.get(service)
        if st is None:
            st = stats[service] = ServiceStats()
            if len(stats) > self.max_services:
                stats.popitem(last=False)
                self.counters.evicted += 1
        else:
            stats.move_to_end(service)
        if ts > st.seen:
            st.seen = ts
        return st

    def _health(self, key: tuple[str, str], rec: dict[str, Any]) -> None:
        health = self.latest_health
        if health.pop(key, None) is None and len(health) >= self.max_health:
            health.popitem(last=False)
            self.counters.evicted += 1
        health[key] = rec

    def evict_idle(self, now_us: int | None = None) -> int:
        """Forgets statistics and health entries with no event for ``idle_evict_us`` of event time; returns how many.

        Cheap when nothing is idle: both tables are ordered by last update, so only their fronts are read.
        """
        t = now_us if now_us is not None else self.clock()
        if t < 0:
            return 0
        horizon = t - self.idle_evict_us
        n = 0
        for table, seen in ((self.service_stats, lambda v: v.seen), (self.latest_health, lambda v: v["ts"])):
            while table:
                first = next(iter(table.values()))
                if seen(first) >= horizon:
                    break
                table.popitem(last=False)
                n += 1
        self.counters.evicted += n
        return n

    # -- evaluation --------------------------------------------------------------------------

    def _advance(self, ps: PartitionState, ts: int) -> None:
        """Evaluates every instant of ``ps`` before ``ts`` not yet evaluated."""
        step = self.eval_us
        last = ((ts - 1) // step) * step
        if ps.next_eval < 0:
            ps.next_eval = last + step  # first event: nothing before it to evaluate
            ps.watched_from = ts
            return
        g = ps.next_eval
        if g > last:
            return
        n = (last - g) // step + 1
        if n > self.max_steps:
            # A long gap (idle for hours): evaluate its start and its end, not every instant between.
            self._evaluate(ps, g)
            g = last - (self.max_steps - 2) * step
        while g <= last:
            self._evaluate(ps, g)
            g += step
        ps.next_eval = last + step

    def hold_backlog(self, backlog_us: int) -> None:
        """After an outage, for as long as producers' backlogs may arrive: accept events ``backlog_us`` (plus
        the grace) behind the clock, and declare no new absence. 0 ends it."""
        self.late_us = self.grace_us + max(0, backlog_us)
        self.holding = backlog_us > 0

    def advance_idle(self, ps: PartitionState, wall_us: int) -> None:
        """Processing-time tick for a caught-up, quiet partition: its clock follows ``wall - grace``."""
        t = wall_us - self.grace_us
        if ps.clock < 0:
            if not ps.active:
                return
            ps.clock = t  # restored alerts on a partition that has been silent since: start its clock
        if t > ps.clock:
            if t > ps.next_eval:
                self._advance(ps, t)
            ps.clock = t

    def _evaluate(self, ps: PartitionState, g: int) -> None:
        todo: list[Series] = []
        scanned: list[Rule] = []
        for rule in ps.rules:
            table = ps.tables[rule.index]
            if rule.is_absence:
                # Only from the earliest deadline on: silence can start no sooner than last_seen + absent_for.
                if g >= ps.absence_next.get(rule.index, math.inf):
                    todo.extend(self._silent(ps, rule, g))
                    scanned.append(rule)
                continue
            b = g // rule.bucket_us
            if ps.last_bucket.get(rule.index) != b:
                ps.last_bucket[rule.index] = b
                todo.extend(self._sweep(ps, rule, g))
        todo.extend(ps.dirty)
        todo.extend(ps.active)
        timers = ps.timers
        while timers and timers[0][0] <= g:  # timers due at this instant
            s = heapq.heappop(timers)[2]
            if s.timer_at <= g:
                s.timer_at = -1
                todo.append(s)
        ps.dirty.clear()  # cleared in place: the rules' feeds hold this list
        for s in todo:
            if s.evaluated_at >= g:  # evaluated at this instant already, or RETIRED by a reload
                continue
            s.evaluated_at = g
            s.dirty = False
            self._evaluate_series(ps, s, g)
        for rule in scanned:
            table = ps.tables[rule.index]
            for k in [k for k, s in table.items() if s.tracker is None]:
                del table[k]  # a Series only while it has an alert
            held = {k for k, s in table.items() if s.tracker.open or s.tracker.latched_at is not None}  # type: ignore
            horizon = g - self.idle_evict_us
            seen = ps.seen[rule.index]
            for k in [k for k, last in seen.items() if last < horizon and k not in table]:
                del seen[k]  # silent for long with no alert: forgotten (memory follows live groups)
            waiting = [last for k, last in seen.items() if k not in held]
            ps.absence_next[rule.index] = min(waiting, default=math.inf) + rule.absent_us

    def _silent(self, ps: PartitionState, rule: Rule, g: int) -> list[Series]:
        """The groups of an absence rule silent at ``g``, plus those with an alert, as Series."""
        table = ps.tables[rule.index]
        limit = g - rule.absent_us
        for key, last in ps.seen[rule.index].items():
            if last <= limit and key not in table:
                s = table[key] = Series(rule, key)
                s.last_seen = last
        return list(table.values())

    def _evaluate_series(self, ps: PartitionState, s: Series, g: int) -> None:
        rule = s.rule
        self.counters.evaluations += 1
        if s.window is None:
            s.last_seen = ps.seen[rule.index].get(s.key, s.last_seen)
            silent = 0 <= s.last_seen <= g - rule.absent_us
            if silent and self.holding and (s.tracker is None or not s.tracker.open):
                return  # a backlog may still show it: found silent again at the next instant (absence_next)
            level = (CRITICAL if rule.spec.severity == "critical" else WARNING) if silent else NONE
        else:
            complete_from = ps.complete_from
            if ps.rule_from:
                complete_from = max(complete_from, ps.rule_from.get(rule.index, complete_from))
            if g < complete_from + rule.window_us:
                return  # half-rebuilt window after a seek (or a reload that changed the rule): no verdict yet
            if rule.is_spike:
                if rule.spike_seeds is not None and ps.complete_from <= rule.spike_cutoff_us + self.grace_us:
                    known_from = rule.spike_known_from  # the store's periods, the stream from the cutoff on
                else:  # learning: only periods this processor watched (a replay that began after the cutoff)
                    known_from = max(complete_from, ps.watched_from)
                level, spike_value, base = rule.spike_level(s.window, s.history, g, known_from)
            else:
                level = rule.level(s.window, g)
            if level == NONE and rule.no_data_level is not None and s.window.empty(g):
                level = self._no_data_level(rule, s.tracker)
        tr = s.tracker
        if tr is None:
            if level == NONE:
                return
            tr = s.tracker = AlertTracker(rule.fingerprint(s.key))
            self.by_fingerprint[tr.fingerprint] = (ps, s)
        before = tr.step(g, level, rule.for_us, rule.resolve_us, rule.cooldown_us)
        if before is not None:
            severity = tr.severity if tr.severity != NONE else before[1]
            if rule.is_spike:
                tr.value, tr.threshold = spike_value, rule.spike_threshold(severity, base)
            else:
                tr.value = self._value(s, g)
                tr.threshold = self._threshold(rule, severity)
            self._emit(s, tr, before)
        if s.window is None and (tr.open or tr.latched_at is not None):
            ps.active.add(s)  # an absent group may report again: evaluate at every instant
        else:
            ps.active.discard(s)
        due = tr.deadline(rule.for_us, rule.resolve_us)
        if due is not None and due != s.timer_at:
            s.timer_at = due
            heapq.heappush(ps.timers, (due, next(self._seq), s))
        if not tr.open and tr.level == NONE and tr.latched_at is None and g > tr.restored_ts and (
                tr.state != RESOLVED or tr.ended_at is None or g - tr.ended_at >= rule.cooldown_us):
            # Nothing left to remember: past the cooldown, no timer running, and (for a restored
            # tracker) past its last transition, which a replay must not compute a second time.
            self.by_fingerprint.pop(tr.fingerprint, None)
            s.tracker = None

    @staticmethod
    def _no_data_level(rule: Rule, tr: AlertTracker | None) -> int:
        """The rule's ``no_data`` policy for an empty window: keep the open alert's severity, or fire."""
        if rule.no_data_level != KEEP:
            return rule.no_data_level  # type: ignore[return-value]
        return tr.severity if tr is not None and tr.open else NONE

    def _value(self, s: Series, g: int) -> float | None:
        if s.window is None:
            return (g - s.last_seen) / 1e6 if s.last_seen >= 0 else None
        return s.rule.measure(s.window, g)

    @staticmethod
    def _threshold(rule: Rule, level: int) -> float | None:
        if rule.is_absence:
            return rule.absent_us / 1e6
        return rule.threshold_for(level) if level != NONE else rule.threshold_for(1) or rule.threshold_for(2)

    def _sweep(self, ps: PartitionState, rule: Rule, g: int) -> list[Series]:
        """At a bucket boundary: the series whose slid window needs a verdict; forgets idle ones.

        A series with no alert whose window holds no sample flagged unsafe (see ``Rule._safe_range``)
        is clear whatever slid out, so it is skipped; one with an empty window and no alert is
        forgotten (memory follows live series).
        """
        table = ps.tables[rule.index]
        todo: list[Series] = []
        stale = []
        skip_clear = rule.has_safe_range
        fires_empty = rule.no_data_level not in (None, KEEP)
        lo = g // rule.bucket_us - rule.spec.slices  # buckets at or below this left the window
        for k, s in table.items():
            if s.tracker is None and not s.dirty:
                w = s.window
                if w.newest <= lo and (s.history is None or s.history.newest <= g // rule.window_us - rule.periods):
                    if fires_empty:  # no_data: fire: the empty window is the finding
                        todo.append(s)
                    else:
                        stale.append(k)
                    continue
                if skip_clear and w.unsafe_last <= lo:  # type: ignore[union-attr]
                    continue
            todo.append(s)
        for k in stale:
            del table[k]
        return todo

    def _labels(self, s: Series) -> dict[str, str]:
        rule = s.rule
        return {**rule.spec.labels, "alertname": rule.name, **rule.group_labels(s.key)}

    def _emit(self, s: Series, tr: AlertTracker, before: tuple, note: dict[str, str] | None = None) -> None:
        rule = s.rule
        t = tr.transition(before, rule.name, self._labels(s))
        t.annotations = rule.render({
            "labels": t.labels, "value": t.value, "threshold": t.threshold, "severity": t.severity,
            "state": t.state, "rule": rule.name, "alert_id": t.alert_id, "started_at": iso(t.started_at),
            **self._pattern_context(s), **rule.context(s.window, t.ts),
        }) | (note or {})
        if rule.is_slo:  # the alert carries the error budget left
            t.annotations = {**rule.context(s.window, t.ts), **t.annotations}
        if rule.is_pattern:  # the alert carries the pattern and one line (the count is its value)
            t.annotations = {**self._pattern_context(s), **t.annotations}
        tr.record = t.as_record()
        self.outbox.append(t)
        self.counters.transitions += 1

    def _pattern_context(self, s: Series) -> dict[str, str]:
        """new_pattern: the pattern, its first line and its occurrences since it appeared."""
        if not s.rule.is_pattern:
            return {}
        pattern, example, count = self.patterns[s.rule.index].examples.get(
            (s.rule.group_labels(s.key).get("service", ""), s.key[-1]), ("", "", 0))
        return {"pattern": pattern, "example": example, "count": str(count)}

    def take_transitions(self) -> list[Transition]:
        out, self.outbox = self.outbox, []
        return out

    # -- recovery and control ------------------------------------------------------------------

    def restore(self, records: Iterable[Mapping[str, Any]],
                owner: Callable[[Rule, str], PartitionState | None]) -> int:
        """Adopts the latest AlertEvent per fingerprint for the series this process owns; returns how many.

        ``owner(rule, service)`` names the partition that carries the service's
        events for the rule's source, or None when another process owns it.
        """
        n = 0
        for rec in records:
            rule = self.rules.by_name.get(rec["rule"])
            if rule is None:
                continue
            labels = rec.get("labels") or {}
            key = tuple(labels.get(g, "") for g in rule.label_names)
            if rule.fingerprint(key) != rec["fingerprint"]:
                continue  # the rule's grouping changed since: that alert is not ours to continue
            ps = owner(rule, labels.get("service", ""))
            if ps is None:
                continue
            table = ps.tables[rule.index]
            s = table.get(key)
            if s is None:
                s = table[key] = Series(rule, key)
            tr = AlertTracker(rec["fingerprint"])
            tr.restore(dict(rec))
            if s.window is None:
                if tr.open and s.last_seen < 0:
                    s.last_seen = tr.started_at - rule.absent_us  # silent since before it fired
                ps.seen[rule.index].setdefault(key, s.last_seen)
                self._absence_deadline(ps, rule, s.last_seen)
            s.tracker = tr
            self.by_fingerprint[tr.fingerprint] = (ps, s)
            if tr.open:
                ps.active.add(s)  # until its first evaluation tells whether a timer runs
            n += 1
        return n

    def reload(self, rules: RuleSet) -> dict[str, list[str]]:
        """Swaps in a new rule set without a restart; returns the rule names added, changed, removed, kept.

        * A rule whose spec is unchanged keeps everything: windows, baselines, timers, open alerts.
        * A rule that changed starts with empty windows and gives no verdict for one window (as after
          a mid-log seek); its open alerts carry over when their fingerprint (name and group labels)
          is the same, so a changed threshold does not resolve and re-open an incident.
        * The open alerts of a removed rule (or a changed rule whose grouping changed) resolve at
          the partition clock with ``resolved_by: reload`` and a ``reason`` annotation.
        * new_pattern memories carry over by rule name (they describe the services, not the rule).
        """
        old = self.rules
        kept: dict[int, Rule] = {}
        changed: dict[int, Rule] = {}
        for r in rules.rules:
            o = old.by_name.get(r.name)
            if o is not None:
                (kept if o.spec == r.spec else changed)[r.index] = o
                if o.spec == r.spec and r.is_slo:  # the same objective: the same seeds from the store
                    r.slo_seeds, r.slo_cutoff_us = o.slo_seeds, o.slo_cutoff_us
                if o.spec == r.spec and r.is_spike:
                    r.spike_seeds, r.spike_known_from, r.spike_cutoff_us = (o.spike_seeds, o.spike_known_from,
                                                                            o.spike_cutoff_us)
        removed = [r.name for r in old.rules if r.name not in rules.by_name]
        patterns = {}
        for r in rules.rules:
            if r.is_pattern:
                o = kept.get(r.index) or changed.get(r.index)
                unseen_us, limit = int(r.spec.unseen_for * 1e6), r.spec.max_patterns_per_service
                memory = self.patterns.get(o.index) if o is not None and o.is_pattern else None
                if memory is None:
                    memory = PatternMemory(unseen_us, limit)
                memory.unseen_us, memory.max_per_service = unseen_us, limit
                patterns[r.index] = memory
        self.rules = rules
        self.replay_late_us = self.grace_us + _widest_window(rules)
        self.patterns = patterns
        for ps in self.partitions.values():
            self._reload_partition(ps, kept, changed)
        return {"added": [r.name for r in rules.rules if r.name not in old.by_name],
                "changed": [r.name for r in rules.rules if r.index in changed], "removed": removed,
                "unchanged": [r.name for r in rules.rules if r.index in kept]}

    def _reload_partition(self, ps: PartitionState, kept: dict[int, Rule], changed: dict[int, Rule]) -> None:
        old_rules, old_tables, old_seen = ps.rules, ps.tables, ps.seen
        old_bucket, old_absence, old_from = ps.last_bucket, ps.absence_next, ps.rule_from
        ps.rules = self.rules.by_source.get(ps.source, [])
        ps.tables, ps.seen, ps.last_bucket, ps.absence_next, ps.rule_from = {}, {}, {}, {}, {}
        kept_old = {o.index for o in kept.values()}
        for r in ps.rules:
            o = kept.get(r.index)
            if o is not None:  # unchanged: the same state under the new index
                table = ps.tables[r.index] = old_tables[o.index]
                for s in table.values():
                    s.rule = r
                if r.is_absence:
                    ps.seen[r.index] = old_seen[o.index]
                for src, dst in ((old_bucket, ps.last_bucket), (old_absence, ps.absence_next),
                                 (old_from, ps.rule_from)):
                    if o.index in src:
                        dst[r.index] = src[o.index]
                continue
            ps.tables[r.index] = {}
            if r.is_absence:
                ps.seen[r.index] = {}
            ps.rule_from[r.index] = ps.clock
            o = changed.get(r.index)
            if o is None:
                continue
            for key, s in old_tables[o.index].items():
                tr = s.tracker
                if tr is None or len(key) != len(r.label_names) or r.fingerprint(key) != tr.fingerprint:
                    continue  # not carried: retired below
                ns = ps.tables[r.index][key] = Series(r, key)
                ns.tracker, ns.last_seen = tr, s.last_seen
                s.tracker = None
                self.by_fingerprint[tr.fingerprint] = (ps, ns)
                if r.is_absence and s.last_seen >= 0:
                    ps.seen[r.index][key] = s.last_seen
                    self._absence_deadline(ps, r, s.last_seen)
                if tr.open:
                    ps.active.add(ns)  # until its first evaluation tells whether a timer runs
            if r.is_absence and o.spec.group_by == r.spec.group_by and o.spec.filter == r.spec.filter:
                for key, last in old_seen[o.index].items():  # the same groups: their silence so far counts
                    ps.seen[r.index].setdefault(key, last)
                    self._absence_deadline(ps, r, last)
        at = ps.clock if ps.clock >= 0 else self.wall()
        for o in old_rules:  # removed and changed rules: their old series (open alerts not carried resolve)
            if o.index not in kept_old:
                for s in old_tables[o.index].values():
                    self._retire(ps, s, at)
        ps.dirty[:] = [s for s in ps.dirty if s.evaluated_at != RETIRED]
        self._wire(ps)

    def _retire(self, ps: PartitionState, s: Series, at: int) -> None:
        """A series whose rule is gone: its open alert resolves (reason given), then it is forgotten."""
        tr = s.tracker
        if tr is not None:
            if tr.open:
                before = tr.resolve_manually(at, RELOAD_ACTOR)
                if before is not None:
                    self._emit(s, tr, before, {"reason": f"rule {s.rule.name} was removed or regrouped by a reload"})
            self.by_fingerprint.pop(tr.fingerprint, None)
        s.evaluated_at = RETIRED
        ps.active.discard(s)

    def load_patterns(self, rows: Iterable[tuple[str, str, str, int]]) -> int:
        """Adopts (rule, service, pattern id, last seen) rows of new_pattern rules; returns how many."""
        by_rule: dict[int, list[tuple[str, str, int]]] = {}
        for rule_name, service, pid, ts in rows:
            rule = self.rules.by_name.get(rule_name)
            if rule is not None and rule.is_pattern:
                by_rule.setdefault(rule.index, []).append((service, pid, ts))
        for index, found in by_rule.items():
            self.patterns[index].load(found)
        return sum(len(v) for v in by_rule.values())

    def take_pattern_changes(self) -> list[tuple[str, str, str, int | None]]:
        """(rule, service, pattern id, last seen or None: forgotten) to write to the patterns topic."""
        out = []
        for index, memory in self.patterns.items():
            if memory.changes:
                name = self.rules.rules[index].name
                out.extend((name, service, pid, ts) for service, pid, ts in memory.take_changes())
        return out

    def resolve(self, alert_id: str, ts: int, actor: str) -> Transition | None:
        """Manual resolve of an open incident this process owns; None if unknown, not ours or not open."""
        found = self.by_fingerprint.get(fingerprint_of(alert_id))
        if found is None:
            return None
        ps, s = found
        tr = s.tracker
        if tr is None or tr.alert_id != alert_id or not tr.open:
            return None
        before = tr.resolve_manually(ts, actor)
        if before is None:
            return None
        ps.active.discard(s)
        self._emit(s, tr, before)
        self.counters.control_applied += 1
        return self.outbox[-1]

    def acknowledge(self, rec: Mapping[str, Any]) -> Transition | None:
        """Applies an ack/unack ControlEvent to the open incident this process owns (tocsin.processors.ack).

        The transition is at the partition's clock (event time, like every other), never before the last one.
        """
        alert_id = rec.get("alert_id") or ""
        found = self.by_fingerprint.get(fingerprint_of(alert_id))
        if found is None:
            return None
        ps, s = found
        tr = s.tracker
        if tr is None or tr.alert_id != alert_id:
            return None
        before = tr.apply_ack(ps.clock, ack_from_control(rec), int(rec["ts"]))
        if before is None:
            return None
        self._emit(s, tr, before)
        self.counters.control_applied += 1
        return self.outbox[-1]

    # -- read-only views (for the service's accessors) -----------------------------------------

    def open_records(self) -> list[dict[str, Any]]:
        """The latest AlertEvent of every open (pending or firing) incident this process owns."""
        out = []
        for ps, s in list(self.by_fingerprint.values()):
            tr = s.tracker
            if tr is not None and tr.open and tr.record is not None:
                # The value now (reads are at the partition clock, never before an instant still to come).
                now = self._value(s, ps.clock) if ps.clock >= 0 else None
                out.append({**tr.record, "value": now if now is not None else tr.record.get("value")})
        return out

    def clock(self) -> int:
        """The newest event time of any partition (the "now" of summaries)."""
        return max((p.clock for p in self.partitions.values()), default=-1)

    def service_points(self, limit: int, at_us: int | None = None) -> dict[str, list[tuple[int, int, float | None]]]:
        """Per service, oldest first, one point per minute of the last hour: (bucket start us, errors, p95 ms).

        Only the ``limit`` services with the most errors in the hour (then by name).
        """
        t = at_us if at_us is not None else self.clock()
        if t < 0:
            return {}
        ranked = sorted(self.service_stats.items(), key=lambda kv: (-kv[1].errors.count(t), kv[0]))[:limit]
        out: dict[str, list[tuple[int, int, float | None]]] = {}
        bt = t // STATS_BUCKET_US
        for svc, st in ranked:
            points = []
            for b in range(bt - STATS_BUCKETS + 1, bt + 1):
                slot = b % STATS_BUCKETS
                errors = st.errors.cnt[slot] if st.errors.idx[slot] == b else 0
                hist = st.latency.hist[slot] if st.latency.idx[slot] == b else None  # type: ignore[index]
                points.append((b * STATS_BUCKET_US, errors, hist.quantile(0.95) if hist is not None else None))
            out[svc] = points
        return out

    def error_count(self, at_us: int | None = None) -> int:
        """ERROR and CRITICAL log events over the last hour of event time, all services."""
        t = at_us if at_us is not None else self.clock()
        return sum(st.errors.count(t) for st in self.service_stats.values()) if t >= 0 else 0

    def series_count(self) -> int:
        return sum(p.series_count() for p in self.partitions.values())


def _widest_window(rules: RuleSet) -> int:
    return max((r.window_us for r in rules.rules), default=0)
