"""One way for the CLI to reach history: the store itself, or the HTTP API of the process that owns it.

The embedded engine (``chdb://PATH``) locks ``PATH/status`` with ``flock`` while a
process has it open, and a second process cannot open it. ``open_store(cfg)``
therefore probes that lock without opening the engine:

* a ClickHouse server (``http(s)://``), this process already holding the path,
  or nobody holding it: a ``DirectStore`` on a clickhouse-connect client;
* another process holding it: an ``HttpStore`` talking to that owner's API
  (``cfg.api.http_addr`` with ``cfg.api.token``), whose contract is::

      POST /api/store/query    {"sql": str, "parameters": {..}?, "readonly": true}
                               -> {"columns": [str], "types": [str], "rows": [[..]], "truncated": bool}
      GET  /api/store/report?hours=H[&service=S][&end=ISO8601]  -> the report document (sinks/clickhouse/reports.py)
      POST /api/store/cleanup  {"days": N, "dry_run": bool}     -> {"cutoff": .., "actions": [..], ..}

  every call with ``Authorization: Bearer <token>``; errors are
  ``{"detail": str}`` with 400 (bad SQL or arguments), 401/403 (token), 503
  (store unavailable).

Both stores return the same JSON-able shapes, so the CLI never knows which one it has.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import fcntl
import ipaddress
import math
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

from tocsin.core.config import ClickHouseConfig
from tocsin.core.errors import StoreError
from tocsin.sinks.clickhouse.config import ClickHouseSinkSettings
from tocsin.sinks.clickhouse.results import QueryResult

# readonly=2: no writes and no DDL, but per-query settings (the row limit below) stay allowed;
# the readonly level itself cannot be lowered from inside the query.
READONLY_LEVEL = 2
# Report queries return a row per service, pattern or bucket: far below this.
REPORT_MAX_ROWS = 1_000_000


def jsonable(value: Any) -> Any:
    """A ClickHouse value as JSON: datetimes in ISO 8601 UTC, maps as objects, NaN as null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # the engine hands back UTC wall time without a zone
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return str(value)


class ReadOnlyClient:
    """Runs queries that cannot write, on a server or on the embedded engine.

    The embedded engine applies per-query settings with ``SET`` and restores
    them afterwards, and a session switched to read-only cannot switch back;
    so there read-only is a session of its own (a second client on the same
    engine, read-only from its first statement). A server takes settings per
    request, so there each query carries ``readonly``.
    """

    def __init__(self, client: Any, per_query: bool) -> None:
        self.client = client
        self.per_query = per_query

    def query(self, sql: str, parameters: dict[str, Any] | None, settings: dict[str, Any]) -> Any:
        if self.per_query:
            settings = {**settings, "readonly": READONLY_LEVEL}
        return self.client.query(sql, parameters=parameters or None, settings=settings)


_readonly_lock = threading.Lock()
_readonly_sessions: dict[str, Any] = {}


def readonly_client(cfg: ClickHouseConfig) -> ReadOnlyClient:
    """A read-only client for the configured store (opens the engine in this process if needed)."""
    import clickhouse_connect

    from tocsin.core.clickhouse import connect

    client = connect(cfg)  # opens (or reuses) the engine, and makes sure the database exists
    url = cfg.resolved_url()
    if not url.startswith("chdb://"):
        return ReadOnlyClient(client, per_query=True)
    with _readonly_lock:
        session = _readonly_sessions.get(url)
        if session is None:
            try:
                session = clickhouse_connect.get_client(dsn=url, settings={"readonly": READONLY_LEVEL})
            except Exception as exc:
                raise StoreError(f"cannot open a read-only session on {url}: {_clean(exc)}") from exc
            _readonly_sessions[url] = session
    return ReadOnlyClient(session, per_query=False)


def run_query(client: ReadOnlyClient, sql: str, parameters: dict[str, Any] | None = None, *,
              max_rows: int = 100_000) -> QueryResult:
    """Runs one read-only statement; at most ``max_rows`` rows (``truncated`` says when cut)."""
    settings = {"max_result_rows": max_rows, "result_overflow_mode": "break"}
    try:
        result = client.query(sql, parameters, settings)
    except Exception as exc:
        hint = " (has `tocsin db migrate` run against this database?)" if _UNKNOWN_RE.search(str(exc)) else ""
        raise StoreError(f"query failed: {_clean(exc)}{hint}") from exc
    rows = result.result_rows
    truncated = len(rows) >= max_rows
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=[[jsonable(v) for v in row] for row in rows[:max_rows]],
        truncated=truncated,
    )


_UNKNOWN_RE = re.compile(r"\((UNKNOWN_TABLE|UNKNOWN_DATABASE)\)")


def _clean(exc: BaseException) -> str:
    text = str(exc).strip()
    # clickhouse-connect repeats the server message and appends a version trailer: keep the first line.
    return text.splitlines()[0][:2000] if text else type(exc).__name__


class Store(Protocol):
    """What query, report and cleanup need, whichever way the store is reached."""

    database: str

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult: ...

    def report(self, hours: float, service: str | None = None, end: dt.datetime | None = None) -> dict[str, Any]: ...

    def cleanup(self, days: int, dry_run: bool = False) -> dict[str, Any]: ...

    def archive(self, older_than_days: int, to_dir: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class DirectStore:
    """The store reached with clickhouse-connect clients (a server, or the engine in this process).

    ``client`` writes (cleanup); queries and reports go through the read-only one.
    """

    route = "direct"

    def __init__(self, client: Any, readonly: ReadOnlyClient, cfg: ClickHouseSinkSettings) -> None:
        self.client = client
        self.readonly = readonly
        self.cfg = cfg
        self.database = cfg.clickhouse.database

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        return run_query(self.readonly, sql, parameters, max_rows=self.cfg.sink_clickhouse.query_max_rows)

    def report(self, hours: float, service: str | None = None, end: dt.datetime | None = None) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.reports import build_report

        def ask(sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
            return run_query(self.readonly, sql, parameters, max_rows=REPORT_MAX_ROWS)

        return build_report(ask, self.database, hours, service=service, end=end, options=self.cfg.sink_clickhouse)

    def cleanup(self, days: int, dry_run: bool = False) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.cleanup import cleanup

        return cleanup(self.client, self.database, days, dry_run=dry_run,
                       cluster=self.cfg.sink_clickhouse.cluster).to_dict()

    def archive(self, older_than_days: int, to_dir: str) -> list[dict[str, Any]]:
        from tocsin.sinks.clickhouse.archive import archive_days

        return [a.to_dict() for a in archive_days(self.client, self.database, older_than_days, Path(to_dir))]

    def close(self) -> None:
        """The client is shared per process (tocsin.core.clickhouse); nothing to close here."""


class HttpStore:
    """The store reached through the owning process's HTTP API (see the module docstring)."""

    route = "http"

    def __init__(self, base_url: str, token: str | None, database: str, timeout_s: float = 60.0) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        url = f"{self.base_url}{path}"
        try:
            resp = self._session.request(method, url, timeout=self.timeout_s, **kw)
        except requests.RequestException as exc:
            raise StoreError(
                f"the store is held by another process, and its API at {self.base_url} did not answer: "
                f"{type(exc).__name__}. Is `tocsin start all` running with api.http_addr there?"
            ) from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            hint = " (set TOCSIN_API_TOKEN to the owner's token)" if resp.status_code in (401, 403) else ""
            raise StoreError(f"store API {path} answered {resp.status_code}: {detail}{hint}")
        return resp.json()

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        body: dict[str, Any] = {"sql": sql, "readonly": True}
        if parameters:
            body["parameters"] = parameters
        data = self._call("POST", "/api/store/query", json=body)
        return QueryResult(data["columns"], data.get("types", []), data["rows"], bool(data.get("truncated")))

    def report(self, hours: float, service: str | None = None, end: dt.datetime | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"hours": hours}
        if service:
            params["service"] = service
        if end is not None:
            params["end"] = end.isoformat()
        return self._call("GET", "/api/store/report", params=params)

    def cleanup(self, days: int, dry_run: bool = False) -> dict[str, Any]:
        return self._call("POST", "/api/store/cleanup", json={"days": days, "dry_run": dry_run})

    def archive(self, older_than_days: int, to_dir: str) -> list[dict[str, Any]]:
        # The owner writes the files: with chdb it runs on this host, so an absolute path means the same.
        body = {"older_than_days": older_than_days, "to_dir": str(Path(to_dir).resolve())}
        return self._call("POST", "/api/store/archive", json=body)

    def close(self) -> None:
        self._session.close()


def chdb_path(url: str) -> Path | None:
    return Path(url.removeprefix("chdb://")) if url.startswith("chdb://") else None


def owner_pid(path: Path) -> int | None:
    """PID of another process holding the embedded engine at ``path``, or None when it is free.

    ClickHouse takes ``flock(LOCK_EX)`` on ``PATH/status`` and writes its PID
    there; a non-blocking attempt on the same file tells, without opening the
    engine, whether someone holds it (released at once when we get it).
    """
    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {status}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode("utf-8", "replace")
            for line in text.splitlines():
                if line.startswith("PID:"):
                    with contextlib.suppress(ValueError):
                        return int(line.split(":", 1)[1])
            return -1  # held, PID unknown
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _held_here(url: str) -> bool:
    from tocsin.core import clickhouse

    return url in getattr(clickhouse, "_embedded", {})


def open_store(cfg: ClickHouseSinkSettings) -> DirectStore | HttpStore:
    """The store for a CLI command: direct when possible, else through the owner's HTTP API."""
    url = cfg.clickhouse.resolved_url()
    path = chdb_path(url)
    if path is not None and not _held_here(url):
        pid = owner_pid(path)
        if pid is not None and pid != os.getpid():
            token = cfg.api.token.get_secret_value() if cfg.api.token else None
            host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::") else "127.0.0.1"
            return HttpStore(f"http://{host}:{cfg.api.port}", token, cfg.clickhouse.database,
                             cfg.sink_clickhouse.store_api_timeout_s)
    from tocsin.core.clickhouse import connect

    return DirectStore(connect(cfg.clickhouse), readonly_client(cfg.clickhouse), cfg)
