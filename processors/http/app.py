"""The processor service's HTTP API (FastAPI): health for load balancers, alerts, dashboard, metrics.

Routes (the seed's ``/api/debug/production/...`` paths answer the same):

================================  ======  =====================================================
``GET /health``                   open    200 healthy / 503 unhealthy with reasons (cached state)
``GET /health/detailed``          token   the seed's detailed shape
``GET /api/alerts``               token   open alerts and history, filtered and paged
``POST /api/alerts/resolve``      token   publishes a resolve ControlEvent: 202, 404 unknown id
``POST /api/alerts/ack``          token   ack / unack an incident (``oncall.py``): 202, 404, 409
``POST /api/alerts/unack``
``GET /api/alerts/{id}/context``  token   the alert page's chart and log lines (with the store)
``POST /api/rules/reload``        token   reads the rule file again: 200 what changed, 400 its problems
``GET /api/dashboard``            token   the dashboard page's JSON
``GET /dashboard``                open    the page itself: static HTML/JS/CSS, no data in it
``GET /metrics``                  token   Prometheus text format
``GET /openapi.json``             token   this API's OpenAPI schema
================================  ======  =====================================================

The app only reads a ``ServiceView``'s latest snapshot; it never talks to Kafka or
ClickHouse itself (``resolve`` is the view's job), so a slow broker cannot slow /health.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

import tocsin
from tocsin.core.config import Wiring
from tocsin.core.errors import RuleError, TocsinError
from tocsin.processors.ack import AckActions
from tocsin.processors.http import documents
from tocsin.processors.http.alert_page import page_router
from tocsin.processors.http.auth import Principal, TokenAuth, scope_responses
from tocsin.processors.http.dashboard import DashboardAssets
from tocsin.processors.http.metrics import exposition, registry_for
from tocsin.processors.http.models import (
    AlertList,
    AlertState,
    Dashboard,
    DetailedHealth,
    ErrorBody,
    Health,
    ResolveRequest,
    ResolveResponse,
    Severity,
)
from tocsin.processors.http.oncall import ack_router
from tocsin.processors.view import ServiceView

log = logging.getLogger(__name__)

SEED_PREFIX = "/api/debug/production"
"""Where the seed app served these endpoints; kept so load balancers configured for it keep working."""

MAX_PAGE = 500
NO_STORE = {"Cache-Control": "no-store"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Only this origin's own script and style: no CDN, no inline script, nothing injected can run.
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
]

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every response (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HealthProbe:
    """Answers ``GET /health`` (and the seed path) before routing: what load balancers poll, at the least cost.

    Pure ASGI, no routing, request object or dependency machinery: the
    request's CPU is GIL time taken from the consumer loop beside it. Same
    document and status codes as the documented route (``documents.health_doc``).
    """

    def __init__(self, app: ASGIApp, view: ServiceView, service: str, paths: tuple[str, ...]) -> None:
        self.app = app
        self.view = view
        self.service = service
        self.paths = frozenset(paths)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        code, doc = documents.health_doc(self.view.snapshot(), self.service)
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store"), *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


ScopedRouter = Callable[[Callable[[str], Any]], APIRouter]
"""A router built over the API's ``require(scope)`` dependency, so that each route names its own scope."""


def create_app(view: ServiceView, cfg: Wiring, *, extra_routers: list[APIRouter] | None = None,
               scoped_routers: list[ScopedRouter] | None = None) -> FastAPI:
    """The HTTP app over a running processor's ``view``.

    ``extra_routers`` (for example the ClickHouse owner's store API) are
    mounted behind the same token.
    """
    service = cfg.api.service_name
    auth = TokenAuth(cfg.api)
    if not auth.configured:
        log.warning("No API token configured (TOCSIN_API_TOKEN): every route but /health answers 401.")
    registry = registry_for(view)
    assets = DashboardAssets.load()

    app = FastAPI(
        title="Tocsin processor", version=tocsin.__version__,
        description="Health, alerts, dashboard and metrics of a Tocsin stream processor. "
                    "Every route but /health wants `Authorization: Bearer <TOCSIN_API_TOKEN>`.",
        docs_url=None, redoc_url=None, openapi_url=None,  # the schema is served behind the token below
    )
    app.state.view = view

    @app.exception_handler(TocsinError)
    async def _tocsin_error(_request: Request, exc: TocsinError) -> JSONResponse:
        # A dependency failed (typically Kafka while publishing a ControlEvent): retryable, not a bug.
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    # -- open ---------------------------------------------------------------------------------
    open_routes = APIRouter(tags=["health"])

    async def health() -> JSONResponse:
        """200 while the processor consumes and Kafka answers, else 503 with the reasons (for load balancers).

        ``HealthProbe`` answers these paths before routing; this route documents them (and serves them
        wherever the app runs without that middleware, e.g. mounted in another app).
        """
        code, body = documents.health_doc(view.snapshot(), service)
        return JSONResponse(body, status_code=code, headers=NO_STORE)

    health_responses: dict[int | str, dict[str, Any]] = {503: {"model": Health, "description": "Unhealthy"}}
    open_routes.add_api_route("/health", health, methods=["GET"], response_model=Health,
                              responses=health_responses, summary="Basic health check")
    open_routes.add_api_route(f"{SEED_PREFIX}/health/", health, methods=["GET"], response_model=Health,
                              responses=health_responses, summary="Basic health check (seed path)",
                              deprecated=True, operation_id="seed_health")

    page = APIRouter(tags=["dashboard"])

    async def dashboard_page() -> HTMLResponse:
        """The dashboard page: static, carries no data; its script fetches /api/dashboard with the token."""
        return HTMLResponse(assets.html, headers=NO_STORE)

    page.add_api_route("/dashboard", dashboard_page, methods=["GET"], response_class=HTMLResponse,
                       summary="Dashboard page")
    for name, (body, media_type) in assets.files.items():
        page.add_api_route(f"/dashboard/{name}", _static(body, media_type), methods=["GET"],
                           include_in_schema=False)

    # -- token --------------------------------------------------------------------------------
    unauthorized = scope_responses()  # read scope and up; resolve wants operate, the store API admin
    api = APIRouter(dependencies=[Depends(auth)], responses=unauthorized)

    async def health_detailed() -> JSONResponse:
        """The seed's detailed health: overall status, every check, alerts count, performance summary."""
        return JSONResponse(documents.detailed_doc(view.snapshot(), service), headers=NO_STORE)

    for path, extra in (("/health/detailed", {}),
                        (f"{SEED_PREFIX}/health/detailed/", {"deprecated": True, "operation_id": "seed_detailed"})):
        api.add_api_route(path, health_detailed, methods=["GET"], response_model=DetailedHealth, tags=["health"],
                          summary="Detailed health", **extra)

    async def list_alerts(
        service_: str | None = Query(None, alias="service", max_length=256, description="Only this service."),
        severity: Severity | None = Query(None, description="Only this severity."),
        state: AlertState | None = Query(None, description="Only this state."),
        limit: int = Query(50, ge=1, le=MAX_PAGE, description="Page size."),
        offset: int = Query(0, ge=0, le=1_000_000, description="Items to skip."),
    ) -> JSONResponse:
        """Open alerts (critical first) and the transition history (newest first), filtered and paged alike."""
        doc = documents.alerts_doc(view.snapshot(), service=service_, severity=severity, state=state, limit=limit,
                                   offset=offset)
        return JSONResponse(doc, headers=NO_STORE)

    for path, extra in (("/api/alerts", {}),
                        (f"{SEED_PREFIX}/alerts/", {"deprecated": True, "operation_id": "seed_alerts"})):
        api.add_api_route(path, list_alerts, methods=["GET"], response_model=AlertList, tags=["alerts"],
                          summary="Alerts and history", **extra)

    def resolve(body: ResolveRequest, who: Principal = Depends(auth.require("operate"))) -> JSONResponse:
        """Resolve an alert by hand: publishes a ControlEvent for the processor and answers 202.

        Resolving an alert that is already resolved is harmless (202, nothing published).
        Runs in the thread pool: publishing waits for the broker's acknowledgement.
        """
        outcome = view.resolve(body.alert_id, body.reason, who.name)  # the token's name, never the body's
        if outcome == "unknown":
            return JSONResponse({"detail": f"no alert with id {body.alert_id!r}"}, status_code=404)
        return JSONResponse({"alert_id": body.alert_id, "status": outcome}, status_code=202)

    resolve_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "The body is not JSON"},
        404: {"model": ErrorBody, "description": "Unknown alert id"},
        503: {"model": ErrorBody, "description": "The control topic could not be reached; retry"},
    }
    for path, extra in (("/api/alerts/resolve", {}),
                        (f"{SEED_PREFIX}/alerts/resolve/", {"deprecated": True, "operation_id": "seed_resolve"})):
        api.add_api_route(path, resolve, methods=["POST"], status_code=202, response_model=ResolveResponse,
                          responses=resolve_responses, tags=["alerts"], summary="Resolve an alert", **extra)

    if isinstance(view, AckActions):  # "operate" actions: ack and unack (tocsin.processors.http.oncall)
        api.include_router(ack_router(view, auth.require))

    def reload_rules() -> JSONResponse:
        """Reads the rule file again (as SIGHUP does): 200 with the rules added, changed, removed, kept;
        400 with the problems of a bad file, one ``file: rules[i] (name): field: reason`` line each
        (the old rules stay)."""
        reload = getattr(view, "reload_rules", None)
        if reload is None:
            return JSONResponse({"detail": "this process does not evaluate rules"}, status_code=501)
        try:
            return JSONResponse({"status": "reloaded", **reload()})
        except RuleError as exc:
            return JSONResponse({"detail": "the rule file does not validate; the old rules stay",
                                 "errors": exc.problems}, status_code=400)

    api.add_api_route("/api/rules/reload", reload_rules, methods=["POST"], tags=["rules"],
                      summary="Reload the rule file", responses={400: {"description": "The file does not validate"}})

    async def dashboard_data() -> JSONResponse:
        """Status overview, charts (error rate and p95 latency per service, last hour), alerts, checks, lag."""
        return JSONResponse(documents.dashboard_doc(view.snapshot(), service), headers=NO_STORE)

    for path, extra in (("/api/dashboard", {}),
                        (f"{SEED_PREFIX}/dashboard/", {"deprecated": True, "operation_id": "seed_dashboard"})):
        api.add_api_route(path, dashboard_data, methods=["GET"], response_model=Dashboard, tags=["dashboard"],
                          summary="Dashboard data", **extra)

    async def metrics() -> Response:
        """Prometheus text exposition format."""
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    api.add_api_route("/metrics", metrics, methods=["GET"], tags=["metrics"], summary="Prometheus metrics",
                      response_class=Response,
                      responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                       "description": "Prometheus text format 0.0.4"}})

    async def whoami(who: Principal = Depends(auth)) -> JSONResponse:
        """The token's name and scope (the dashboard shows operate buttons only to operate tokens)."""
        return JSONResponse({"name": who.name, "scope": who.scope}, headers=NO_STORE)

    api.add_api_route("/api/whoami", whoami, methods=["GET"], tags=["auth"], summary="Who this token is")

    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    api.add_api_route("/openapi.json", openapi_schema, methods=["GET"], include_in_schema=False)

    app.include_router(open_routes)
    app.include_router(page)
    app.include_router(page_router())  # the on-call pages (alert, silence): static, like /dashboard
    app.include_router(api)
    for router in extra_routers or ():
        app.include_router(router, dependencies=[Depends(auth.require("admin"))], responses=unauthorized)
    for build in scoped_routers or ():
        app.include_router(build(auth.require), responses=unauthorized)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HealthProbe, view=view, service=service, paths=("/health", f"{SEED_PREFIX}/health/"))
    return app


def _static(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve_asset() -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return serve_asset
