"""``python -m bench table FILE``: the README's performance table from a ``--json`` result.

One row per headline figure: tocsin's median (min-max over the repetitions),
the baseline measured in the same run, their ratio, and the target the issues
set. Printing it from the JSON keeps the README's numbers those of one run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import fmt


@dataclass(frozen=True)
class Row:
    label: str
    bench: str
    figure: str
    unit: str
    baseline: str | None = None
    baseline_label: str = ""
    target: str = ""


ROWS = [
    Row("log shipper: JSON lines -> LogEvents on Kafka", "ship", "tocsin.lines_per_s", "lines/s",
        "kcat.lines_per_s", "kcat -P (no parsing, no Avro)", ">= 50k lines/s"),
    Row("processor: default rules, 10k series, mixed events", "processor", "tocsin.process_events_per_s",
        "events/s", "kafka_python.consume_decode_events_per_s", "kafka-python consume + decode", ">= 0.8"),
    Row("the same, against consume + decode through tocsin's record reader", "processor",
        "tocsin.process_events_per_s", "events/s", "tocsin_reader.consume_decode_events_per_s",
        "tocsin reader consume + decode", "(the rules' own share)"),
    Row("peer: 1-minute sliding error count per service", "peer", "tocsin.events_per_s", "events/s",
        "quix.events_per_s", "Quix Streams, same job, same topic", ">= 1.0"),
    Row("ClickHouse sink: log events -> rows", "sink", "sink.rows_per_s", "rows/s",
        "baseline_min.rows_per_s", "min(direct insert, consume + decode)", ">= 100k rows/s"),
    Row("alert latency p99 beyond `for`, under load", "alert_latency", "tocsin.alert_latency_p99_ms", "ms",
        target="< 1000 ms"),
    Row("processor memory per series, 10x the events", "memory", "rss_bytes_per_series.10x", "bytes",
        "rss_bytes_per_series.1x", "same series at 1x", "about 1 (grows with series)"),
    Row("/health p99 at 200 req/s, processor live at 10k events/s", "health_load", "health.live_p99_ms", "ms",
        target="< 10 ms"),
    Row("events/s the processor handles meanwhile (10k/s offered, lag 0 at the end)", "health_load",
        "tocsin.live_events_per_s", "events/s", target=">= 9.5k (drop < 5 %)"),
    Row("saturated capacity with that /health load on it (stress figure)", "health_load",
        "tocsin.loaded_events_per_s", "events/s", "tocsin.baseline_events_per_s", "the same processor, no load"),
    Row("metrics agent CPU, 10 s interval, 2 watched processes", "agent_overhead",
        "projected_cpu_percent_at_10s_with_processes", "% of a core", target="< 1 %"),
]


def _cell(fig: dict[str, Any], unit: str) -> str:
    if fig["min"] == fig["max"]:
        return f"{fmt(fig['median'])} {unit}"
    return f"{fmt(fig['median'])} {unit} ({fmt(fig['min'])}-{fmt(fig['max'])})"


def render(doc: dict[str, Any]) -> str:
    """The markdown table (and a line naming the machine) for ``doc``."""
    env = doc.get("environment", {})
    extras = ", ".join(f"{name} {env[key]}" for key, name in (("fastavro", "fastavro"), ("chdb", "chdb"),
                                                                   ("quixstreams", "Quix Streams")) if key in env)
    lines = [
        f"{env.get('cpus', '?')} cores ({env.get('machine', '?')}), Python {env.get('python', '?')}, "
        f"kafka-python {env.get('kafka_python', '?')}, Apache Kafka {env.get('kafka_broker', '?')}"
        f"{', ' + extras if extras else ''}, "
        f"{'--quick, 1 repetition' if doc.get('quick') else 'full sizes, medians of 3'}; run {env.get('when', '?')}",
        "",
        "| stage | tocsin: median (min-max) | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        figures = doc.get("benchmarks", {}).get(row.bench, {}).get("figures", {})
        fig = figures.get(row.figure)
        if fig is None:
            continue
        base = figures.get(row.baseline) if row.baseline else None
        base_cell = f"{row.baseline_label}: {fmt(base['median'])}" if base else ""
        ratio = f"{fig['median'] / base['median']:.2f}" if base and base["median"] else ""
        lines.append(f"| {row.label} (`{row.bench}`) | {_cell(fig, row.unit)} | {base_cell} | {ratio} | {row.target} |")
    return "\n".join(lines)


def main(path: Path | None) -> int:
    if path is None:
        print("usage: python -m bench table RESULT.json")
        return 2
    print(render(json.loads(path.read_text())))
    return 0
