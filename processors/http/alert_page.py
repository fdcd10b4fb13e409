"""The on-call pages: ``/dashboard/alerts/{alert_id}`` (one incident, its transitions, ack/unack) and
``/dashboard/silences`` (a silence prefilled from a notification's link).

Like ``/dashboard`` they are static and carry no data (open routes): the alert
page's script asks for the token as the dashboard does and reads
``/api/alerts`` with it; a link in a notification never carries a token.
"""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from tocsin.processors.http.dashboard import STATIC_DIR

NO_STORE = {"Cache-Control": "no-store"}


def page_router() -> APIRouter:
    alert_html = (STATIC_DIR / "alert.html").read_text(encoding="utf-8")
    silences_html = (STATIC_DIR / "silences.html").read_text(encoding="utf-8")
    router = APIRouter(tags=["dashboard"])

    async def alert_page(alert_id: str = Path(max_length=256)) -> HTMLResponse:
        """One incident's page (its script fetches the data with the token)."""
        return HTMLResponse(alert_html, headers=NO_STORE)

    async def silence_page() -> HTMLResponse:
        """Create (prefilled from ``?matcher=label=value``), list and expire silences through /api/silences."""
        return HTMLResponse(silences_html, headers=NO_STORE)

    router.add_api_route("/dashboard/alerts/{alert_id}", alert_page, methods=["GET"], response_class=HTMLResponse,
                         summary="Alert page")
    router.add_api_route("/dashboard/silences", silence_page, methods=["GET"], response_class=HTMLResponse,
                         summary="Silence page")
    return router
