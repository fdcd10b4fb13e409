"""``python -m bench plot FILE``: draw a ``--json`` result as a chart for the README.

One panel per benchmark: the median of each throughput figure (``*_per_s``)
as a horizontal bar with its min-max range, so a figure and its baseline sit
side by side. Writes ``FILE`` with ``.svg`` (and ``.png``) beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

THROUGHPUT = ("events_per_s", "lines_per_s", "rows_per_s")
BASELINES = ("kcat.", "kafka_python.", "tocsin_reader.", "quix.", "direct_insert.", "consume_decode.")
"""Figures drawn grey: what tocsin is measured against (blue) in the same run."""


def main(path: Path | None) -> int:
    if path is None:
        print("usage: python -m bench plot RESULT.json")
        return 2
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files
    import matplotlib.pyplot as plt

    doc = json.loads(path.read_text())
    panels = []
    for name, result in doc["benchmarks"].items():
        figs = {k: v for k, v in result["figures"].items()
                if k.endswith(THROUGHPUT) and not k.startswith(("load.", "baseline_min."))}
        if figs:
            panels.append((name, figs))
    if not panels:
        print(f"{path}: no throughput figures to plot")
        return 1
    height = sum(0.45 * len(f) + 0.9 for _, f in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, max(2.5, height)), squeeze=False)
    for ax, (name, figs) in zip(axes[:, 0], panels, strict=True):
        labels = list(figs)
        med = [figs[k]["median"] for k in labels]
        err = [[figs[k]["median"] - figs[k]["min"] for k in labels],
               [figs[k]["max"] - figs[k]["median"] for k in labels]]
        colors = ["#999999" if k.startswith(BASELINES) else "#4C72B0" for k in labels]
        ax.barh(labels, med, xerr=err, color=colors, capsize=3)
        ax.invert_yaxis()
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_xlabel("per second (median, min-max)")
        for y, (v, k) in enumerate(zip(med, labels, strict=True)):
            ax.text(figs[k]["max"], y, f"  {v:,.0f}", va="center", fontsize=8)  # right of the range bar
        ax.set_xlim(0, max(figs[k]["max"] for k in labels) * 1.22)  # room for the labels
    env = doc.get("environment", {})
    fig.suptitle(f"Tocsin benchmarks: {env.get('cpus', '?')} cores, Python {env.get('python', '?')}, "
                 f"Kafka {env.get('kafka_broker', '?')}", fontsize=10)
    fig.tight_layout()
    out = path.with_suffix(".svg")
    fig.savefig(out)
    fig.savefig(path.with_suffix(".png"), dpi=110)
    print(f"wrote {out} and {path.with_suffix('.png')}")
    return 0
