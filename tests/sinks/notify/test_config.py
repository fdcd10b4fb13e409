"""The notify and summary config sections: YAML shape, cross-references, pure validation."""

from __future__ import annotations

import pytest

from tocsin.app.config import load_config
from tocsin.core.errors import ConfigError

EXAMPLE = """
alert_email_recipients: [admin@example.com]
notify:
  external_url: https://tocsin.example.com
  receivers:
    - {name: ops-mail, type: email, smtp_host: mail.example.com, security: starttls, username: tocsin,
       password: secret}
    - {name: oncall, type: pagerduty, routing_key: R0UT1NG}
    - {name: chat, type: slack, url: "https://hooks.slack.com/services/T/B/X"}
    - {name: hook, type: webhook, url: "https://hooks.example.com/alerts", hmac_secret: s3cret}
    - {name: am, type: alertmanager, url: "http://alertmanager:9093"}
  route:
    receiver: ops-mail
    group_by: [service]
    routes:
      - matchers: ["severity=critical"]
        receiver: oncall
        continue: true
      - matchers: ['service=~"shop|cart"']
        receiver: chat
        templates: {title: "{{ status }} {{ group_labels.service }}"}
  inhibit_rules:
    - {source_matchers: ["severity=critical"], target_matchers: ["severity=warning"], equal: [service]}
summary:
  use_receiver: ops-mail
"""


def test_example_config_parses_with_every_receiver_type(tmp_path):
    path = tmp_path / "tocsin.yaml"
    path.write_text(EXAMPLE)
    cfg = load_config(path, env={})
    assert [r.type for r in cfg.notify.receivers] == ["email", "pagerduty", "slack", "webhook", "alertmanager"]
    assert cfg.notify.route.routes[0].continue_ is True
    assert str(cfg.notify.route.routes[1].matchers[0]) == 'service=~"shop|cart"'
    assert cfg.notify.receiver("ops-mail").port == 587
    assert "secret" not in repr(cfg.notify.receiver("ops-mail"))  # secrets stay out of logs and reprs
    assert cfg.notify.receiver("chat").rate_limit_per_s == 1.0  # Slack's documented limit


@pytest.mark.parametrize(("snippet", "problem"), [
    ("notify: {receivers: [{name: a, type: webhook, url: 'http://x'}], route: {receiver: b}}",
     "unknown receiver 'b'"),
    ("notify: {receivers: [{name: a, type: webhook, url: 'http://x'}, {name: a, type: webhook, url: 'http://y'}],"
     " route: {receiver: a}}", "must be unique"),
    ("notify: {receivers: [{name: a, type: webhook, url: 'http://x'}]}", "root route needs a receiver"),
    ("notify: {receivers: [{name: a, type: fax}]}", "does not match any of the expected tags"),
    ("notify: {receivers: [{name: a, type: webhook, url: 'http://x'}], route: {receiver: a, matchers: ['x=~(']}}",
     "invalid regex"),
    ("notify: {receivers: [{name: a, type: webhook, url: 'http://x', rate_limit_per_s: 0}], route: {receiver: a}}",
     "notify.receivers[0].webhook.rate_limit_per_s: Input should be greater than 0"),
    ("notify: {receivers: [{name: a, type: webhook, url: 'http://x', colour: red}], route: {receiver: a}}",
     "Extra inputs are not permitted"),
    ("notify: {route: {matchers: ['just text']}}", "is not label=value"),
])
def test_bad_notify_config_is_reported_with_the_field(tmp_path, snippet, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert problem in str(err.value)
    assert str(path) in str(err.value)
