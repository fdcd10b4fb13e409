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


def test_why_explains_not_routed_dropped_and_already_sent_before_a_restart(notify_env, httpserver, tmp_path):
    rec = record(httpserver, "/hook")
    cfg = notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook"), "max_alerts": 1}],
        "route": {"receiver": "hook", "matchers": ["team!=storage"], "group_by": ["rule"], "group_wait_s": 0.3,
                  "group_interval_s": 0.3, "send_resolved": False},
    })
    shop, cart = alert_event("error_rate", "shop"), alert_event("error_rate", "cart")
    disk = alert_event("disk_usage", "db", labels={"team": "storage"})  # no route matches it
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [shop, cart, disk])
        wait_until(lambda: rec.count() >= 1, what="the notification")
        wait_until(sink.idle, what="settled")
        produce_alerts(cfg, [resolved_of(shop)])  # send_resolved is off: dropped
        wait_until(lambda: query(cfg, "SELECT 1 FROM {log} WHERE status = 'dropped' AND state = 'resolved'"),
                   what="the dropped resolve")
        wait_until(sink.idle, what="settled")
    (body,) = rec.bodies()
    assert body["truncatedAlerts"] == 1 and len(body["alerts"]) == 1
    told = body["alerts"][0]["fingerprint"]
    told_ev, cut_ev = (shop, cart) if told == shop["fingerprint"] else (cart, shop)

    # The same transitions read again by a sink whose commits are gone (a new group: a restart that lost them)
    again = cfg.model_copy(update={"notify": cfg.notify.model_copy(update={"group_id": cfg.notify.group_id + "-2"})})
    with running_sink(again) as sink:
        wait_until(lambda: len(query(cfg, "SELECT 1 FROM {log} WHERE status = 'already_sent'")) >= 3,
                   what="the restart check's skips")
        wait_until(sink.idle, what="settled")
    assert rec.count() == 1  # nothing sent twice, nothing cut sent later

    def why_of(ev):
        result = CliRunner().invoke(app, ["-c", str(_write(tmp_path, cfg)), "why", ev["alert_id"]])
        assert result.exit_code == 0, result.output
        return [line.strip() for line in result.output.splitlines()]

    lines = why_of(told_ev)
    assert lines[1] == "hook:" and lines[2].endswith("sent (attempt 1, HTTP 200)")
    assert any(x.endswith("already sent before a restart (the restart check skipped it)") for x in lines[3:])
    if told_ev is shop:
        assert any("resolved" in x and x.endswith("dropped: send_resolved is off") for x in lines)
    lines = why_of(cut_ev)
    assert lines[2].endswith("dropped: left out of the payload: max_alerts 1 (counted in truncatedAlerts)")
    assert any(x.endswith("already sent before a restart (the restart check skipped it)") for x in lines[3:])
    lines = why_of(disk)
    assert lines[1] == f"{why.NO_RECEIVER}:"
    assert lines[2].endswith("not routed: no route matched its labels") and len(lines) == 4  # once per sink run
