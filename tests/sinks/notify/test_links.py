"""Links in every notification (api.public_url): the alert page, its prefilled ack and silence pages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.sinks.notify.support import alert_event
from tocsin.core.config import ApiConfig
from tocsin.sinks.notify.config import PagerDutyReceiverConfig
from tocsin.sinks.notify.receivers.base import Notification
from tocsin.sinks.notify.receivers.pagerduty import pagerduty_event
from tocsin.sinks.notify.receivers.slack import slack_payload
from tocsin.sinks.notify.receivers.webhook import webhook_payload
from tocsin.sinks.notify.routing import alert_view
from tocsin.sinks.notify.templates import TemplateRenderer

BASE = "https://tocsin.example.com"


def _n(public_url: str = BASE) -> Notification:
    ev = alert_event("error_rate", "shop|<x>", alert_id="fp-1")
    return Notification("n1", "r", "k", {"service": "shop"}, (alert_view(ev),), public_url=public_url)


def test_every_receiver_carries_the_alert_ack_and_silence_links_and_no_token():
    n = _n()
    links = n.alerts[0].links(BASE)
    assert links["alert"] == f"{BASE}/dashboard/alerts/fp-1"
    assert links["ack"] == f"{BASE}/dashboard/alerts/fp-1?action=ack"
    assert links["silence"].startswith(f"{BASE}/dashboard/silences?matcher=alertname%3Derror_rate")
    assert "service%3Dshop%7C%3Cx%3E" in links["silence"]  # escaped for a URL (and for Slack's <url|text>)
    assert webhook_payload(n)["alerts"][0]["links"] == links
    pd = pagerduty_event(n.alerts[0], PagerDutyReceiverConfig(name="p", type="pagerduty", routing_key="k"), "s", "g",
                         BASE)
    assert [lk["href"] for lk in pd["links"]] == list(links.values())
    slack = str(slack_payload(n))
    assert f"<{links['ack']}|ack>" in slack
    r = TemplateRenderer()
    email = r.render(n, "email", ("text", "html"))
    assert f"ack: {links['ack']}" in email["text"] and f'href="{links["alert"]}"' in email["html"]
    for text in (slack, str(webhook_payload(n)), email["text"]):
        assert "token" not in text.lower()
    assert "links" not in webhook_payload(_n(""))["alerts"][0]  # no public_url: no links


@pytest.mark.parametrize("url", ["ftp://x", "https://tok@x.example", "https://x.example/?token=1", "x.example"])
def test_public_url_must_be_a_plain_http_url(url):
    with pytest.raises(ValidationError):
        ApiConfig(public_url=url)
    assert ApiConfig(public_url="https://x.example/tocsin/").public_url == "https://x.example/tocsin"
