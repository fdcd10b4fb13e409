"""``tocsin notify test`` and ``tocsin silence`` as a user runs them: subprocesses, exit codes, real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import record, smtp_server

notify_env = notify_support.notify_env  # the fixture

ROOT = Path(__file__).resolve().parents[3]


def tocsin(*args: str, config: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tocsin"] + (["-c", str(config)] if config else []) + list(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _write(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "tocsin.yaml"
    data = json.loads(cfg.model_dump_json(by_alias=True, exclude={"source"}))
    for r in data["notify"]["receivers"]:  # SecretStr dumps masked: write the real values back
        for key in ("routing_key", "url", "password", "hmac_secret"):
            value = getattr(cfg.notify.receiver(r["name"]), key, None)
            if value is not None and hasattr(value, "get_secret_value"):
                r[key] = value.get_secret_value()
    path.write_text(yaml.safe_dump(data))
    return path


def test_notify_test_through_configured_receivers(notify_env, httpserver, tmp_path):
    hook = record(httpserver, "/hook")
    pd = record(httpserver, "/pd", default=202)
    cfg = notify_env({"receivers": [
        {"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")},
        {"name": "oncall", "type": "pagerduty", "url": httpserver.url_for("/pd"), "routing_key": "RK"}],
        "route": {"receiver": "hook"}})
    config = _write(tmp_path, cfg)
    one = tocsin("notify", "test", "--receiver", "hook", config=config)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "hook (webhook) firing: sent after 1 attempt(s) [HTTP 200]"
    body = hook.bodies()[0]
    assert body["receiver"] == "hook" and body["alerts"][0]["labels"]["alertname"] == "tocsin_test_notification"
    every = tocsin("notify", "test", config=config)
    assert every.returncode == 0, every.stderr
    assert hook.count() == 2
    # PagerDuty gets the trigger and, at once, its resolve: the test pages nobody for long.
    assert [b["event_action"] for b in pd.bodies()] == ["trigger", "resolve"]
    assert len({b["dedup_key"] for b in pd.bodies()}) == 1
    unknown = tocsin("notify", "test", "--receiver", "nope", config=config)
    assert unknown.returncode == 2 and "unknown receiver(s) nope" in unknown.stderr


def test_ad_hoc_receivers_and_exit_1_when_delivery_finally_fails(httpserver, tmp_path):
    ok = record(httpserver, "/ok")
    down = record(httpserver, "/down", default=503)
    slack = record(httpserver, "/services/T/B/secret")
    assert tocsin("notify", "test", "--webhook", httpserver.url_for("/ok")).returncode == 0
    assert ok.count() == 1
    res = tocsin("notify", "test", "--slack", httpserver.url_for("/services/T/B/secret"))
    assert res.returncode == 0 and slack.bodies()[0]["text"].startswith("[TEST]")
    failed = tocsin("notify", "test", "--webhook", httpserver.url_for("/down"), "--attempts", "2")
    assert failed.returncode == 1
    assert "failed after 2 attempt(s) [HTTP 503]" in failed.stdout
    assert "not delivered to: ad-hoc-webhook" in failed.stderr
    assert down.count() == 2
    missing_key = tocsin("notify", "test", "--pagerduty", httpserver.url_for("/pd"))
    assert missing_key.returncode == 2 and "--routing-key" in missing_key.stderr
    with smtp_server(tmp_path, "none") as smtp:
        mail = tocsin("notify", "test", "--smtp", f"127.0.0.1:{smtp.port}", "--to", "ops@example.com")
        assert mail.returncode == 0, mail.stderr + mail.stdout
        assert smtp.inbox[0].rcpt_tos == ["ops@example.com"]
        assert smtp.inbox[0].message()["Subject"].startswith("[TEST] [FIRING:1] tocsin")


def test_silence_add_list_expire_round_trip_through_the_control_topic(notify_env, tmp_path):
    cfg = notify_env({})
    config = _write(tmp_path, cfg)
    added = tocsin("silence", "add", "--matcher", "service=shop", "--matcher", "severity=~warning|critical",
                   "--duration", "2h", "--reason", "deploy 4.2", "--author", "ops", config=config)
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[0]
    listed = tocsin("silence", "list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    [s] = json.loads(listed.stdout)
    assert s["id"] == silence_id and s["reason"] == "deploy 4.2" and s["actor"] == "ops"
    assert s["matchers"] == ['service="shop"', 'severity=~"warning|critical"']
    assert 7199 <= (s["ends_at_us"] - s["starts_at_us"]) / 1e6 <= 7201
    assert tocsin("silence", "expire", silence_id, config=config).returncode == 0
    assert tocsin("silence", "list", config=config).stdout.strip() == "no active silences"
    again = tocsin("silence", "expire", silence_id, config=config)
    assert again.returncode == 2 and "no active silence" in again.stderr
    bad = tocsin("silence", "add", "--matcher", "service=shop", "--duration", "2 weeks", "--reason", "x",
                 config=config)
    assert bad.returncode == 2 and "duration" in bad.stderr
