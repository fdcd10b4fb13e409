"""Acknowledgements: the engine's rules (pure, no broker), then through the API of a running processor.

End to end: ``POST /api/alerts/ack`` on a real ProcessorService, the acked
AlertEvent on the real alerts topic, the notify sink reading it and a real
webhook receiver (pytest-httpserver) that stops getting repeats while the
ack holds and gets them again after ``unack``; and the ack still there after
the processor is stopped and a new one restores from the compacted topic.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import requests

from tests.conftest import make_config, unique
from tests.kafkautil import consume_all
from tests.processors.test_http_e2e import AUTH, TOKEN, active_alert, free_port, inject_incident, running_processor
from tests.processors.test_http_e2e import wait_for as wait_http
from tests.sinks.notify.support import record, running_sink
from tocsin.core.events import ALERT_EVENT
from tocsin.core.kafka import create_topics
from tocsin.processors.ack import control_record
from tocsin.processors.alerts import AlertTracker
from tocsin.processors.engine import Engine
from tocsin.processors.rules import parse_rules
from tocsin.schemas.codec import default_codec

S = 1_000_000
T0 = 1_800_000_000 * S


def _engine() -> tuple[Engine, Any]:
    rules = parse_rules([{"name": "cpu", "source": "metrics", "filter": {"name": "cpu_usage"},
                          "aggregate": "latest", "window": "1m", "warning": 80, "critical": 95}])
    eng = Engine(rules, eval_interval_us=S, grace_us=5 * S, wall=lambda: T0 + 3600 * S)
    return eng, eng.add_partition("metrics", 0, "metrics")


def _feed(eng: Engine, ps: Any, t_s: float, value: float) -> list:
    eng.ingest(ps, "metrics", {"ts": T0 + int(t_s * S), "service": "shop", "host": "h", "name": "cpu_usage",
                               "value": value, "unit": "percent", "labels": {}})
    return eng.take_transitions()


def _cmd(action: str, alert_id: str, ts_s: float, **kw: Any) -> dict[str, Any]:
    return control_record(action, alert_id, alert_id.rpartition("-")[0], event_id=unique("c"),
                          ts=T0 + int(ts_s * S), actor=kw.pop("actor", "alice"), **kw)


def test_an_ack_is_a_transition_applied_once_and_an_old_ack_never_comes_back_after_unack():
    eng, ps = _engine()
    fired = [t for s in range(3) for t in _feed(eng, ps, s, 90.0)]
    alert_id = eng.open_records()[0]["alert_id"]
    ack = _cmd("ack", alert_id, 10, note="on it", expires_at=T0 + 600 * S)
    t = eng.acknowledge(ack)
    assert t is not None and (t.state, t.severity, t.previous_state) == ("firing", "warning", "firing")
    rec = t.as_record()
    assert (rec["acked_by"], rec["ack_note"], rec["acked_at"], rec["ack_expires_at"]) == (
        "alice", "on it", T0 + 10 * S, T0 + 600 * S)
    assert rec["ts"] > fired[0].ts and rec["event_id"] != fired[0].event_id
    assert eng.acknowledge(ack) is None  # the control topic re-read after a rebalance: not applied twice
    unack = eng.acknowledge(_cmd("unack", alert_id, 20, actor="bob"))
    assert unack is not None and unack.as_record()["acked_by"] is None
    assert eng.acknowledge(ack) is None  # the old ack, replayed after the unack, stays withdrawn
    assert eng.acknowledge(_cmd("unack", alert_id, 30)) is None  # nothing to withdraw: no transition
    assert eng.acknowledge(_cmd("ack", "nosuch-1", 40)) is None


def test_an_escalation_clears_the_ack_a_de_escalation_keeps_it_and_a_restore_adopts_it():
    eng, ps = _engine()
    for s in range(3):
        _feed(eng, ps, s, 90.0)
    alert_id = eng.open_records()[0]["alert_id"]
    acked = eng.acknowledge(_cmd("ack", alert_id, 5))
    assert acked is not None and eng.take_transitions() == [acked]
    escalated = _feed(eng, ps, 6, 99.0) + _feed(eng, ps, 7, 99.0)
    assert [(t.severity, t.as_record()["acked_by"]) for t in escalated] == [("critical", None)]
    assert eng.acknowledge(_cmd("ack", alert_id, 8, actor="carol")) in eng.take_transitions()
    out = []
    for s in range(9, 200):
        out += _feed(eng, ps, s, 90.0)
    deesc = [t for t in out if t.severity == "warning"]
    assert deesc and deesc[0].as_record()["acked_by"] == "carol"

    tr = AlertTracker(deesc[0].fingerprint)
    tr.restore(deesc[0].as_record())
    assert tr.ack is not None and tr.ack.by == "carol" and tr.ack_changed_at == T0 + 8 * S
    assert tr.apply_ack(T0, None, T0 + 8 * S) is None  # the restored tracker knows that command is applied


# ----------------------------------------------------------------------------- end to end


def _config(bootstrap: str, ch_url: str, webhook_url: str | None = None, **notify: Any):
    sections: dict[str, Any] = {
        "api": {"tokens": [{"name": "alice", "token": TOKEN, "scope": "operate"}],
                "http_addr": f"127.0.0.1:{free_port()}", "service_name": "ack-processor"},
        "processor": {"group_id": unique("ack"), "heartbeat_interval_s": 5.0},
    }
    if webhook_url:
        sections["notify"] = {
            "receivers": [{"name": "hook", "type": "webhook", "url": webhook_url}],
            "route": {"receiver": "hook", "group_by": ["service"], "group_wait_s": 0, "group_interval_s": 1,
                      "repeat_interval_s": 2.0},
            **notify}
    cfg = make_config(bootstrap, ch_url, **sections)
    create_topics(cfg.kafka)
    return cfg


def _post(url: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}{path}", headers=AUTH, json=body, timeout=60)


def _firing_at(rec: Any, since: float) -> int:
    return sum(1 for r in rec.requests if r.at > since and b'"status":"firing"' in r.body)


def _alert_events(cfg: Any, alert_id: str) -> list[dict[str, Any]]:
    codec = default_codec()
    out = []
    for m in consume_all(cfg.kafka, cfg.kafka.topics.alerts):
        name, ev = codec.decode(m.value)
        if name == ALERT_EVENT and ev["alert_id"] == alert_id:
            out.append(ev)
    return out


def test_ack_through_the_api_stops_repeats_at_a_webhook_and_unack_starts_them_again(
        kafka_bootstrap: str, clickhouse_url: str, httpserver: Any) -> None:
    hook = record(httpserver, "/hook")
    cfg = _config(kafka_bootstrap, clickhouse_url, httpserver.url_for("/hook"))
    with running_processor(cfg) as proc, running_sink(cfg):
        wait_http("healthy", lambda: requests.get(f"{proc.url}/health", timeout=5).status_code == 200, 90)
        svc = unique("pay")
        inject_incident(cfg, svc)
        alert = wait_http("the alert", lambda: active_alert(proc.url, svc), 90)
        assert alert["acked_by"] is None and alert["acked"] is False
        wait_http("repeats at the webhook (every 2 s)", lambda: _firing_at(hook, 0) >= 3, 90)

        r = _post(proc.url, "/api/alerts/ack", {"alert_id": alert["alert_id"], "note": "gateway <b>", "for_s": 3600,
                                                "actor": "mallory"})  # ignored: the token's name is the actor
        assert r.status_code == 202 and r.json() == {"alert_id": alert["alert_id"], "status": "accepted"}
        acked = wait_http("the ack in /api/alerts", lambda: (a := active_alert(proc.url, svc)) and a["acked"] and a)
        assert acked["acked_by"] == "alice" and acked["ack_note"] == "gateway <b>" and acked["ack_expires_at"]
        # The ack transition itself is notified once (it says who acked), then nothing while it holds.
        wait_http("the ack notification", lambda: any(b'"acknowledgement"' in q.body for q in hook.requests), 60)
        quiet_from = time.monotonic()
        time.sleep(7)  # three and a half repeat intervals: the absence of repeats is what is measured
        assert _firing_at(hook, quiet_from) == 0, "a repeat was sent while the alert was acked"

        assert _post(proc.url, "/api/alerts/unack", {"alert_id": alert["alert_id"], "actor": "bob"}).status_code == 202
        wait_http("the unack in /api/alerts", lambda: active_alert(proc.url, svc)["acked"] is False)
        unacked_at = time.monotonic()
        wait_http("repeats again after the unack", lambda: _firing_at(hook, unacked_at) >= 3, 60)

        events = _alert_events(cfg, alert["alert_id"])
        acks = [e for e in events if e["acked_by"] == "alice"]
        assert len(acks) == 1 and acks[0]["ack_note"] == "gateway <b>" and acks[0]["state"] == "firing"
        assert events[-1]["acked_by"] is None and events[-1]["ack_changed_at"] > acks[0]["ack_changed_at"]

        unknown = _post(proc.url, "/api/alerts/ack", {"alert_id": "nosuchfingerprint-1"})
        assert unknown.status_code == 404
        not_acked = _post(proc.url, "/api/alerts/unack", {"alert_id": alert["alert_id"]})
        assert not_acked.status_code == 409
        assert _post(proc.url, "/api/alerts/ack", {"alert_id": alert["alert_id"], "for_s": -5}).status_code == 422
        assert requests.post(f"{proc.url}/api/alerts/ack", json={"alert_id": alert["alert_id"]},
                             timeout=10).status_code == 401


def test_the_ack_survives_a_processor_restart_and_is_not_applied_twice(
        kafka_bootstrap: str, clickhouse_url: str) -> None:
    cfg = _config(kafka_bootstrap, clickhouse_url)
    svc = unique("cart")
    with running_processor(cfg) as proc:
        wait_http("healthy", lambda: requests.get(f"{proc.url}/health", timeout=5).status_code == 200, 90)
        inject_incident(cfg, svc)
        alert = wait_http("the alert", lambda: active_alert(proc.url, svc), 90)
        assert _post(proc.url, "/api/alerts/ack", {"alert_id": alert["alert_id"], "note": "n",
                                                   "actor": "mallory"}).status_code == 202  # the token names the actor
        wait_http("the ack", lambda: active_alert(proc.url, svc)["acked"])
    with running_processor(cfg) as again:
        restored = wait_http("the restored alert", lambda: active_alert(again.url, svc), 240)
        assert restored["alert_id"] == alert["alert_id"]
        assert restored["acked"] is True and restored["acked_by"] == "alice" and restored["ack_note"] == "n"
        with contextlib.suppress(AssertionError):  # give a wrongly re-applied ack the time to show up
            wait_http("a second ack transition", lambda: len(_acks(cfg, alert["alert_id"])) > 1, 8)
    assert len(_acks(cfg, alert["alert_id"])) == 1, "the restarted processor re-applied the ack"


def _acks(cfg: Any, alert_id: str) -> list[dict[str, Any]]:
    return [e for e in _alert_events(cfg, alert_id) if e["acked_by"]]
