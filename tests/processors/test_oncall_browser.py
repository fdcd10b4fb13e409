"""The on-call pages in a real browser (Debian's headless Chromium through Playwright) on a running processor.

Ack from the dashboard's button until the row says acked; a silence created
with the silence page's form and listed; the alert page with its transitions
and, from a real notify sink's log (a webhook failing once), its notifications
per receiver; and, from what a real ClickHouse sink stored, the rule's value with its thresholds drawn and
the service's error lines around the start. Screenshots go to ``test-artifacts/oncall-*.png``.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import unique
from tests.processors.test_dashboard_browser import ARTIFACTS, page  # noqa: F401  (the fixture)
from tests.processors.test_http_e2e import AUTH, TOKEN, Running, active_alert, inject_incident, wait_for
from tests.sinks.clickhouse.test_sink import running as running_store_sink
from tests.sinks.notify.support import record, running_sink, wait_until
from tocsin.sinks.clickhouse.sink import ClickHouseSink
from tocsin.sinks.notify.config import NotifyConfig

pytestmark = pytest.mark.browser


def _log_in(page, url: str) -> None:  # noqa: F811
    page.goto(url)
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#token", TOKEN)
    page.click("#login-button")
    page.wait_for_selector("#main", state="visible")


def test_ack_from_the_dashboard_shows_acked(oncall_proc: Running, page) -> None:  # noqa: F811
    svc = unique("payments")
    inject_incident(oncall_proc.cfg, svc)
    alert = wait_for("the error_rate alert", lambda: active_alert(oncall_proc.url, svc))
    _log_in(page, f"{oncall_proc.url}/dashboard")
    row = f'#active-alerts tbody tr[data-alert-id="{alert["alert_id"]}"]'
    page.wait_for_selector(row, timeout=30_000)
    page.once("dialog", lambda d: d.accept("on it: gateway"))
    page.click(f"{row} button.ack-button")
    page.wait_for_selector(f"{row} .ack", timeout=30_000)
    assert "acked by admin: on it: gateway" in page.inner_text(f"{row} .ack")
    assert page.inner_text(f"{row} button.ack-button") == "Unack"
    assert active_alert(oncall_proc.url, svc)["acked_by"] == "admin"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "oncall-dashboard-acked.png"), full_page=True)


def test_the_silence_page_creates_a_silence_and_lists_it(oncall_proc: Running, page) -> None:  # noqa: F811
    svc = unique("search")
    _log_in(page, f"{oncall_proc.url}/dashboard/silences?matcher=service%3D{svc}&matcher=rule%3Derror_rate")
    assert page.input_value("#matchers") == f"service={svc}\nrule=error_rate"
    page.fill("#duration", "90m")
    page.fill("#comment", "deploy <b>4.2</b>")
    page.click("#silence-submit")
    wait_for("the silence created", lambda: page.inner_text("#silence-status").startswith("Silence "))
    sid = page.inner_text("#silence-status").split()[1]
    row = f'#silence-list tbody tr[data-silence-id="{sid}"]'
    page.wait_for_selector(row, timeout=30_000)
    text = page.inner_text(row)
    assert f'service="{svc}"' in text and "active" in text and "admin" in text and "deploy <b>4.2</b>" in text
    assert page.locator("#silence-list b").count() == 0  # the comment is text
    listed = requests.get(f"{oncall_proc.url}/api/silences", headers=AUTH, timeout=30).json()["silences"]
    assert [s["comment"] for s in listed if s["id"] == sid] == ["deploy <b>4.2</b>"]
    page.fill("#comment", "")
    page.click("#silence-submit")  # a second one, then a bad one: the reason is shown
    wait_for("the second silence", lambda: page.inner_text("#silence-status").split()[:2] not in (["Silence", sid], []))
    second = page.inner_text("#silence-status").split()[1]
    page.wait_for_selector(f'#silence-list tbody tr[data-silence-id="{second}"]', timeout=30_000)
    assert page.locator("#silence-list tbody tr").count() == 2
    page.fill("#matchers", "service")
    page.click("#silence-submit")
    wait_for("the refusal", lambda: page.inner_text("#silence-status").startswith("Not created"))
    assert "matchers[0]" in page.inner_text("#silence-status")
    page.wait_for_selector("#silence-submit:enabled", timeout=30_000)  # the list reloaded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "oncall-silences.png"), full_page=True)


def test_the_alert_page_shows_transitions_notifications_value_and_error_lines(oncall_proc: Running, page,  # noqa: F811
                                                                              httpserver) -> None:
    svc = unique("checkout")
    rec = record(httpserver, "/hook", script=[503])  # fails once, then succeeds
    record(httpserver, "/other")  # the other tests' alerts, restored as firing, go there
    notify = NotifyConfig.model_validate({
        "receivers": [{"name": "oncall-hook", "type": "webhook", "url": httpserver.url_for("/hook"),
                       "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
                      {"name": "other", "type": "webhook", "url": httpserver.url_for("/other")}],
        "route": {"receiver": "other", "group_wait_s": 0.2, "group_interval_s": 0.3,
                  "routes": [{"matchers": [f"service={svc}"], "receiver": "oncall-hook"}]}})
    cfg = oncall_proc.cfg.model_copy(update={"notify": notify})
    with running_store_sink(ClickHouseSink(cfg)), running_sink(cfg) as sink:
        # transitions produced before the sink has its partitions are read as restored state, not notified
        wait_until(lambda: sink.stats().get("rebalances", 0) >= 1, timeout_s=60, what="the notify sink assigned")
        inject_incident(oncall_proc.cfg, svc)
        alert = wait_for("the error_rate alert", lambda: active_alert(oncall_proc.url, svc))
        wait_until(lambda: rec.count() >= 2, timeout_s=60, what="the retry and the success")
        wait_until(sink.idle, what="settled")
        context = f"{oncall_proc.url}/api/alerts/{alert['alert_id']}/context"

        def stored_context() -> dict | None:
            r = requests.get(context, headers=AUTH, timeout=30)
            doc = r.json() if r.status_code == 200 else None
            return doc if doc and doc["series"]["points"] and (doc["logs"]["before"] or doc["logs"]["after"]) else None

        stored = wait_for("the alert and its error lines in ClickHouse", stored_context, timeout_s=120)
    assert stored["series"]["source"] == "log_counts_1m"
    assert max(v for _, v in stored["series"]["points"]) >= 5.0  # 40 errors in 8 s: 8 a minute over 5 minutes

    _log_in(page, f"{oncall_proc.url}/dashboard/alerts/{alert['alert_id']}")
    page.wait_for_selector("#timeline tbody tr", timeout=30_000)
    assert "inactive \u2192 firing" in page.inner_text("#timeline")
    assert "firing: warning \u2192 critical" in page.inner_text("#timeline")
    receiver = '#notifications div[data-receiver="oncall-hook"]'
    page.wait_for_selector(f"{receiver} tbody tr.status-sent", timeout=30_000)
    text = page.inner_text(receiver)
    assert "attempt 1 failed (HTTP 503: status 503); retrying" in text and "sent (attempt 2, HTTP 200)" in text
    critical = '#value-chart svg line.threshold[data-severity="critical"]'
    page.wait_for_selector(critical, state="attached", timeout=30_000)  # a flat line has no area: not "visible"
    assert page.get_attribute(critical, "data-value") == "5"  # the rule's critical threshold
    assert page.locator('#value-chart svg line.threshold[data-severity="warning"]').count() == 1
    assert page.locator("#value-chart svg polyline.value").count() == 1
    assert "per minute over 5 min" in page.inner_text("#chart-what")
    page.wait_for_selector("#error-logs tbody tr", timeout=30_000)
    assert "payment gateway timeout" in page.inner_text("#error-logs tbody")
    assert page.locator("#error-logs tbody tr").count() <= 40  # 20 before and 20 after the start at most
    assert page.inner_text("#logs-query").startswith("SELECT ts, level, host, logger, message")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "oncall-alert.png"), full_page=True)
