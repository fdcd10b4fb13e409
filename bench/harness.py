"""The benchmark harness: repeat a benchmark, print min/median/max and ratios to baselines.

A benchmark is a module ``bench/<name>.py`` with::

    DESCRIPTION = "one line"
    RATIOS = {"ratio name": ("numerator figure", "denominator figure")}
    def prepare(ctx: BenchContext) -> None: ...     # optional: once, before the repetitions
    def run(ctx: BenchContext) -> dict[str, float]: # one repetition -> {figure: value}
    def cleanup(ctx: BenchContext) -> None: ...     # optional

Figures are named ``<who>.<what>_<unit>`` (``tocsin.events_per_s``,
``kcat.events_per_s``, ``rss_bytes_per_series``) so the table reads by itself.
Baselines are measured in the same run, so a ratio compares like with like on
whatever machine runs it. Nothing here ever fails on a time: the harness
prints, writes JSON, and exits 0 unless a benchmark crashed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = ["kafka", "ship", "processor", "peer", "sink", "alert_latency", "memory", "health_load",
              "agent_overhead", "inputs"]


@dataclass
class BenchContext:
    """What a benchmark gets: size switch, a broker, a scratch directory, and a place for state."""

    quick: bool
    bootstrap: str
    workdir: Path
    repetition: int = 0
    state: dict[str, Any] = field(default_factory=dict)

    def n(self, full: int, quick: int) -> int:
        """An event count: ``full`` normally, ``quick`` under --quick."""
        return quick if self.quick else full


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a local broker for the harness's lifetime."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from tocsin.core import localkafka

    data_dir = Path(tempfile.mkdtemp(prefix="tocsin-bench-kafka-"))
    state = localkafka.up(data_dir=data_dir, owner_pid=os.getpid(), remove_on_orphan=True)
    try:
        yield state.bootstrap
    finally:
        localkafka.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def load(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def available() -> list[str]:
    here = Path(__file__).parent
    return [name for name in BENCHMARKS if (here / f"{name}.py").exists()]


def summarize(samples: dict[str, list[float]], ratios: dict[str, tuple[str, str]]) -> dict[str, Any]:
    figures = {
        name: {"min": min(v), "median": statistics.median(v), "max": max(v), "samples": v}
        for name, v in samples.items() if v
    }
    out_ratios = {}
    for rname, (num, den) in ratios.items():
        if num in figures and den in figures and figures[den]["median"]:
            out_ratios[rname] = {"numerator": num, "denominator": den,
                                 "value": figures[num]["median"] / figures[den]["median"]}
    return {"figures": figures, "ratios": out_ratios}


def fmt(x: float) -> str:
    if abs(x) >= 1e6:
        return f"{x / 1e6:,.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:,.1f}k"
    return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"


def print_result(name: str, result: dict[str, Any], out=sys.stdout) -> None:
    print(f"\n== {name}: {result.get('description', '')}", file=out)
    width = max((len(k) for k in result["figures"]), default=10)
    print(f"  {'figure':<{width}}  {'min':>10} {'median':>10} {'max':>10}", file=out)
    for fig, s in result["figures"].items():
        print(f"  {fig:<{width}}  {fmt(s['min']):>10} {fmt(s['median']):>10} {fmt(s['max']):>10}", file=out)
    for rname, r in result["ratios"].items():
        print(f"  ratio {rname}: {r['value']:.3f}  ({r['numerator']} / {r['denominator']}, medians)", file=out)


def run_one(name: str, ctx: BenchContext, repeats: int) -> dict[str, Any]:
    module = load(name)
    samples: dict[str, list[float]] = {}
    started = time.monotonic()
    if hasattr(module, "prepare"):
        module.prepare(ctx)
    try:
        for i in range(repeats):
            ctx.repetition = i
            for fig, value in module.run(ctx).items():
                samples.setdefault(fig, []).append(float(value))
    finally:
        if hasattr(module, "cleanup"):
            module.cleanup(ctx)
    result = summarize(samples, getattr(module, "RATIOS", {}))
    result["description"] = getattr(module, "DESCRIPTION", "")
    result["repeats"] = repeats
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


def environment() -> dict[str, Any]:
    import kafka

    from tocsin.core import localkafka

    versions = {}
    for dist in ("fastavro", "chdb", "clickhouse-connect", "quixstreams"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist.replace("-", "_")] = importlib.metadata.version(dist)
    return {
        "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "kafka_python": kafka.__version__,
        "kafka_broker": localkafka.kafka_version(), **versions,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(names: list[str], quick: bool, json_path: Path | None, repeats: int | None) -> int:
    repeats = repeats or (1 if quick else 3)
    doc: dict[str, Any] = {"environment": environment(), "quick": quick, "benchmarks": {}}
    failed = []
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="tocsin-bench-") as tmp:
        for name in names:
            ctx = BenchContext(quick=quick, bootstrap=bootstrap, workdir=Path(tmp) / name)
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            try:
                result = run_one(name, ctx, repeats)
            except Exception as exc:  # report and go on: one broken benchmark must not hide the others
                print(f"\n== {name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.append(name)
                continue
            doc["benchmarks"][name] = result
            print_result(name, result)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2))
        print(f"\nwrote {json_path}")
    return 1 if failed else 0
