"""Oracle: Prometheus' own rule engine (``promtool test rules``) and ours fire and resolve at the same times.

The same sample series goes to both. Our transitions are turned into
promtool expectations (firing or not at every evaluation instant), except
within one evaluation interval of one of our transitions (the tolerance the
issue allows); promtool then checks them against Prometheus' evaluation.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tocsin.processors.alerts import FIRING

from .helpers import T0, S, engine, metric, rules

PROMTOOL = shutil.which("promtool")
STEP_S = 10
POINTS = 90


def _series(seed: int) -> list[float]:
    """A random walk around the threshold: several crossings, some shorter than ``for``."""
    rng = random.Random(seed)
    v, out = 60.0, []
    for _ in range(POINTS):
        v = min(100.0, max(40.0, v + rng.choice([-15, -8, -3, 0, 3, 8, 15])))
        out.append(v)
    return out


def _firing_at(values: list[float], rule: dict) -> tuple[dict[int, bool], list[int]]:
    """Our engine over the samples: firing or not after each evaluation instant, and the transition instants."""
    eng = engine(rules(rule), eval_s=STEP_S, grace_s=STEP_S)
    ps = eng.add_partition("metrics", 0, "metrics")
    for i, v in enumerate(values):
        eng.ingest(ps, "metrics", metric(T0 + i * STEP_S * S, v, "cpu_usage"))
    eng.ingest(ps, "metrics", metric(T0 + POINTS * STEP_S * S + 1, 0.0, "other_metric"))  # closes the last instant
    changes = {(t.ts - T0) // S: t.state == FIRING for t in eng.take_transitions()}
    state, firing = False, {}
    for i in range(POINTS):
        state = changes.get(i * STEP_S, state)
        firing[i * STEP_S] = state
    return firing, sorted(changes)


def _promtool(tmp: Path, values: list[float], expr: str, for_s: int, keep_s: int,
              expect: dict[int, bool]) -> subprocess.CompletedProcess:
    rule = {"alert": "CpuHigh", "expr": expr, "for": f"{for_s}s", "labels": {"severity": "warning"}}
    if keep_s:
        rule["keep_firing_for"] = f"{keep_s}s"
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "oracle", "rules": [rule]}]}))
    labels = {"severity": "warning", "service": "shop", "host": "h1"}
    tests = [{
        "interval": f"{STEP_S}s",
        "input_series": [{"series": 'cpu_usage{service="shop",host="h1"}',
                          "values": " ".join(f"{v:g}" for v in values)}],
        "alert_rule_test": [{"eval_time": f"{t}s", "alertname": "CpuHigh",
                             "exp_alerts": [{"exp_labels": labels}] if on else []}
                            for t, on in sorted(expect.items())],
    }]
    (tmp / "test.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": f"{STEP_S}s",
                                                  "tests": tests}))
    return subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp, capture_output=True, text=True,
                          timeout=120)


CASES = {
    # name: (our rule, PromQL expression, for, keep_firing_for)
    "latest_for": ({"aggregate": "latest", "window": "5m", "slices": 30, "for": "30s"}, "cpu_usage > 80", 30, 0),
    "latest_for_hysteresis": ({"aggregate": "latest", "window": "5m", "slices": 30, "for": "20s",
                               "resolve_after": "30s"}, "cpu_usage > 80", 20, 30),
    # Prometheus 2.x ranges are closed, [t - 1m, t]: seven 10 s samples, i.e. our 70 s window in 10 s buckets.
    "avg_over_time": ({"aggregate": "avg", "window": "70s", "slices": 7, "for": "20s"},
                      "avg_over_time(cpu_usage[1m]) > 75", 20, 0),
}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_fires_and_resolves_when_prometheus_does(tmp_path, case, seed):
    ours, expr, for_s, keep_s = CASES[case]
    threshold = 75 if "avg" in expr else 80
    rule = {"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"}, "group_by": ["service", "host"],
            "warning": threshold, **ours}
    values = _series(seed)
    firing, transitions = _firing_at(values, rule)
    assert sum(firing.values()) >= 3 and len(transitions) >= 4, "the series must actually fire and resolve"
    near = {t + d for t in transitions for d in (-STEP_S, 0, STEP_S)}
    expect = {t: on for t, on in firing.items() if t not in near}
    assert len(expect) > POINTS // 2
    result = _promtool(tmp_path, values, expr, for_s, keep_s, expect)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same instants, exactly: no tolerance needed when samples and evaluations align.
    exact = _promtool(tmp_path, values, expr, for_s, keep_s, firing)
    assert exact.returncode == 0, exact.stdout + exact.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
def test_the_oracle_can_disagree(tmp_path):
    """A shifted expectation must fail: proves the comparison above is not vacuous."""
    ours, expr, for_s, keep_s = CASES["latest_for"]
    rule = {"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"}, "group_by": ["service", "host"],
            "warning": 80, **ours}
    values = _series(1)
    firing, _ = _firing_at(values, rule)
    shifted = {t: firing.get(t - 3 * STEP_S, False) for t in firing}
    assert _promtool(tmp_path, values, expr, for_s, keep_s, shifted).returncode != 0
