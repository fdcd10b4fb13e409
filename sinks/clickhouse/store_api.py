"""HTTP routes through which the process owning the store answers ``tocsin query``, ``report`` and ``cleanup``.

The contract (also in ``sinks/clickhouse/store_access.py``, the client side)::

    POST /api/store/query    {"sql": str, "parameters": {..}?, "readonly": true}
                             -> {"columns": [..], "types": [..], "rows": [[..]], "truncated": bool}
    GET  /api/store/report?hours=H[&service=S][&end=ISO8601] -> the report document
    POST /api/store/cleanup  {"days": N, "dry_run": bool}   -> the cleanup result
    POST /api/store/archive  {"older_than_days": N, "to_dir": "sub"} -> [{day, path, rows, skipped}]

    GET  /api/store/queries                               -> the user queries running now
    POST /api/store/queries/{id}/kill                     -> {"killed": bool}

Queries pass ``query_guard`` (Tocsin's tables only) and run read-only
(readonly=1) under ``QueryLimits``; ``readonly: false`` is refused with 403.
Errors: 403 a query the guard refuses, 400 bad SQL or arguments or a query the
engine cancelled at a limit, 503 the store unreachable or busy. Every call
runs on the store's own bounded pool (``StorePool``), never on the server's
shared thread pool, so a slow query cannot stall resolve, health or the
dashboard; authentication is the ``auth`` dependency the including app passes
in (the processor's bearer-token check).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from tocsin.core.errors import RefusedError, StoreError
from tocsin.sinks.clickhouse.config import ClickHouseSinkSettings
from tocsin.sinks.clickhouse.store_access import (
    REPORT_MAX_ROWS,
    QueryLimits,
    QueryResult,
    ReadOnlyClient,
    kill_query,
    readonly_client,
    run_query,
    running_queries,
)

MAX_REPORT_HOURS = 24 * 366


class QueryBody(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="One ClickHouse statement.")
    parameters: dict[str, Any] | None = Field(None, description="Values for {name:Type} placeholders.")
    readonly: bool = Field(True, description="Must be true: the API never writes through a query.")


class ArchiveBody(BaseModel):
    older_than_days: int = Field(ge=0, le=100_000, description="Archive whole days older than this.")
    to_dir: str = Field(".", min_length=1, max_length=4096,
                        description="Directory under the owner's jobs.archive_dir (relative to it, or absolute "
                                    "inside it); anything resolving elsewhere is refused with 403.")


class CleanupBody(BaseModel):
    days: int = Field(ge=0, le=100_000, description="Keep this many days; remove what is older.")
    dry_run: bool = Field(False, description="Only report what would be removed.")


class StorePool:
    """The store calls' own threads: ``workers`` at once, a caller waits ``queue_wait_s`` for one, then 503.

    Store calls used to run on the server's shared thread pool, where queued
    long queries took every thread and ``POST /api/alerts/resolve`` hung; here
    they can only take their own.
    """

    def __init__(self, workers: int, queue_wait_s: float) -> None:
        self.workers = workers
        self.queue_wait_s = queue_wait_s
        self._slots = asyncio.Semaphore(workers)  # binds to the server's loop on first use
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="tocsin-store")

    async def run(self, fn: Callable[[], Any]) -> Any:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_wait_s)
        except TimeoutError:
            raise HTTPException(503, f"store busy: {self.workers} store call(s) running "
                                     "(sink_clickhouse.store_api_workers); retry later",
                                headers={"Retry-After": "5"}) from None
        try:
            return await asyncio.wrap_future(self._executor.submit(fn))
        finally:
            self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _http_error(exc: StoreError) -> HTTPException:
    status = exc.http_status if isinstance(exc, RefusedError) else 400
    return HTTPException(status, str(exc))


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
    options = cfg.sink_clickhouse
    query_limits = QueryLimits.of(options)
    report_limits = QueryLimits.of(options, REPORT_MAX_ROWS)
    pool = StorePool(options.store_api_workers, options.store_api_queue_wait_s)
    router.state_pool = pool  # type: ignore[attr-defined]  # for the app's shutdown and tests

    def client() -> Any:
        try:
            return client_provider()
        except Exception as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc

    def reader(limits: QueryLimits) -> ReadOnlyClient:
        try:
            return readonly_client(cfg.clickhouse, limits)
        except Exception as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc

    def guarded(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            try:
                return fn()
            except StoreError as exc:
                raise _http_error(exc) from exc
        return call

    refusals: dict[int | str, dict[str, Any]] = {
        400: {"description": "Bad SQL, or cancelled by the engine at a limit"},
        403: {"description": "The query reaches outside Tocsin's tables (files, network, other databases)"},
        503: {"description": "Store unavailable or busy"},
    }

    @router.post("/query", responses=refusals)
    async def query(body: QueryBody) -> dict[str, Any]:
        if not body.readonly:
            raise HTTPException(403, "the store API runs read-only queries only")
        return await pool.run(guarded(lambda: run_query(reader(query_limits), body.sql, body.parameters).to_dict()))

    @router.get("/report", responses=refusals)
    async def report(hours: float = Query(24.0, gt=0, le=MAX_REPORT_HOURS), service: str | None = None,
                     end: dt.datetime | None = None) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.reports import build_report

        def build() -> dict[str, Any]:
            c = reader(report_limits)

            def ask(sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
                return run_query(c, sql, parameters)

            return build_report(ask, database, hours, service=service or None, end=end, options=options)

        return await pool.run(guarded(build))

    @router.get("/queries", responses=refusals)
    async def queries() -> list[dict[str, Any]]:
        """The user queries running now, for an admin to see (and kill) a runaway one."""
        # Not on the pool: listing must answer while every worker is busy with the queries it lists.
        return await asyncio.to_thread(guarded(lambda: running_queries(client())))

    @router.post("/queries/{query_id}/kill", responses={404: {"description": "No such query running"}, **refusals})
    async def kill(query_id: str) -> dict[str, Any]:
        """Cancels a running user query in the engine (its caller gets 400, QUERY_WAS_CANCELLED)."""
        killed = await asyncio.to_thread(guarded(lambda: kill_query(client(), query_id)))
        if not killed:
            raise HTTPException(404, f"no query {query_id} is running")
        return {"killed": True}

    @router.post("/cleanup", responses=refusals)
    async def cleanup(body: CleanupBody) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.cleanup import cleanup as run_cleanup

        return await pool.run(guarded(lambda: run_cleanup(client(), database, body.days, dry_run=body.dry_run,
                                                          cluster=options.cluster).to_dict()))

    @router.post("/archive", responses=refusals)
    async def archive(body: ArchiveBody) -> list[dict[str, Any]]:
        from tocsin.sinks.clickhouse.archive import archive_days

        def run() -> list[dict[str, Any]]:
            try:
                return [a.to_dict() for a in archive_days(client(), database, body.older_than_days,
                                                          Path(body.to_dir), root=cfg.jobs.archive_dir)]
            except OSError as exc:
                raise StoreError(str(exc)) from exc

        return await pool.run(guarded(run))

    return router
