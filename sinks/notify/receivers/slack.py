"""Slack receiver: an incoming webhook with Block Kit blocks inside an attachment coloured by severity.

Only attachments carry a colour bar, so the payload is ``{"text": <fallback>,
"attachments": [{"color", "blocks": [header, section, context]}]}``. Texts
come from the ``title`` and ``text`` templates (mrkdwn, escaped as Slack asks:
``&``, ``<`` and ``>``); the context block's group labels are escaped here.
Slack answers 200 ``ok``, 4xx for a bad payload or a revoked hook, 429 with Retry-After when rate limited.
"""

from __future__ import annotations

import json
from typing import Any

from tocsin.sinks.notify.config import SlackReceiverConfig
from tocsin.sinks.notify.receivers.base import DeliveryResult, Notification, Notifier
from tocsin.sinks.notify.templates import slack_escape

# Block Kit limits (api.slack.com/reference/block-kit/blocks).
HEADER_MAX_CHARS = 150
SECTION_MAX_CHARS = 3000
COLOURS = {"critical": "#d62728", "warning": "#ff9f1c", "info": "#439fe0", "none": "#439fe0"}
RESOLVED_COLOUR = "#2eb886"
LINKED_ALERTS = 10
"""Alerts of one message that get their alert/ack/silence links (a section holds 3000 characters)."""


def colour(n: Notification) -> str:
    return RESOLVED_COLOUR if n.status == "resolved" else COLOURS.get(n.severity, COLOURS["none"])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(n: Notification, channel: str | None = None, username: str | None = None) -> dict[str, Any]:
    title = _cut(n.text("title", f"[{n.status.upper()}] {n.receiver}").strip(), HEADER_MAX_CHARS)
    text = _cut(n.text("text", title).strip() or title, SECTION_MAX_CHARS)
    # Labels are the alert's own values, not template output: escaped here (a label "<!channel>" must not ping).
    context = ", ".join(f"{slack_escape(k)}={slack_escape(v)}" for k, v in sorted(n.group_labels.items())) \
        or "all alerts"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(f"group: {context}", SECTION_MAX_CHARS)}]},
    ]
    links = [(a, a.links(n.public_url)) for a in n.alerts[:LINKED_ALERTS]]
    lines = [f"{slack_escape(a.rule)} {slack_escape(a.service)}: <{lk['alert']}|alert page> · <{lk['ack']}|ack> · "
             f"<{lk['silence']}|silence>" for a, lk in links if lk]
    if lines:
        blocks.insert(2, {"type": "section", "text": {"type": "mrkdwn",
                                                      "text": _cut("\n".join(lines), SECTION_MAX_CHARS)}})
    payload: dict[str, Any] = {"text": title, "attachments": [{"color": colour(n), "blocks": blocks}]}
    if channel:
        payload["channel"] = channel
    if username:
        payload["username"] = username
    return payload


class SlackNotifier(Notifier[SlackReceiverConfig]):
    """Posts one message per notification to a Slack incoming webhook."""

    type = "slack"
    parts = ("title", "text")

    def send(self, notification: Notification) -> DeliveryResult:
        cfg = self.config
        body = json.dumps(slack_payload(notification, cfg.channel, cfg.username)).encode()
        return self.post_json(cfg.url.get_secret_value(), body)
