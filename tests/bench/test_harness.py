"""The benchmark harness's own logic: summaries, ratios and the README table (no broker, no timing)."""

from __future__ import annotations

from bench.harness import fmt, summarize
from bench.table import render


def test_summarize_takes_min_median_max_and_ratios_of_medians() -> None:
    out = summarize({"tocsin.events_per_s": [90.0, 80.0, 100.0], "base.events_per_s": [100.0, 200.0, 150.0]},
                    {"r": ("tocsin.events_per_s", "base.events_per_s"), "missing": ("x", "base.events_per_s")})
    fig = out["figures"]["tocsin.events_per_s"]
    assert (fig["min"], fig["median"], fig["max"]) == (80.0, 90.0, 100.0)
    assert out["ratios"]["r"]["value"] == 90.0 / 150.0
    assert "missing" not in out["ratios"]


def test_fmt_reads_like_the_readme() -> None:
    assert fmt(76_412.0) == "76.4k"
    assert fmt(1_370_000.0) == "1.37M"
    assert fmt(502.4) == "502"
    assert fmt(0.0525) == "0.0525"


def test_table_has_a_row_per_present_figure_with_baseline_and_ratio() -> None:
    figs = {"tocsin.process_events_per_s": {"min": 70_000.0, "median": 80_000.0, "max": 85_000.0},
            "kafka_python.consume_decode_events_per_s": {"min": 1e5, "median": 1e5, "max": 1e5}}
    doc = {"quick": False, "environment": {"cpus": 2, "python": "3.11.7"},
           "benchmarks": {"processor": {"figures": figs}}}
    lines = render(doc).splitlines()
    assert "full sizes, medians of 3" in lines[0]
    rows = [line for line in lines if line.startswith("| processor")]
    assert rows == ["| processor: default rules, 10k series, mixed events (`processor`) | 80.0k events/s (70.0k-85.0k) "
                    "| kafka-python consume + decode: 100.0k | 0.80 | >= 0.8 |"]
    assert not any("(`sink`)" in line for line in lines)  # absent benchmarks are left out, not zero
