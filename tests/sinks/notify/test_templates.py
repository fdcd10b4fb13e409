"""Templates: sandboxed jinja2, HTML autoescaped, per-receiver defaults, route overrides, never-drop fallback."""

from __future__ import annotations

import logging

from tocsin.sinks.notify.receivers.base import AlertView, Notification
from tocsin.sinks.notify.templates import TemplateRenderer


def _n(summary: str = "errors on <b>checkout</b> & cart", status: str = "firing") -> Notification:
    a = AlertView(fingerprint="f1", alert_id="a1", event_id="e1", rule="error_rate", severity="critical",
                  state=status, labels={"service": "shop"}, annotations={"summary": summary},
                  starts_at_us=1_700_000_000_000_000, ends_at_us=None, ts_us=1_700_000_000_000_000, value=9.5,
                  threshold=5.0)
    return Notification("n1", "mail", 'k', {"service": "shop"}, (a,), external_url="http://x")


def test_defaults_render_each_receiver_part():
    r = TemplateRenderer()
    out = r.render(_n(), "email", ("subject", "text", "html"))
    assert out["subject"] == "[FIRING:1] shop error_rate"
    assert "[CRITICAL] error_rate on shop: errors on <b>checkout</b> & cart" in out["text"]
    assert "errors on &lt;b&gt;checkout&lt;/b&gt; &amp; cart" in out["html"]
    slack = r.render(_n(), "slack", ("title", "text"))
    assert "errors on &lt;b&gt;checkout&lt;/b&gt; &amp; cart" in slack["text"]
    pd = r.render(_n(), "pagerduty", (), alert_parts=("summary",))
    assert pd == {"summary@f1": "[CRITICAL] error_rate on shop: errors on <b>checkout</b> & cart"}
    assert r.failure_count == 0


def test_route_override_beats_receiver_override_beats_default():
    r = TemplateRenderer()
    out = r.render(_n(), "email", ("subject", "text"), route_templates={"subject": "R {{ alerts|length }}"},
                   receiver_templates={"subject": "X", "text": "T {{ common_labels.service }}"})
    assert out == {"subject": "R 1", "text": "T shop"}


def test_broken_override_falls_back_to_the_default_and_is_counted_and_logged(caplog):
    r = TemplateRenderer()
    with caplog.at_level(logging.WARNING, logger="tocsin.sinks.notify.templates"):
        out = r.render(_n(), "email", ("subject", "text", "html"), route_templates={
            "subject": "{{ undefined_variable.boom }}",  # undefined (StrictUndefined)
            "text": "{% for %}",  # syntax error
            "html": "{{ 1 / 0 }}",  # runtime error
        })
    assert out["subject"] == "[FIRING:1] shop error_rate"
    assert "error_rate on shop" in out["text"]
    assert "<table" in out["html"]
    assert r.failures == {"email.subject": 1, "email.text": 1, "email.html": 1}
    assert len([rec for rec in caplog.records if "falling back" in rec.getMessage()]) == 3


def test_sandbox_refuses_python_internals_and_the_alert_still_renders():
    r = TemplateRenderer()
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    out = r.render(_n(), "slack", ("title",), receiver_templates={"title": evil})
    assert out["title"] == "[FIRING:1] shop error_rate"
    assert r.failures["slack.title"] == 1


def test_template_dir_overrides_builtin_and_a_broken_one_falls_back_to_builtin(tmp_path):
    (tmp_path / "email.subject.j2").write_text("custom {{ status }}")
    (tmp_path / "default.text.j2").write_text("{{ nope }}")
    r = TemplateRenderer(tmp_path)
    out = r.render(_n(), "email", ("subject", "text"))
    assert out["subject"] == "custom firing"
    assert "error_rate on shop" in out["text"]
    assert r.failures == {"email.text": 1}


def test_last_resort_text_when_even_the_builtin_cannot_render(tmp_path, monkeypatch):
    from tocsin.sinks.notify import templates as notify_templates

    monkeypatch.setattr(notify_templates, "BUILTIN_DIR", tmp_path)  # no templates at all
    (tmp_path / "default.text.j2").write_text("{{ broken(")
    r = TemplateRenderer()
    out = r.render(_n(), "email", ("subject", "text", "html"))
    assert out["subject"] == "[FIRING] 1 alert(s)"
    assert "firing critical error_rate" in out["text"]
    assert out["html"].startswith("<pre>[FIRING] 1 alert(s)")
    assert r.failures["email.text.builtin"] == 1
