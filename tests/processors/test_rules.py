"""Rule files: validation naming the rule and the field, the seed's defaults, filters and aggregates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tocsin.core.errors import ConfigError, RuleError
from tocsin.processors.rules import CRITICAL, NONE, WARNING, load_rules, parse_duration, parse_rules

from .helpers import S, log, metric

SEED = {  # ALERT_THRESHOLDS of the seed's production monitoring guide
    "api_response_time": (500, 2000), "database_query_time": (100, 500), "memory_usage": (80, 95),
    "cpu_usage": (80, 95), "error_rate": (1, 5), "disk_usage": (85, 95),
}


def test_default_rules_are_the_seeds_thresholds():
    rules = load_rules()
    for name, (warning, critical) in SEED.items():
        spec = rules.by_name[name].spec
        assert (spec.warning, spec.critical) == (warning, critical), name
        assert "service" in spec.group_by
    assert rules.by_name["api_response_time"].spec.aggregate == "p95"
    assert rules.by_name["database_query_time"].spec.aggregate == "p95"
    err = rules.by_name["error_rate"].spec
    assert (err.source, err.aggregate, err.filter["level"]) == ("logs", "rate_per_min", ["ERROR", "CRITICAL"])
    assert "mount" in rules.by_name["disk_usage"].spec.group_by
    assert any(r.is_absence for r in rules.rules)


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("2d", 172800), (90, 90), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_every_problem_names_the_rule_and_the_field():
    bad = [
        {"name": "lat", "source": "metrics", "aggregate": "p95", "window": "5 parsecs", "warning": 1},
        {"name": "nosvc", "source": "metrics", "aggregate": "avg", "group_by": ["host"], "warning": 1},
        {"name": "logs_avg", "source": "logs", "aggregate": "avg", "critical": 3},
        {"name": "inverted", "source": "metrics", "aggregate": "max", "warning": 10, "critical": 5},
        {"name": "tmpl", "source": "metrics", "aggregate": "max", "warning": 1,
         "annotations": {"summary": "{{ value "}},
        {"name": "ratio", "source": "logs", "aggregate": "ratio", "warning": 0.1},
        {"name": "absent", "kind": "absence", "source": "metrics", "warning": 3},
        {"name": "typo", "source": "metrics", "aggregate": "max", "warning": 1, "resolve_afterr": "1m"},
        {"name": "lat", "source": "metrics", "aggregate": "max", "warning": 1},
    ]
    with pytest.raises(RuleError) as info:
        parse_rules(bad, "f.yaml")
    problems = "\n".join(info.value.problems)
    for needle in ("rules[0] (lat): window", "rules[1] (nosvc): group_by: must include service",
                   "rules[2] (logs_avg): aggregate", "rules[3] (inverted): critical",
                   "rules[4] (tmpl): annotations.summary", "rules[5] (ratio): numerator",
                   "rules[6] (absent): absent_for", "rules[6] (absent): warning", "rules[7] (typo): resolve_afterr",
                   "rules[8] (lat): name: duplicate"):
        assert needle in problems, needle
    assert isinstance(info.value, ConfigError)


def test_filters_exact_any_of_regex_and_not():
    rules = parse_rules([
        {"name": "r", "source": "logs", "filter": {"level": ["ERROR", "CRITICAL"], "logger~": "^shop\\.",
                                                   "host!": "canary"}, "aggregate": "count", "warning": 0}])
    accepts = rules.rules[0].accepts
    assert accepts(log(0, "ERROR", logger="shop.cart"))
    assert not accepts(log(0, "INFO", logger="shop.cart"))
    assert not accepts(log(0, "ERROR", logger="django"))
    assert not accepts(log(0, "ERROR", logger="shop.cart", host="canary"))


def test_group_by_reads_fields_and_labels():
    rule = parse_rules([{"name": "d", "source": "metrics", "filter": {"name": "disk_usage"}, "aggregate": "latest",
                         "group_by": ["service", "host", "mount"], "warning": 85}]).rules[0]
    assert rule.group_key(metric(0, 90, "disk_usage", mount="/var")) == ("shop", "h1", "/var")
    assert rule.group_key(metric(0, 90, "disk_usage")) == ("shop", "h1", "")


@pytest.mark.parametrize(("aggregate", "expected"), [
    ("count", 4.0), ("sum", 100.0), ("avg", 25.0), ("min", 10.0), ("max", 40.0), ("latest", 20.0),
    ("rate_per_min", 4 / 2),  # 4 samples in a 2-minute window
])
def test_each_aggregate_measures_the_window(aggregate, expected):
    spec = {"name": "r", "source": "metrics", "aggregate": aggregate, "window": "2m", "warning": 1}
    rule = parse_rules([spec]).rules[0]
    w = rule.new_window()
    for ts, v in ((1, 10.0), (2, 30.0), (4, 20.0), (3, 40.0)):
        w.add(ts * S, v)
    assert rule.measure(w, 5 * S) == pytest.approx(expected)


def test_ratio_of_errors_to_requests():
    rule = parse_rules([{"name": "r", "source": "logs", "filter": {"logger": "access"}, "aggregate": "ratio",
                         "numerator": {"level": ["ERROR", "CRITICAL"]}, "warning": 0.05, "critical": 0.2}]).rules[0]
    w = rule.new_window()
    for i in range(100):
        rec = log(i * S, "ERROR" if i % 10 == 0 else "INFO", logger="access")
        w.add(rec["ts"], 1.0, rule.is_numerator(rec))
    assert rule.measure(w, 99 * S) == pytest.approx(0.10)
    assert rule.level(w, 99 * S) == WARNING


def test_below_direction_and_levels():
    rule = parse_rules([{"name": "free", "source": "metrics", "aggregate": "latest", "direction": "below",
                         "warning": 20, "critical": 5}]).rules[0]
    w = rule.new_window()
    w.add(S, 50.0)
    assert rule.level(w, S) == NONE
    w.add(2 * S, 10.0)
    assert rule.level(w, 2 * S) == WARNING
    w.add(3 * S, 1.0)
    assert rule.level(w, 3 * S) == CRITICAL


def test_percentile_level_matches_the_reported_value():
    rule = parse_rules([{"name": "lat", "source": "metrics", "aggregate": "p95", "warning": 500,
                         "critical": 2000}]).rules[0]
    w = rule.new_window()
    for i in range(1000):
        w.add(i * 1000, 100.0 if i % 100 >= 6 else 900.0)  # 6 % slow: p95 is slow
    assert rule.level(w, S) == WARNING
    assert rule.measure(w, S) == pytest.approx(900, rel=0.01)


def test_fingerprint_is_stable_and_depends_on_group_labels():
    rule = parse_rules([{"name": "r", "source": "metrics", "aggregate": "max", "warning": 1}]).rules[0]
    assert rule.fingerprint(("a",)) == rule.fingerprint(("a",)) != rule.fingerprint(("b",))
    assert len(rule.fingerprint(("a",))) == 16


def _tocsin(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from tocsin.app.cli import main; sys.argv = ['tocsin', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_cli_rules_check_prints_rules_and_exits_2_on_a_bad_rule(tmp_path: Path):
    ok = _tocsin("rules", "check", "--json")
    assert ok.returncode == 0, ok.stderr
    assert '"name": "api_response_time"' in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: lat\n    source: metrics\n    aggregate: p96\n    warning: 1\n")
    res = _tocsin("rules", "check", str(bad))
    assert res.returncode == 2
    assert "rules[0] (lat): aggregate" in res.stderr
