"""The dashboard in a real browser (Debian's headless Chromium through Playwright) on a running pipeline.

Logs in through the form, waits for an injected incident's alert row, resolves
it with the button and sees it leave the active list; an event carrying
``<script>`` shows as text and runs nothing; the token never appears in a URL
and nothing is fetched from anywhere but the service. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import unique
from tests.processors.test_http_e2e import (
    AUTH,
    TOKEN,
    Running,
    active_alert,
    inject_incident,
    wait_for,
)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOSTILE = '<script>window.__tocsin_pwned = 1</script><img src=x onerror="window.__tocsin_pwned = 2">'



@pytest.fixture
def page() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (never `playwright install`: "
                                   "the tests drive Debian's chromium)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1300})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_log_in_see_the_incident_resolve_it_and_nothing_is_injected(proc: Running, page) -> None:
    svc = unique("storefront")
    inject_incident(proc.cfg, svc, message=f"checkout failed: {HOSTILE}", health_error=HOSTILE)
    alert = wait_for("the error_rate alert", lambda: active_alert(proc.url, svc))

    requests_seen: list[tuple[str, dict[str, str]]] = []
    page.on("request", lambda r: requests_seen.append((r.url, r.headers)))
    page.goto(f"{proc.url}/dashboard")
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#token", TOKEN)
    page.click("#login-button")
    page.wait_for_selector("#main", state="visible")

    row = f'#active-alerts tbody tr[data-alert-id="{alert["alert_id"]}"]'
    page.wait_for_selector(row, timeout=30_000)
    assert svc in page.inner_text(row) and "critical" in page.inner_text(row)

    # the hostile strings are text, nothing ran, no element was injected
    health_row = page.locator("#health-checks tbody tr", has_text=svc)
    health_row.first.wait_for(timeout=30_000)
    assert HOSTILE in health_row.first.inner_text()
    assert page.evaluate("window.__tocsin_pwned") is None
    assert page.locator("#health-checks script, #health-checks img, #active-alerts script").count() == 0

    # charts: one line per service, with this service in the legend
    page.wait_for_selector("#chart-errors svg path.line", timeout=30_000)
    assert svc in page.inner_text("#chart-errors .legend")
    assert page.locator("#chart-latency svg path.line").count() >= 1

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click(f"{row} button.resolve")
    page.wait_for_selector(row, state="detached", timeout=30_000)
    assert active_alert(proc.url, svc) is None
    history = requests.get(f"{proc.url}/api/alerts", headers=AUTH, timeout=10,
                           params={"service": svc, "state": "resolved"}).json()["history"]["items"]
    assert history and history[0]["resolved_by"] == "admin"  # the token's name
    page.screenshot(path=str(ARTIFACTS / "dashboard-resolved.png"), full_page=True)

    # the token travels only as a header, and only to this service
    assert page.evaluate("sessionStorage.getItem('tocsin.token')") == TOKEN
    origin = urlsplit(proc.url).netloc
    for url, headers in requests_seen:
        assert TOKEN not in url
        assert urlsplit(url).netloc == origin, f"fetched from elsewhere: {url}"
        if urlsplit(url).path.startswith("/api/"):
            assert headers.get("authorization") == f"Bearer {TOKEN}"


def test_a_wrong_token_is_refused_and_logging_out_forgets_it(proc: Running, page) -> None:
    page.goto(f"{proc.url}/dashboard")
    page.fill("#token", "not-the-token")
    page.click("#login-button")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert page.is_hidden("#main")
    assert page.evaluate("sessionStorage.getItem('tocsin.token')") is None

    page.fill("#token", TOKEN)
    page.click("#login-button")
    page.wait_for_selector("#main", state="visible")
    page.reload()  # the token survives a reload of the tab (sessionStorage), not the tab
    page.wait_for_selector("#main", state="visible")
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    assert page.evaluate("sessionStorage.getItem('tocsin.token')") is None
