"""Everything sent or shown is escaped for where it goes: hostile service, label and message values through
Slack (mrkdwn in every block), e-mail (headers, text, HTML), the terminal (query, report, silences) and files."""

from __future__ import annotations

import re

from tests.sinks.clickhouse.test_store_api import _cli, store  # noqa: F401  (store: fixture)
from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, record, running_sink, smtp_server, wait_until
from tests.sinks.notify.test_cli import _write, tocsin
from tocsin.core.validation import safe_text

notify_env = notify_support.notify_env  # the fixture

ESC = "\x1b"
SERVICE = f"shop<!channel>&{ESC}[31mred{ESC}[0m\u202e"
TEAM = "<https://evil.example|click here>"
SUMMARY = f"{ESC}]0;pwned\x07 <b>bold</b> & {ESC}[2J\r\nBcc: victim@example.com"
_ENTITY_RE = re.compile(r"&(?!amp;|lt;|gt;)")


def _hostile_alert() -> dict:
    ev = alert_event("error_rate", SERVICE, severity="critical", labels={"team": TEAM})
    ev["annotations"] = {"summary": SUMMARY}
    return ev


def test_safe_text_escapes_controls_and_keeps_lines():
    assert safe_text(f"a{ESC}[31mb\x07\x9b\u202ec\nd\te") == "a\\x1b[31mb\\x07\\x9b\\u202ec\nd\te"
    assert safe_text("x\r\ny\tz", one_line=True) == "x\\x0d\\x0ay\\x09z"


def test_slack_escapes_mrkdwn_in_every_block(notify_env, httpserver):
    rec = record(httpserver, "/hook")
    cfg = notify_env({"receivers": [{"name": "chat", "type": "slack", "url": httpserver.url_for("/hook")}],
                      "route": {"receiver": "chat", "group_wait_s": 0.1, "group_interval_s": 0.2,
                                "group_by": ["service", "team"]},
                      "inhibit_rules": []})
    with running_sink(cfg):
        produce_alerts(cfg, [_hostile_alert()])
        wait_until(lambda: rec.count() >= 1, what="the Slack message")
    (body,) = rec.bodies()
    texts = [body["text"]]
    for block in body["attachments"][0]["blocks"]:
        if block["type"] == "context":
            texts += [e["text"] for e in block["elements"]]
        elif block["type"] == "section":
            texts.append(block["text"]["text"])
    for text in texts:
        assert "<" not in text and ">" not in text, text
        assert not _ENTITY_RE.search(text), f"a bare & in {text!r}"
    assert any("&lt;!channel&gt;" in t for t in texts) and any("&lt;https://evil.example|click here&gt;" in t
                                                               for t in texts)


def test_email_headers_and_bodies_carry_no_control_characters(notify_env, tmp_path):
    with smtp_server(tmp_path, "starttls") as smtp:
        cfg = notify_env({"receivers": [{"name": "mail", "type": "email", **smtp.smtp_config("starttls"),
                                         "to": ["ops@example.com"]}],
                          "route": {"receiver": "mail", "group_wait_s": 0.1, "group_interval_s": 0.2,
                                    "group_by": ["service"]},
                          "inhibit_rules": []})
        with running_sink(cfg):
            produce_alerts(cfg, [_hostile_alert()])
            wait_until(lambda: len(smtp.inbox) >= 1, what="the mail")
        (mail,) = smtp.inbox
    assert mail.rcpt_tos == ["ops@example.com"]
    msg = mail.message()
    assert msg["Bcc"] is None
    assert "\\x1b[31m" in msg["Subject"] and ESC not in msg["Subject"] and "\n" not in msg["Subject"]
    for part in ("plain", "html"):
        content = msg.get_body((part,)).get_content()
        assert ESC not in content and "\x07" not in content and "\u202e" not in content, part
    assert b"\x1b" not in mail.content


def test_terminal_and_files_show_control_characters_escaped(store, tmp_path):  # noqa: F811
    cfg, client, _, config_path = store
    db = cfg.clickhouse.database
    from tocsin.core.events import now_us

    client.insert(f"`{db}`.logs", [[f"x{i}", now_us() - 120_000_000 - i, SERVICE, "h", "ERROR", SUMMARY]
                                   for i in range(3)],
                  column_names=["event_id", "ts", "service", "host", "level", "message"])
    outputs = {}
    for fmt in ("table", "csv", "json"):
        out = _cli(config_path, "query", f"SELECT service, message FROM {db}.logs WHERE event_id = 'x0'",
                   "--format", fmt)
        assert out.returncode == 0, out.stderr
        outputs[f"query {fmt}"] = out.stdout
    for fmt in ("text", "md"):
        target = tmp_path / f"report.{fmt}"
        out = _cli(config_path, "report", "--hours", "1", "--format", fmt, "--out", str(target))
        assert out.returncode == 0, out.stderr
        outputs[f"report {fmt} file"] = target.read_text()
        outputs[f"report {fmt} stdout"] = _cli(config_path, "report", "--hours", "1", "--format", fmt).stdout
    for name, text in outputs.items():
        assert ESC not in text and "\x07" not in text and "\u202e" not in text, name
        assert "\\x1b" in text or "\\u001b" in text, f"{name} lost the hostile value instead of escaping it"


def test_silence_list_and_add_show_control_characters_escaped(notify_env, tmp_path):
    cfg = notify_env({})
    config = _write(tmp_path, cfg)
    added = tocsin("silence", "add", "--matcher", f"service={ESC}[31mshop", "--duration", "1h",
                   "--reason", f"{ESC}]0;pwned\x07 [bold red]x[/]", "--author", "ops", config=config)
    assert added.returncode == 0, added.stderr
    listed = tocsin("silence", "list", config=config)
    for out in (added.stdout, listed.stdout):
        assert ESC not in out and "\x07" not in out and "\\x1b" in out
    assert "[/]" in listed.stdout, "the reason was read as rich markup"
