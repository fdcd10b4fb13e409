"""HTTP routes through which the process owning the store answers ``tocsin query``, ``report`` and ``cleanup``.

The contract (also in ``sinks/clickhouse/store_access.py``, the client side)::

    POST /api/store/query    {"sql": str, "parameters": {..}?, "readonly": true}
                             -> {"columns": [..], "types": [..], "rows": [[..]], "truncated": bool}
    GET  /api/store/report?hours=H[&service=S][&end=ISO8601] -> the report document
    POST /api/store/cleanup  {"days": N, "dry_run": bool}   -> the cleanup result
    POST /api/store/archive  {"older_than_days": N, "to_dir": "/abs"} -> [{day, path, rows, skipped}]

Queries run with ClickHouse ``readonly=2`` (no writes, no DDL); ``readonly:
false`` is refused with 403. Errors: 400 for bad SQL or arguments, 503 when
the store cannot be reached; authentication is the ``auth`` dependency the
including app passes in (the processor's bearer-token check).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from tocsin.core.errors import StoreError
from tocsin.sinks.clickhouse.config import ClickHouseSinkSettings
from tocsin.sinks.clickhouse.store_access import (
    REPORT_MAX_ROWS,
    QueryResult,
    ReadOnlyClient,
    readonly_client,
    run_query,
)

MAX_REPORT_HOURS = 24 * 366


class QueryBody(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="One ClickHouse statement.")
    parameters: dict[str, Any] | None = Field(None, description="Values for {name:Type} placeholders.")
    readonly: bool = Field(True, description="Must be true: the API never writes through a query.")


class ArchiveBody(BaseModel):
    older_than_days: int = Field(ge=0, le=100_000, description="Archive whole days older than this.")
    to_dir: str = Field(min_length=1, description="Absolute directory on the owner's host for the Parquet files.")


class CleanupBody(BaseModel):
    days: int = Field(ge=0, le=100_000, description="Keep this many days; remove what is older.")
    dry_run: bool = Field(False, description="Only report what would be removed.")


def store_router(client_provider: Callable[[], Any], cfg: ClickHouseSinkSettings,
                 auth: Callable[..., Any] | None = None) -> APIRouter:
    """The ``/api/store`` routes over the owner's store.

    ``client_provider()`` gives the owner's clickhouse-connect client (cleanup
    writes with it); queries and reports use a read-only session on the same
    store (``readonly_client(cfg.clickhouse)``). ``auth`` is a FastAPI
    dependency run before every route (e.g. the bearer token check); pass None
    only for an app that authenticates otherwise.
    """
    router = APIRouter(prefix="/api/store", tags=["store"], dependencies=[Depends(auth)] if auth else [])
    database = cfg.clickhouse.database
    max_rows = cfg.sink_clickhouse.query_max_rows

    def client() -> Any:
        try:
            return client_provider()
        except Exception as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc

    def reader() -> ReadOnlyClient:
        try:
            return readonly_client(cfg.clickhouse)
        except Exception as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc

    @router.post("/query")
    def query(body: QueryBody) -> dict[str, Any]:
        if not body.readonly:
            raise HTTPException(403, "the store API runs read-only queries only")
        c = reader()
        try:
            return run_query(c, body.sql, body.parameters, max_rows=max_rows).to_dict()
        except StoreError as exc:
            raise HTTPException(400, str(exc)) from exc

    @router.get("/report")
    def report(hours: float = Query(24.0, gt=0, le=MAX_REPORT_HOURS), service: str | None = None,
               end: dt.datetime | None = None) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.reports import build_report

        c = reader()

        def ask(sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
            return run_query(c, sql, parameters, max_rows=REPORT_MAX_ROWS)

        try:
            return build_report(ask, database, hours, service=service or None, end=end, options=cfg.sink_clickhouse)
        except StoreError as exc:
            raise HTTPException(400, str(exc)) from exc

    @router.post("/cleanup")
    def cleanup(body: CleanupBody) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.cleanup import cleanup as run_cleanup

        c = client()
        try:
            return run_cleanup(c, database, body.days, dry_run=body.dry_run,
                               cluster=cfg.sink_clickhouse.cluster).to_dict()
        except StoreError as exc:
            raise HTTPException(400, str(exc)) from exc

    @router.post("/archive")
    def archive(body: ArchiveBody) -> list[dict[str, Any]]:
        from tocsin.sinks.clickhouse.archive import archive_days

        if not body.to_dir.startswith("/"):
            raise HTTPException(400, "to_dir must be an absolute path on the owner's host")
        c = client()
        try:
            return [a.to_dict() for a in archive_days(c, database, body.older_than_days, Path(body.to_dir))]
        except (StoreError, OSError) as exc:
            raise HTTPException(400, str(exc)) from exc

    return router
