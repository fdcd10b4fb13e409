"""``tocsin rules test``: promtool's rule test format through the production engine.

The notation and the runner are checked on their own, the shipped rule files'
tests are run, and the promtool oracle's own test files (certified by
``promtool test rules``) pass through ours with the Tocsin twin of the PromQL rule.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tocsin.core.errors import RuleError
from tocsin.processors.promtest import expand_values, parse_series, prom_duration, run_file

from .kafkaproc import REPO
from .test_oracle_promtool import CASES, PROMTOOL, STEP_S, _firing_at, _promtool, _series

RULES_DIR = REPO / "processors" / "rules"
CLI = "import sys; from tocsin.app.cli import main; sys.argv = ['tocsin', *sys.argv[1:]]; main()"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_expanding_notation_as_promtool_documents_it():
    assert expand_values("-2+4x3") == [-2, 2, 6, 10]
    assert expand_values(" 1-2x4") == [1, -1, -3, -5, -7]
    assert expand_values(" 1x4") == [1, 1, 1, 1, 1]
    assert expand_values(" 1 _x3 stale") == [1, None, None, None, None]
    assert expand_values("1.5e2 _ 3") == [150, None, 3]
    for bad in ("1+x3", "abc", "1x", "1+2y3"):
        with pytest.raises(ValueError):
            expand_values(bad)
    with pytest.raises(ValueError, match="more than"):
        expand_values("1x100000000")  # bounded: a typo must not allocate gigabytes


def test_series_and_durations():
    assert parse_series('cpu_usage{service="shop", host="h1"}') == ("cpu_usage", {"service": "shop", "host": "h1"})
    assert parse_series('{__name__="up", service="a\\"b"}') == ("up", {"service": 'a"b'})
    assert parse_series("up") == ("up", {})
    with pytest.raises(ValueError):
        parse_series('cpu{service=shop}')
    assert prom_duration("1h30m") == 5400 and prom_duration("500ms") == 0.5 and prom_duration(90) == 90
    with pytest.raises(ValueError):
        prom_duration("5 minutes")


@pytest.mark.parametrize("name", ["default_test.yaml", "demo_test.yaml"])
def test_the_shipped_rule_files_pass_their_tests(name):
    result = run_file(RULES_DIR / name)
    assert result.checks >= 8 and result.failures == [], "\n".join(f.render() for f in result.failures)


def test_cli_passes_and_a_mismatch_exits_1_with_a_readable_diff(tmp_path):
    ok = _cli("rules", "test", str(RULES_DIR / "default_test.yaml"), str(RULES_DIR / "demo_test.yaml"))
    assert ok.returncode == 0 and ok.stdout.count("SUCCESS") == 2, ok.stdout + ok.stderr
    test = yaml.safe_load((RULES_DIR / "default_test.yaml").read_text())
    test["rule_files"] = [str(RULES_DIR / "default.yaml")]
    cpu = next(t for t in test["tests"] if t["name"].startswith("CPU"))
    cpu["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["severity"] = "critical"  # it is a warning
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(test))
    bad = _cli("rules", "test", str(tmp_path / "t.yaml"))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "alertname cpu_usage, eval_time 9m" in bad.stdout
    assert "- expected, not firing: {category='resources', host='h1', service='shop', severity='critical'}" \
        in bad.stdout
    assert "+ firing, not expected: {category='resources', host='h1', service='shop', severity='warning'}" \
        in bad.stdout
    assert "FAILED" in bad.stdout and "1 failed" in bad.stdout


def test_a_bad_test_file_names_the_field(tmp_path):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "rule_files": [str(RULES_DIR / "default.yaml")],
        "tests": [{"input_series": [{"series": "cpu_usage{host=\"h\"}", "values": "1x3"}],
                   "alert_rule_test": [{"eval_time": "soon", "alertname": "cpu_usage"}]}]}))
    with pytest.raises(RuleError, match=r"tests\[0\]\.alert_rule_test\[0\]\.eval_time"):
        run_file(tmp_path / "t.yaml")
    data = yaml.safe_load((tmp_path / "t.yaml").read_text())
    data["tests"][0]["alert_rule_test"][0]["eval_time"] = "1m"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RuleError, match=r"input_series\[0\]: a series needs a service label"):
        run_file(tmp_path / "t.yaml")
    data["tests"][0]["alert_rule_test"][0]["alertname"] = "no_such_rule"
    data["tests"][0]["input_series"][0]["series"] = 'cpu_usage{service="s"}'
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RuleError, match="no_such_rule: no such rule"):
        run_file(tmp_path / "t.yaml")
    data["tests"][0]["promql_expr_test"] = []
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    assert _cli("rules", "test", str(tmp_path / "t.yaml")).returncode == 2  # Tocsin has no PromQL: rejected


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
@pytest.mark.parametrize("case", sorted(CASES))
def test_promtools_own_test_file_passes_with_the_tocsin_rule(tmp_path, case):
    """The oracle's test file, certified by promtool against the PromQL rule, passes ours against its twin."""
    ours, expr, for_s, keep_s = CASES[case]
    threshold = 75 if "avg" in expr else 80
    twin = {"name": "CpuHigh", "source": "metrics", "filter": {"name": "cpu_usage"},
            "group_by": ["service", "host"], "warning": threshold, **ours}
    values = _series(3)
    firing, _ = _firing_at(values, {**twin, "name": "cpu"})
    shifted = {t: firing.get(t - 3 * STEP_S, False) for t in firing}
    (tmp_path / "tocsin.yaml").write_text(yaml.safe_dump({"rules": [twin]}))
    for expect, passes in ((firing, True), (shifted, False)):
        assert (_promtool(tmp_path, values, expr, for_s, keep_s, expect).returncode == 0) is passes
        test = yaml.safe_load((tmp_path / "test.yml").read_text())
        test["rule_files"] = ["tocsin.yaml"]
        (tmp_path / "tocsin_test.yml").write_text(yaml.safe_dump(test))
        result = run_file(Path(tmp_path / "tocsin_test.yml"))
        assert result.checks == len(expect)
        assert (result.failures == []) is passes, "\n".join(f.render() for f in result.failures[:3])
