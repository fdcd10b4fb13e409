"""Alertmanager receiver against a real Alertmanager (Debian's prometheus-alertmanager) on a free port.

The alert shows in Alertmanager's /api/v2/alerts while it fires; after the
resolve it leaves the list and Alertmanager itself announces it resolved
through its own webhook receiver (played by pytest-httpserver).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import (
    alert_event,
    produce_alerts,
    query,
    record,
    resolved_of,
    running_sink,
    wait_until,
)

notify_env = notify_support.notify_env  # the fixture

BINARY = "/usr/bin/prometheus-alertmanager"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path: Path, httpserver) -> Iterator[tuple[str, notify_support.Recorder]]:
    """A real Alertmanager whose own receiver is a webhook into the test's HTTP server."""
    binary = shutil.which("prometheus-alertmanager") or BINARY
    if not Path(binary).exists():
        pytest.fail("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    am_hook = record(httpserver, "/am-webhook")
    (tmp_path / "am.yml").write_text(
        "route:\n  receiver: hook\n  group_by: [alertname, service]\n"
        "  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {httpserver.url_for('/am-webhook')}\n"
        "        send_resolved: true\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.log", "wb"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout_s=30, what="Alertmanager ready")
        yield url, am_hook
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _alerts(url: str) -> list[dict]:
    return requests.get(f"{url}/api/v2/alerts", timeout=5).json()


def test_alert_shows_in_alertmanager_then_resolves(notify_env, alertmanager):
    url, am_hook = alertmanager
    cfg = notify_env({
        "receivers": [{"name": "am", "type": "alertmanager", "url": url}],
        "route": {"receiver": "am", "group_wait_s": 0.2, "group_interval_s": 0.2},
        "external_url": "http://tocsin.example",
    })
    ev = alert_event("error_rate", "shop", severity="critical", labels={"host": "web-1"})
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [ev])
        shown = wait_until(lambda: _alerts(url), what="the alert in Alertmanager")
        assert len(shown) == 1
        alert = shown[0]
        assert alert["labels"] == {"alertname": "error_rate", "service": "shop", "host": "web-1",
                                   "severity": "critical"}
        assert alert["status"]["state"] == "active"
        assert alert["annotations"]["summary"] == "error_rate high on shop"
        assert alert["annotations"]["tocsin_fingerprint"] == ev["fingerprint"]
        assert alert["generatorURL"] == f"http://tocsin.example/dashboard#alert-{ev['alert_id']}"
        assert alert["startsAt"].startswith(notify_support.iso_seconds(ev["started_at"]))

        produce_alerts(cfg, [resolved_of(ev)])
        wait_until(lambda: not _alerts(url), what="the alert to leave the active list")
        # Alertmanager itself saw it end: its webhook announces the resolve.
        resolved = wait_until(
            lambda: [b for b in am_hook.bodies() if b["status"] == "resolved"], what="Alertmanager's resolve")
        wait_until(sink.idle, what="settled")
    assert resolved[0]["alerts"][0]["labels"]["alertname"] == "error_rate"
    assert resolved[0]["alerts"][0]["status"] == "resolved"
    assert am_hook.bodies()[0]["status"] == "firing"
    assert query(cfg, "SELECT state, status, http_status FROM {log} ORDER BY ts") == [
        ("firing", "sent", 200), ("resolved", "sent", 200)]


def test_escalation_ends_the_warning_label_set(notify_env, alertmanager):
    url, _ = alertmanager
    cfg = notify_env({
        "receivers": [{"name": "am", "type": "alertmanager", "url": url}],
        "route": {"receiver": "am", "group_wait_s": 0.1, "group_interval_s": 0.1},
        "inhibit_rules": [],
    })
    warn = alert_event("p95_latency", "api", severity="warning")
    crit = alert_event("p95_latency", "api", severity="critical", previous_state="firing",
                       previous_severity="warning", started_at=warn["started_at"], alert_id=warn["alert_id"],
                       fingerprint=warn["fingerprint"], ts=warn["ts"] + 1000)
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [warn])
        wait_until(lambda: [a for a in _alerts(url) if a["labels"]["severity"] == "warning"], what="the warning")
        produce_alerts(cfg, [crit])
        wait_until(lambda: [a["labels"]["severity"] for a in _alerts(url)] == ["critical"],
                   what="only the critical label set active")
        wait_until(sink.idle, what="settled")
