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
      GET  /api/store/queries                                    -> [{"id", "elapsed_s", "read_rows", "sql", ..}]
      POST /api/store/queries/{id}/kill                          -> {"killed": bool}

  every call with ``Authorization: Bearer <token>``; errors are
  ``{"detail": str}`` with 400 (bad SQL or arguments, a query cancelled at a
  limit), 403 (a query the guard refuses, or the token's scope), 401 (token),
  503 (store unavailable or busy).

Every user query is checked by ``query_guard`` (ClickHouse's own parser:
Tocsin's tables only, no files, network or other databases) and runs on a
read-only session (readonly=1) carrying ``QueryLimits``, in both routes.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tocsin.core.config import ClickHouseConfig
from tocsin.core.errors import RefusedError, StoreError
from tocsin.sinks.clickhouse.config import ClickHouseSinkSettings
from tocsin.sinks.clickhouse.results import QueryResult

# Report queries return a row per service, pattern or bucket: far below this.
REPORT_MAX_ROWS = 1_000_000
# Marks every query Tocsin runs for a user, so the owner can list and kill it (system.processes).
QUERY_MARK = "/* tocsin-query "
_MARK_RE = re.compile(r"^/\* tocsin-query ([0-9a-f]{32}) \*/ ?")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# ClickHouse error codes of a query the engine stopped at one of the limits below (or an admin killed).
_LIMIT_CODES = {"TIMEOUT_EXCEEDED": "query_max_execution_s", "TOO_MANY_ROWS": "query_max_rows_to_read",
                "MEMORY_LIMIT_EXCEEDED": "query_max_memory_bytes", "TOO_MANY_BYTES": "query_max_result_bytes",
                "TOO_MANY_ROWS_OR_BYTES": "query_max_rows_to_read", "QUERY_WAS_CANCELLED": "an admin killed it"}
_CODE_RE = re.compile(r"\(([A-Z_]+)\)")


@dataclass(frozen=True)
class QueryLimits:
    """What one query may use; set on the read-only session (readonly=1), so no query can raise them.

    Defaults and why: 30 s is far above any report over the default 30-day
    retention on one node and short enough that a runaway query frees its
    worker soon; 2 GiB leaves the pipeline sharing the embedded engine its
    memory; 2e9 rows is a month of logs at ~750 lines/s; 256 MiB of result is
    what a CLI or browser can still take.
    """

    max_execution_s: float = 30.0
    max_memory_bytes: int = 2 * 1024**3
    max_rows_to_read: int = 2_000_000_000
    max_result_bytes: int = 256 * 1024**2
    max_result_rows: int = 100_000

    @classmethod
    def of(cls, options: Any, max_result_rows: int | None = None) -> QueryLimits:
        """The limits in ``sink_clickhouse`` (``options``), with its query_max_rows unless given."""
        return cls(options.query_max_execution_s, options.query_max_memory_bytes, options.query_max_rows_to_read,
                   options.query_max_result_bytes,
                   max_result_rows if max_result_rows is not None else options.query_max_rows)

    def settings(self) -> dict[str, Any]:
        """ClickHouse settings in the order they must be applied: ``readonly`` last (after it none may change)."""
        return {
            "max_execution_time": self.max_execution_s, "timeout_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_bytes,
            "max_rows_to_read": self.max_rows_to_read, "read_overflow_mode": "throw",
            # one more than returned, so a cut is seen; "break" stops the query there instead of failing it
            "max_result_rows": self.max_result_rows + 1, "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "break",
            "readonly": 1,
        }


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
    """Runs guarded queries that cannot write and stay inside their limits, on a server or the embedded engine.

    The embedded engine applies per-query settings with ``SET``, which a
    read-only session refuses; so there each (database, limits) has sessions of
    its own, read-only with the limits from their first statement, one per
    thread (a chdb session runs one query at a time). A server takes settings
    per request, so there each query carries them (``readonly`` last).
    """

    def __init__(self, client: Any, per_query: bool, database: str, limits: QueryLimits) -> None:
        self.client = client
        self.per_query = per_query
        self.database = database
        self.limits = limits

    def query(self, sql: str, parameters: dict[str, Any] | None) -> Any:
        from tocsin.sinks.clickhouse.query_guard import guard

        settings = self.limits.settings() if self.per_query else None
        safe = guard(_SettingsClient(self.client, settings), sql, parameters, self.database)
        marked = f"{QUERY_MARK}{uuid.uuid4().hex} */ {safe}"
        return self.client.query(marked, parameters=parameters or None, settings=settings)


class _SettingsClient:
    """A client whose every call carries the same settings (the server's read-only limits)."""

    def __init__(self, client: Any, settings: dict[str, Any] | None) -> None:
        self._client, self._settings = client, settings

    def query(self, sql: str, **kw: Any) -> Any:
        return self._client.query(sql, settings=self._settings, **kw)

    def raw_query(self, sql: str, **kw: Any) -> Any:
        return self._client.raw_query(sql, settings=self._settings, **kw)


_readonly_lock = threading.Lock()
_readonly_local = threading.local()


def readonly_client(cfg: ClickHouseConfig, limits: QueryLimits | None = None) -> ReadOnlyClient:
    """A guarded, limited, read-only client on the configured store (opens the engine in this process if needed)."""
    import clickhouse_connect

    from tocsin.core.clickhouse import connect

    limits = limits or QueryLimits()
    client = connect(cfg)  # opens (or reuses) the engine, and makes sure the database exists
    url = cfg.resolved_url()
    if not url.startswith("chdb://"):
        client.database = cfg.database  # unqualified names resolve in Tocsin's database
        return ReadOnlyClient(client, True, cfg.database, limits)
    sessions: dict[Any, Any] = _readonly_local.__dict__.setdefault("sessions", {})
    key = (url, cfg.database, limits)
    session = sessions.get(key)
    if session is None:
        try:
            with _readonly_lock:
                session = clickhouse_connect.get_client(dsn=url, database=cfg.database, settings=limits.settings())
        except Exception as exc:
            raise StoreError(f"cannot open a read-only session on {url}: {_clean(exc)}") from exc
        sessions[key] = session
    return ReadOnlyClient(session, False, cfg.database, limits)


def run_query(client: ReadOnlyClient, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
    """Runs one guarded read-only statement; at most ``client.limits.max_result_rows`` rows (``truncated``)."""
    max_rows = client.limits.max_result_rows
    try:
        result = client.query(sql, parameters)
    except RefusedError:
        raise
    except Exception as exc:
        code = _CODE_RE.search(str(exc))
        limit = _LIMIT_CODES.get(code[1]) if code else None
        if limit is not None:
            why = limit if " " in limit else f"the limit sink_clickhouse.{limit}"
            raise RefusedError(f"query cancelled by the engine ({code[1]}: {why}): {_clean(exc)}",
                                    http_status=400) from exc
        hint = " (has `tocsin db migrate` run against this database?)" if _UNKNOWN_RE.search(str(exc)) else ""
        raise StoreError(f"query failed: {_clean(exc)}{hint}") from exc
    rows = result.result_rows
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=[[jsonable(v) for v in row] for row in rows[:max_rows]],
        truncated=len(rows) > max_rows,
    )


def running_queries(client: Any) -> list[dict[str, Any]]:
    """The user queries running now (marked by ``ReadOnlyClient``): id, elapsed, rows read, memory, SQL."""
    res = client.query("SELECT query, elapsed, read_rows, memory_usage FROM system.processes "
                       "WHERE startsWith(query, {mark:String})", parameters={"mark": QUERY_MARK})
    out = []
    for text, elapsed, read_rows, memory in res.result_rows:
        m = _MARK_RE.match(text)
        if m is None:
            continue
        out.append({"id": m[1], "elapsed_s": round(float(elapsed), 3), "read_rows": int(read_rows),
                    "memory_bytes": int(memory), "sql": text[m.end():].removesuffix("\n FORMAT Native")[:2000]})
    return out


def kill_query(client: Any, query_id: str) -> bool:
    """Cancels the user query ``query_id`` (from ``running_queries``); False when none runs with that id."""
    if not _ID_RE.match(query_id):
        raise RefusedError(f"not a query id: {query_id[:80]!r} (32 hex digits, from `tocsin query --running`)")
    res = client.query("SELECT query_id FROM system.processes WHERE startsWith(query, {mark:String})",
                       parameters={"mark": f"{QUERY_MARK}{query_id} */"})
    for (engine_id,) in res.result_rows:
        client.command("KILL QUERY WHERE query_id = {q:String} SYNC", parameters={"q": engine_id})
    return bool(res.result_rows)


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

    def running(self) -> list[dict[str, Any]]: ...

    def kill(self, query_id: str) -> bool: ...

    def close(self) -> None: ...


class DirectStore:
    """The store reached with clickhouse-connect clients (a server, or the engine in this process).

    ``client`` writes (cleanup); queries and reports go through the read-only one.
    """

    route = "direct"

    def __init__(self, client: Any, cfg: ClickHouseSinkSettings) -> None:
        self.client = client
        self.cfg = cfg
        self.database = cfg.clickhouse.database
        self.readonly = readonly_client(cfg.clickhouse, QueryLimits.of(cfg.sink_clickhouse))
        self._report_reader = readonly_client(cfg.clickhouse, QueryLimits.of(cfg.sink_clickhouse, REPORT_MAX_ROWS))

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        return run_query(self.readonly, sql, parameters)

    def report(self, hours: float, service: str | None = None, end: dt.datetime | None = None) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.reports import build_report

        def ask(sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
            return run_query(self._report_reader, sql, parameters)

        return build_report(ask, self.database, hours, service=service, end=end, options=self.cfg.sink_clickhouse)

    def cleanup(self, days: int, dry_run: bool = False) -> dict[str, Any]:
        from tocsin.sinks.clickhouse.cleanup import cleanup

        return cleanup(self.client, self.database, days, dry_run=dry_run,
                       cluster=self.cfg.sink_clickhouse.cluster).to_dict()

    def archive(self, older_than_days: int, to_dir: str) -> list[dict[str, Any]]:
        from tocsin.sinks.clickhouse.archive import archive_days

        return [a.to_dict() for a in archive_days(self.client, self.database, older_than_days, Path(to_dir),
                                                  root=self.cfg.jobs.archive_dir)]

    def running(self) -> list[dict[str, Any]]:
        return running_queries(self.client)

    def kill(self, query_id: str) -> bool:
        return kill_query(self.client, query_id)

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

    def _call(self, method: str, path: str, *, missing_ok: bool = False, **kw: Any) -> Any:
        import requests

        url = f"{self.base_url}{path}"
        try:
            resp = self._session.request(method, url, timeout=self.timeout_s, **kw)
        except requests.RequestException as exc:
            raise StoreError(
                f"the store is held by another process, and its API at {self.base_url} did not answer: "
                f"{type(exc).__name__}. Is `tocsin start all` running with api.http_addr there?"
            ) from exc
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            if resp.status_code in (400, 403, 422) and "token" not in str(detail):
                raise RefusedError(f"store API {path} answered {resp.status_code}: {detail}")
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
        # The owner writes the files, under its jobs.archive_dir: with chdb it runs on this host, so an
        # absolute path means the same; a relative one is relative to that directory, as in direct mode.
        body = {"older_than_days": older_than_days, "to_dir": to_dir}
        return self._call("POST", "/api/store/archive", json=body)

    def running(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/store/queries")

    def kill(self, query_id: str) -> bool:
        done = self._call("POST", f"/api/store/queries/{query_id}/kill", missing_ok=True)
        return bool(done and done.get("killed"))

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

    return DirectStore(connect(cfg.clickhouse), cfg)
