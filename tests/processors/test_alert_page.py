"""The on-call pages are static, open like /dashboard, carry no data and keep the strict CSP."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.processors.test_http_app import MemoryView, make_app


def test_alert_and_silence_pages_are_static_under_the_strict_csp() -> None:
    client = TestClient(make_app(MemoryView()))
    for path in ("/dashboard/alerts/fp-123?action=ack", "/dashboard/silences?matcher=service%3Dshop"):
        r = client.get(path)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "<script src=\"/dashboard/" in r.text and "fp-123" not in r.text and "shop" not in r.text
    for asset in ("/dashboard/alert.js", "/dashboard/silences.js"):
        assert client.get(asset).status_code == 200
    assert client.get("/dashboard/alerts/" + "x" * 300).status_code == 422
