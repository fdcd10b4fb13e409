"""``tocsin why``: the real notify sink logs a retry, a success and a silenced resolve; the CLI explains them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.sinks.notify.support import (
    alert_event,
    notify_env,
    produce_alerts,
    query,
    record,
    resolved_of,
    running_sink,
    wait_until,
)
from tests.sinks.notify.test_cli import _write
from tocsin.app.cli.app import app
from tocsin.sinks.notify import why
from tocsin.sinks.notify.config import MatcherSpec
from tocsin.sinks.notify.silences import create_event, publish

__all__ = ["notify_env"]  # the fixture, imported for pytest


def test_why_shows_the_retry_the_success_and_the_silence(notify_env, httpserver, tmp_path):
    rec = record(httpserver, "/hook", script=[500])  # fails once, then succeeds
    cfg = notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook"),
                       "backoff_initial_s": 0.05, "backoff_max_s": 0.2}],
        "route": {"receiver": "hook", "group_wait_s": 0.2, "group_interval_s": 0.3},
    })
    ev = alert_event("error_rate", "shop", severity="critical")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [ev])
        wait_until(lambda: rec.count() >= 2, what="the retry and the success")
        wait_until(sink.idle, what="settled")

    silence = create_event([MatcherSpec.parse("service=shop")], 3600, "deploy\x1b[31m", "alice")
    publish(cfg.kafka, cfg.kafka.topics.silences, silence)
    with running_sink(cfg) as sink:  # reads the silence at start, then the resolve
        produce_alerts(cfg, [resolved_of(ev)])
        wait_until(lambda: query(cfg, "SELECT 1 FROM {log} WHERE status = 'silenced'"), what="the silenced resolve")
        wait_until(sink.idle, what="settled")
    assert rec.count() == 2

    result = CliRunner().invoke(app, ["-c", str(_write(tmp_path, cfg)), "why", ev["alert_id"]])
    assert result.exit_code == 0, result.output
    out = result.output
    lines = [line.strip() for line in out.splitlines()]
    assert lines[1] == "hook:"
    assert "firing (critical)" in lines[2] and "attempt 1 failed (HTTP 500" in lines[2] and "retrying" in lines[2]
    assert "firing (critical)" in lines[3] and lines[3].endswith("sent (attempt 2, HTTP 200)")
    assert "resolved (critical)" in lines[4] and lines[4].endswith(f"silenced: silence {silence['silence_id']}")
    assert len(lines) == 5

    as_json = CliRunner().invoke(app, ["-c", str(_write(tmp_path, cfg)), "why", ev["alert_id"], "--json"])
    items = json.loads(as_json.output)["receivers"]["hook"]
    assert [(i["status"], i["attempt"]) for i in items] == [("retrying", 1), ("sent", 2), ("silenced", 0)]

    nothing = CliRunner().invoke(app, ["-c", str(_write(tmp_path, cfg)), "why", "nope-1"])
    assert nothing.exit_code == 0 and "no notification logged for nope-1" in nothing.output


def test_decisions_escape_control_characters_and_name_the_cause():
    base = {"ts": 0, "alert_event_id": "e", "state": "firing", "severity": "critical", "receiver": "r\x1b[2J",
            "receiver_type": "webhook", "http_status": 0, "error": "", "group_key": "root:abc"}
    assert why.decision({**base, "status": "failed", "attempt": 5, "error": "boom\n\x1b[31mred"}) == \
        "failed after 5 attempts (boom\\x0a\\x1b[31mred)"
    assert why.decision({**base, "status": "muted", "attempt": 0, "error": "mute_time_interval night"}) == \
        "muted by mute_time_interval night"
    assert why.decision({**base, "status": "inhibited", "attempt": 0, "error": "a more severe alert fires"}) == \
        "inhibited: a more severe alert fires"
    assert why.decision({**base, "status": "sent", "attempt": 1, "http_status": 202,
                         "group_key": "root.escalation:abc"}) == "escalated: sent (attempt 1, HTTP 202)"
    assert list(why.explain([{**base, "status": "sent", "attempt": 1}])) == ["r\\x1b[2J"]


def test_the_notifications_route_is_503_with_the_reason_where_the_store_is_not_mounted():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    api = FastAPI()
    api.include_router(why.notifications_router(None, lambda scope: lambda: None))  # no auth in this app
    answer = TestClient(api).get("/api/alerts/fp-1/notifications")
    assert answer.status_code == 503 and "tocsin why ALERT_ID" in answer.json()["detail"]
