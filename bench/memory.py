"""Memory per series: RSS of the processor's engine (default rules, 5-minute windows) holding N metric
series after five minutes of event time, at 1x (one sample per series every 10 s) and 10x the rate.

Each configuration runs in a fresh interpreter: RSS is measured after imports and rule loading, then
after the events; the difference divided by the series is the cost of one series. Events are
generated on the fly (never held in a list), so RSS holds windows, sketches and trackers only. The
series are the processor bench's mix: per host api_response_time and database_query_time (p95
sketches per bucket), cpu_usage, memory_usage, disk_usage, plus the absence series per host.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import BenchContext

DESCRIPTION = "RSS bytes per series, 5-minute windows, 1x and 10x the event rate"
RATIOS = {"rss growth 10x events / 1x": ("rss_bytes_per_series.10x", "rss_bytes_per_series.1x")}
REPO = Path(__file__).resolve().parents[1]
WINDOW_S = 300
METRICS = ("api_response_time", "database_query_time", "cpu_usage", "memory_usage", "disk_usage")


def _events(series: int, interval_s: float, start_us: int) -> Iterator[dict[str, Any]]:
    hosts = max(1, series // len(METRICS))
    services = max(1, hosts // 4)
    steps = int(WINDOW_S / interval_s)
    step_us = int(interval_s * 1e6)
    for step in range(steps):
        base = start_us + step * step_us
        for k in range(series):
            host_i, m = divmod(k, len(METRICS))
            svc = f"svc-{host_i % services}"
            name = METRICS[m]
            value = 40.0 + (k * 7919 + step * 104729) % 400 if "time" in name else 30.0 + (k + step) % 40
            yield {"ts": base + (k * step_us) // series, "service": svc, "host": f"{svc}-h{host_i}", "name": name,
                   "value": value, "unit": "", "labels": {"mount": "/"} if name == "disk_usage" else {}}


def measure(series: int, interval_s: float) -> dict[str, float]:
    """In this process: RSS growth from holding ``series`` series fed every ``interval_s`` for 5 minutes."""
    import psutil

    from tocsin.processors.engine import Engine
    from tocsin.processors.rules import load_rules

    start_us = 1_767_225_600_000_000
    events = 0
    eng = Engine(load_rules(), eval_interval_us=500_000, grace_us=10_000_000, max_future_us=10**15,
                 wall=lambda: start_us + 10**12)
    ps = eng.add_partition("metrics", 0, "metrics")
    gc.collect()
    before = psutil.Process().memory_info().rss
    for rec in _events(series, interval_s, start_us):
        eng.ingest(ps, "metrics", rec)
        events += 1
    gc.collect()
    after = psutil.Process().memory_info().rss
    return {"series": series, "events": events, "engine_series": eng.series_count(), "rss_delta": after - before,
            "rss_after": after}


def _run_isolated(series: int, interval_s: float) -> dict[str, float]:
    code = f"import json; from bench.memory import measure; print(json.dumps(measure({series}, {interval_s})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1800,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(ctx: BenchContext) -> dict[str, float]:
    small, large = ctx.n(10_000, 1_000), ctx.n(100_000, 10_000)
    figures: dict[str, float] = {}
    for label, series, interval in (("1x", small, 10.0), ("10x", small, 1.0), ("1x_large", large, 10.0)):
        r = _run_isolated(series, interval)
        figures[f"rss_bytes_per_series.{label}"] = r["rss_delta"] / r["series"]
        figures[f"rss_mib.{label}"] = r["rss_after"] / 2**20
        figures[f"events.{label}"] = r["events"]
    figures["series.small"] = small
    figures["series.large"] = large
    return figures
