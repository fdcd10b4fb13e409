"""Email receiver against a real SMTP server (aiosmtpd): STARTTLS or implicit TLS, AUTH, multipart MIME."""

from __future__ import annotations

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import (
    alert_event,
    produce_alerts,
    query,
    resolved_of,
    running_sink,
    smtp_server,
    wait_until,
)
from tocsin.sinks.notify.config import EmailReceiverConfig
from tocsin.sinks.notify.receivers.base import AlertView, Notification
from tocsin.sinks.notify.receivers.email import EmailNotifier

notify_env = notify_support.notify_env  # the fixture


def test_alert_email_goes_to_alert_email_recipients_as_text_and_escaped_html(notify_env, tmp_path):
    with smtp_server(tmp_path, "starttls") as smtp:
        cfg = notify_env(
            {"receivers": [{"name": "mail", "type": "email", **smtp.smtp_config("starttls")}],
             "route": {"receiver": "mail", "group_wait_s": 0.2, "group_interval_s": 0.2},
             "external_url": "http://tocsin.example"},
            alert_email_recipients=["admin@example.com", "ops@example.com"],
        )
        ev = alert_event("error_rate", "shop", severity="critical", value=9.5, threshold=5.0)
        ev["annotations"] = {"summary": "<script>alert(1)</script> errors"}
        with running_sink(cfg) as sink:
            produce_alerts(cfg, [ev])
            wait_until(lambda: len(smtp.inbox) >= 1, what="the firing mail")
            produce_alerts(cfg, [resolved_of(ev)])
            wait_until(lambda: len(smtp.inbox) >= 2, what="the resolved mail")
            wait_until(sink.idle, what="settled")
        firing, resolved = smtp.inbox
    assert firing.mail_from == "tocsin@example.com"
    assert firing.rcpt_tos == ["admin@example.com", "ops@example.com"]
    msg = firing.message()
    assert msg["Subject"] == "[FIRING:1] shop error_rate"
    assert msg["To"] == "admin@example.com, ops@example.com"
    assert msg["From"] == "tocsin@example.com"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "[CRITICAL] error_rate on shop: <script>alert(1)</script> errors" in text
    assert "value 9.5, threshold 5" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; errors" in html
    assert "<script>" not in html
    assert 'href="http://tocsin.example/dashboard"' in html
    assert resolved.message()["Subject"] == "[RESOLVED] shop error_rate"
    assert "Resolved (1):" in resolved.message().get_body(("plain",)).get_content()
    assert query(cfg, "SELECT state, status, receiver_type FROM {log} ORDER BY ts") == [
        ("firing", "sent", "email"), ("resolved", "sent", "email")]


def _notification() -> Notification:
    a = AlertView(fingerprint="f1", alert_id="a1", event_id="e1", rule="disk_usage", severity="warning",
                  state="firing", labels={"service": "db"}, annotations={}, starts_at_us=1, ends_at_us=None, ts_us=1,
                  value=88.0, threshold=85.0)
    return Notification("n-1", "mail", "k", {"service": "db"}, (a,),
                        {"subject": "disk", "text": "t", "html": "<b>h</b>"})


def test_implicit_tls_with_auth_delivers(tmp_path):
    with smtp_server(tmp_path, "ssl") as smtp:
        cfg = EmailReceiverConfig(name="mail", to=["dba@example.com"], **smtp.smtp_config("ssl"))
        result = EmailNotifier(cfg).send(_notification())
        assert result.outcome == "sent", result.error
        assert smtp.inbox[0].rcpt_tos == ["dba@example.com"]
        assert smtp.inbox[0].message()["Message-ID"] == "<n-1@tocsin>"


def test_wrong_password_fails_for_good_and_temporary_4xx_is_retryable(tmp_path):
    with smtp_server(tmp_path, "starttls") as smtp:
        bad = EmailReceiverConfig(name="mail", to=["x@example.com"], **smtp.smtp_config("starttls", password="nope"))
        result = EmailNotifier(bad).send(_notification())
        assert result.outcome == "failed"
        assert "535" in result.error
        smtp.replies.append("451 4.3.0 try again later")
        good = EmailReceiverConfig(name="mail", to=["x@example.com"], **smtp.smtp_config("starttls"))
        first = EmailNotifier(good).send(_notification())
        assert first.outcome == "retry" and "451" in first.error
        assert EmailNotifier(good).send(_notification()).outcome == "sent"
        assert len(smtp.inbox) == 1


def test_untrusted_certificate_and_no_recipients_fail_for_good(tmp_path):
    with smtp_server(tmp_path, "starttls") as smtp:
        untrusted = EmailReceiverConfig(name="mail", to=["x@example.com"],
                                        **smtp.smtp_config("starttls", ca_file=None))
        result = EmailNotifier(untrusted).send(_notification())
        assert result.outcome == "failed" and "certificate" in result.error
        nobody = EmailReceiverConfig(name="mail", **smtp.smtp_config("starttls"))
        assert EmailNotifier(nobody, default_recipients=[]).send(_notification()).outcome == "failed"
        assert smtp.inbox == []


def test_closed_port_is_retryable():
    cfg = EmailReceiverConfig(name="mail", to=["x@example.com"], smtp_host="127.0.0.1", smtp_port=1,
                              security="none", timeout_s=2)
    result = EmailNotifier(cfg).send(_notification())
    assert result.outcome == "retry"
