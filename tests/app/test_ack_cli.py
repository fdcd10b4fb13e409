"""`tocsin ack` / `unack` publish ControlEvents on the real control topic; `tocsin alerts` shows the ack."""

from __future__ import annotations

import json
from pathlib import Path

from tests.app.test_ops_cli import _alert, _cli
from tests.kafkautil import consume_all, produce
from tocsin.core.events import ALERT_EVENT, now_us
from tocsin.schemas.codec import default_codec


def test_ack_and_unack_publish_control_events_and_alerts_show_who_acked(tocsin_config, tmp_path: Path,
                                                                        monkeypatch) -> None:
    cfg = tocsin_config
    monkeypatch.setenv("COLUMNS", "300")  # the whole table on one line per alert
    t0 = now_us()
    acked = {**_alert("fp-c", "firing", "critical", t0 + 5, t0, "checkout"), "acked_by": "alice",
             "acked_at": t0 + 5, "ack_note": "rolling back\x1b[2J", "ack_expires_at": None, "ack_changed_at": t0 + 5}
    produce(cfg.kafka, cfg.kafka.topics.alerts, ALERT_EVENT, [
        _alert("fp-a", "firing", "warning", t0, t0, "checkout"),
        _alert("fp-b", "resolved", "warning", t0 + 30, t0 + 20, "payments"),
        acked,
    ], key_field="fingerprint")

    table = _cli(cfg, tmp_path, "alerts")
    assert table.returncode == 0 and "acked by alice" in table.stdout.replace("\n", " ")
    assert "\x1b[2J" not in table.stdout and "\\x1b" in table.stdout  # the note cannot drive the terminal
    rows = {a["fingerprint"]: a for a in json.loads(_cli(cfg, tmp_path, "alerts", "--json").stdout)}
    assert rows["fp-c"]["acked_by"] == "alice" and rows["fp-a"]["acked_by"] is None

    done = _cli(cfg, tmp_path, "ack", f"fp-a-{t0}", "--note", "looking", "--for", "2h", "--actor", "bob")
    assert done.returncode == 0, done.stderr
    closed = _cli(cfg, tmp_path, "ack", f"fp-b-{t0 + 20}")
    assert closed.returncode == 1 and "resolved" in closed.stderr
    assert _cli(cfg, tmp_path, "ack", "nope").returncode == 1
    assert _cli(cfg, tmp_path, "ack", f"fp-a-{t0}", "--for", "soon").returncode == 2
    not_acked = _cli(cfg, tmp_path, "unack", f"fp-a-{t0}")
    assert not_acked.returncode == 0 and "not acknowledged" in not_acked.stdout
    assert _cli(cfg, tmp_path, "unack", f"fp-c-{t0}", "--actor", "carol").returncode == 0

    controls = [default_codec().decode(m.value)[1] for m in consume_all(cfg.kafka, cfg.kafka.topics.control, 2)]
    controls.sort(key=lambda c: c["action"])  # keyed by fingerprint: two partitions, no order between them
    assert [(c["action"], c["alert_id"], c["actor"]) for c in controls] == [
        ("ack", f"fp-a-{t0}", "bob"), ("unack", f"fp-c-{t0}", "carol")]
    ack = controls[0]
    assert ack["reason"] == "looking" and ack["fingerprint"] == "fp-a"
    assert 7190e6 < ack["ends_at"] - ack["ts"] < 7210e6
