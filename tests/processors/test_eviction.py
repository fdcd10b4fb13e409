"""Memory follows live services: a flood of distinct service names leaves per-service state bounded.

Per-service statistics (dashboard charts, summaries) and latest-health
entries are evicted by idle time and beyond a cap, least recently updated
first, and the evictions are counted and exported on /metrics.
"""

from __future__ import annotations

import gc
import time

from tests.conftest import make_config
from tests.processors.helpers import T0, FakeWall, S, health, log, metric
from tocsin.core.events import now_us
from tocsin.processors.engine import MAX_HEALTH, MAX_SERVICES, Engine
from tocsin.processors.http.metrics import exposition, registry_for
from tocsin.processors.rules import load_rules, parse_rules
from tocsin.processors.service import ProcessorService
from tocsin.processors.view import ProcessorView

FLOOD = 100_000
MIB = 1024 * 1024


def _flood(eng: Engine, services: int, t0: int) -> None:
    parts = {src: eng.add_partition(src, 0, src) for src in ("logs", "metrics", "health")}
    for i in range(services):
        name, ts = f"svc-{i:06d}", t0 + i
        eng.ingest(parts["logs"], "logs", log(ts, service=name))
        eng.ingest(parts["metrics"], "metrics", metric(ts, 120.0, service=name))
        eng.ingest(parts["health"], "health", health(ts, service=name))


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_a_flood_of_distinct_services_leaves_memory_bounded():
    """Statistics and health entries only (no rules): what this eviction bounds, measured as RSS growth."""
    gc.collect()
    base = _rss()
    eng = Engine(parse_rules([]), grace_us=10 * S, wall=FakeWall(T0 + FLOOD + 10 * S), idle_evict_us=3600 * S)
    _flood(eng, FLOOD, T0)
    gc.collect()
    grown = _rss() - base
    evicted_by_cap = eng.counters.evicted
    stats, entries = len(eng.service_stats), len(eng.latest_health)
    eng.evict_idle(T0 + FLOOD + 2 * 3600 * S)  # an hour of event time later: all idle
    print(f"\n{FLOOD} distinct services: RSS grew {grown / MIB:.1f} MiB ({stats} statistics, {entries} health "
          f"entries kept, {evicted_by_cap} evicted by the caps; {eng.counters.evicted - evicted_by_cap} more "
          f"once idle)")
    assert stats == MAX_SERVICES and entries == MAX_HEALTH
    assert evicted_by_cap == (FLOOD - MAX_SERVICES) + (FLOOD - MAX_HEALTH)
    assert not eng.service_stats and not eng.latest_health
    assert grown < 150 * MIB  # unbounded: ~5 KB of statistics x 100,000 services alone is ~480 MB


def test_evictions_are_counted_on_metrics():
    svc = ProcessorService(make_config("127.0.0.1:9", "chdb:///tmp/unused",
                                       processor={"max_services": 10, "max_health_entries": 10}))
    p = svc.cfg.processor
    svc.engine = Engine(load_rules(None), max_services=p.max_services, max_health=p.max_health_entries)
    _flood(svc.engine, 25, now_us() - 60 * S)
    svc.started_at_us, svc.last_poll = now_us(), time.monotonic()
    view = ProcessorView(svc, background=False)
    view.refresh()
    text = exposition(registry_for(view)).decode()
    assert "tocsin_processor_evicted_total 30.0" in text  # 15 statistics and 15 health entries
