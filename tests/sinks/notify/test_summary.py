"""The daily summary against the real store and a real SMTP server: the report of the day, by email, once a day."""

from __future__ import annotations

import datetime as dt

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import smtp_server, wait_until
from tocsin.core.clickhouse import connect
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.notify.log import NotificationLog
from tocsin.sinks.notify.summary import SummaryScheduler, day_key, previous_due, render_summary

notify_env = notify_support.notify_env  # the fixture

DAY = 86400
US = 1_000_000


def _due() -> float:
    """Today's 07:00 UTC, or yesterday's before then: a due time in the past."""
    now = dt.datetime.now(dt.UTC)
    due = now.replace(hour=7, minute=0, second=0, microsecond=0)
    if due > now:
        due -= dt.timedelta(days=1)
    return due.timestamp()


def _seed(client, db: str, end: float) -> None:
    """Two days of history: the summary's day [end-24h, end) and the day before, with known figures."""
    cur, prev = end - DAY + 3600, end - 2 * DAY + 3600
    metrics, logs = [], []
    for day, n_shop, n_cart, latency in ((cur, 120, 30, 200.0), (prev, 60, 30, 100.0)):
        for i in range(n_shop):
            metrics.append([f"m-shop-{day}-{i}", int((day + i) * US), "shop", "web-1", "api_response_time", latency])
        for i in range(n_cart):
            metrics.append([f"m-cart-{day}-{i}", int((day + i) * US), "cart", "web-2", "api_response_time", 50.0])
    for day, errors in ((cur, 12), (prev, 4)):
        for i in range(errors):
            logs.append([f"l-{day}-{i}", int((day + 60 + i) * US), "shop", "web-1", "ERROR", "shop.views",
                         f"Timeout talking to payments after {3000 + i} ms"])
    client.insert(f"`{db}`.metrics", metrics, column_names=["event_id", "ts", "service", "host", "name", "value"])
    client.insert(f"`{db}`.logs", logs, column_names=["event_id", "ts", "service", "host", "level", "logger",
                                                      "message"])
    fired, resolved = int((cur + 600) * US), int((cur + 600 + 1800) * US)
    cols = ["event_id", "ts", "alert_id", "fingerprint", "rule", "service", "severity", "previous_severity", "state",
            "previous_state", "started_at", "resolved_by"]
    client.insert(f"`{db}`.alerts", [
        ["a1", fired, "fp1-1", "fp1", "error_rate", "shop", "critical", "none", "firing", "pending", fired, ""],
        ["a2", resolved, "fp1-1", "fp1", "error_rate", "shop", "none", "critical", "resolved", "firing", fired,
         "auto"],
    ], column_names=cols)
    client.insert(f"`{db}`.health_checks", [
        [f"h-{i}", int((cur + 900 + i) * US), "db", "web-1", "database", "unhealthy", "connection refused"]
        for i in range(2)
    ], column_names=["event_id", "ts", "service", "host", "check", "status", "error"])


def test_daily_summary_email_with_text_and_inline_charts_sent_once_per_day(notify_env, tmp_path):
    due = _due()
    with smtp_server(tmp_path, "starttls") as smtp:
        cfg = notify_env({}, monitoring_summary_recipients=["ops@example.com", "cto@example.com"],
                         summary={"smtp": smtp.smtp_config("starttls"), "output_dir": str(tmp_path / "out")})
        client = connect(cfg.clickhouse)
        migrate(client, cfg.clickhouse.database)
        _seed(client, cfg.clickhouse.database, due)
        log = NotificationLog(client, cfg.clickhouse.database)
        # Started after the due time with nothing sent yet: the day's summary goes out at once (catch-up).
        scheduler = SummaryScheduler(cfg, log, clock=lambda: due + 5)
        scheduler.start()
        wait_until(lambda: scheduler.sent, timeout_s=30, what="the caught-up summary")
        scheduler.close()
        assert scheduler.sent == [day_key(due)]
        assert scheduler.run_if_missing(due) is None, "the log says today's went out"
        # A restart later that day catches up nothing: the summary is already in the log.
        later = SummaryScheduler(cfg, log, clock=lambda: due + 3600)
        assert previous_due(later.schedule, due + 3600) == due
        assert later.run_if_missing(previous_due(later.schedule, due + 3600)) is None
        assert len(smtp.inbox) == 1
        mail = smtp.inbox[0]
    assert mail.rcpt_tos == ["ops@example.com", "cto@example.com"]
    msg = mail.message()
    day = dt.datetime.fromtimestamp(due, dt.UTC).date().isoformat()
    assert msg["Subject"] == (f"[tocsin] Tocsin daily summary {day}: 150 requests (+67 %), 12 errors (+200 %), "
                              "1 alerts, 2 health failures")
    assert msg["To"] == "ops@example.com, cto@example.com"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert text.startswith("Tocsin daily summary")
    assert "shop" in text and "cart" in text
    assert "fired 1" in text and "MTTR 30.0 min" in text
    assert "Timeout talking to payments after <n> ms" in text
    assert "[db] database: 2 unhealthy" in text
    assert html.count("<svg") >= 3, "inline charts"
    assert "<img" not in html and "http" not in html.split("<body", 1)[1].split("xmlns")[0]
    rows = client.query(f"SELECT alert_event_id, receiver, status FROM `{cfg.clickhouse.database}`.notifications"
                        ).result_rows
    assert rows == [(day_key(due), "daily-summary", "sent")]
    # The same document also written to summary.output_dir (mail transport turns newlines into CRLF).
    assert (tmp_path / "out" / f"summary-{day}.html").read_text().strip() == html.replace("\r\n", "\n").strip()
    assert (tmp_path / "out" / f"summary-{day}.txt").read_text().strip() == text.replace("\r\n", "\n").strip()


def test_summary_of_an_empty_store_still_renders(notify_env):
    from tocsin.sinks.clickhouse.store_access import open_store

    cfg = notify_env({})
    migrate(connect(cfg.clickhouse), cfg.clickhouse.database)
    end = dt.datetime(2026, 1, 2, 7, 0, tzinfo=dt.UTC)
    store = open_store(cfg)
    try:
        doc = store.report(24, end=end)
    finally:
        store.close()
    s = render_summary(doc)
    assert s.subject == ("[tocsin] Tocsin daily summary 2026-01-02: 0 requests (n/a), 0 errors (n/a), 0 alerts, "
                         "0 health failures")
    assert s.text.startswith("Tocsin daily summary") and "<svg" in s.html
