"""One incident's context from ClickHouse history: the rule's value around it and the service's error lines.

``GET /api/alerts/{alert_id}/context`` (the alert page's chart and log sections) answers::

    {"alert_id", "incident": {rule, service, labels, started_at, ended_at, state, severity},
     "series": {"source", "what", "window_s", "from", "to", "points": [[iso, value], ..],
                "transitions": [[iso, value, severity], ..]},
     "thresholds": [{"severity": "warning"|"critical", "value": float}],
     "logs": {"levels", "limit", "before": [line], "after": [line], "more": {"sql", "cli"}}}

The series comes from the minute rollups, re-windowed to the rule's window (each
minute's state merged into the ``window`` following minutes, so a point is the
rule's aggregate over the window ending at that minute, at minute resolution):
``log_counts_1m`` for log rules (count, rate per minute), ``metrics_1m`` for
metric rules (p50/p90/p95/p99 from the DDSketch states, avg, min, max; latest
as the last minute's average). Rules the rollups cannot express (health, a
filter on other fields, slo, absence, patterns) get the values the alert's
transitions carry (``source: "alerts"``), sparse but real.

Every read goes through the store's ``query`` (``store_access``: guarded,
read-only, under ``QueryLimits``), with the alert id and every value as query
parameters, over bounded time ranges and with a LIMIT.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shlex
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.binding import format_query_value
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from tocsin.core.errors import TocsinError
from tocsin.core.validation import safe_text
from tocsin.sinks.clickhouse.schema import QUANTILE_LEVELS, QUANTILES_FN

US = 1_000_000
MAX_BEFORE_S = 6 * 3600.0
"""How far before the start the chart may reach (the page asks for 30 min)."""
MAX_SPAN_S = 24 * 3600.0
"""The chart and the "after" log lines stop this long after the start, however long the incident lasts."""
MAX_WINDOW_MIN = 360
"""A rule window longer than 6 h is drawn over its last 6 h: each rollup row is read once per window minute."""
MAX_LOG_LINES = 200
MAX_MESSAGE_CHARS = 2000
MAX_TRANSITIONS = 1000
DEFAULT_LEVELS = ("ERROR", "CRITICAL")
_QUANTILE_AT = {f"p{round(q * 100)}": i + 1 for i, q in enumerate(QUANTILE_LEVELS)}
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")

RuleLookup = Callable[[str], dict[str, Any] | None]
"""rule name -> its spec as a dict (``source``, ``filter``, ``aggregate``, ``window``, ``warning``, ``critical``,
``kind``), or None when this process does not know the rule."""


def _us(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp() * US)
    if isinstance(value, str):
        return _us(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    return int(value)


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / US, dt.UTC).isoformat().replace("+00:00", "Z")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None


def _text(value: Any, limit: int = 500) -> str:
    return safe_text("" if value is None else str(value), one_line=True)[:limit]


def incident(store: Any, alert_id: str) -> dict[str, Any] | None:
    """The incident's transitions from the alerts table (oldest first), or None when the store has none."""
    res = store.query(
        f"SELECT ts, state, severity, value, threshold, rule, service, labels, started_at, ended_at "
        f"FROM `{store.database}`.alerts WHERE alert_id = {{alert_id:String}} ORDER BY ts LIMIT {MAX_TRANSITIONS}",
        {"alert_id": alert_id})
    if not res.rows:
        return None
    rows = [dict(zip(("ts", "state", "severity", "value", "threshold", "rule", "service", "labels", "started_at",
                      "ended_at"), r, strict=False)) for r in res.rows]
    last = rows[-1]
    ended = next((r["ended_at"] for r in reversed(rows) if r["ended_at"]), None)
    if ended is None and last["state"] == "resolved":
        ended = last["ts"]
    return {"rule": str(last["rule"]), "service": str(last["service"]), "labels": dict(last["labels"] or {}),
            "state": str(last["state"]), "severity": str(last["severity"]),
            "started_us": _us(rows[0]["started_at"]), "ended_us": _us(ended) if ended else None,
            "transitions": [(_us(r["ts"]), _num(r["value"]), str(r["severity"]), _num(r["threshold"])) for r in rows]}


def _series_sql(db: str, spec: dict[str, Any] | None, labels: dict[str, str]) -> tuple[str, dict[str, Any], str] | None:
    """(SQL, parameters, what it measures) of the rule's value per minute from a rollup; None: not expressible."""
    if not spec or spec.get("kind", "threshold") != "threshold":
        return None
    flt: dict[str, Any] = dict(spec.get("filter") or {})
    aggregate = spec.get("aggregate") or "count"
    window_min = max(1, min(MAX_WINDOW_MIN, math.ceil(float(spec.get("window") or 60) / 60)))
    params: dict[str, Any] = {"service": labels.get("service", ""), "w": window_min}
    # each minute's row counts in the windows ending 1..w minutes after its start: ``at`` is a window's end
    spread = "arrayJoin(range({w:UInt32})) AS k, addMinutes(minute, k + 1) AS at"
    where = ("service = {service:String} AND minute >= toDateTime({lo:Int64}, 'UTC') "
             "AND minute <= toDateTime({hi:Int64}, 'UTC')")
    if spec.get("source") == "logs":
        if set(flt) - {"level"} or aggregate not in ("count", "rate_per_min"):
            return None
        levels = flt.get("level") or []
        params["levels"] = [levels] if isinstance(levels, str) else list(levels)
        level_sql = " AND level IN {levels:Array(String)}" if params["levels"] else ""
        value = "uniqExactMerge(events)" + (" / {w:UInt32}" if aggregate == "rate_per_min" else "")
        what = (f"{'/'.join(params['levels']) or 'all'} log lines "
                f"{'per minute' if aggregate == 'rate_per_min' else 'counted'} over {window_min} min")
        sql = (f"SELECT at, {value} FROM (SELECT minute, events, {spread} FROM `{db}`.log_counts_1m "
               f"WHERE {where}{level_sql}) WHERE at <= toDateTime({{hi:Int64}} + 60, 'UTC') GROUP BY at ORDER BY at")
        return sql, params, what
    if spec.get("source") != "metrics":
        return None
    name = flt.get("name")
    if set(flt) - {"name", "host"} or not isinstance(name, str) or not _PLAIN_NAME_RE.match(name):
        return None
    params["name"] = name
    where += " AND name = {name:String}"
    host = flt.get("host") or labels.get("host")
    if isinstance(host, str) and host:
        params["host"] = host
        where += " AND host = {host:String}"
    if aggregate in _QUANTILE_AT:
        value = f"{QUANTILES_FN.replace('(', 'Merge(', 1)}(value_quantiles)[{_QUANTILE_AT[aggregate]}]"
    elif aggregate in ("avg", "latest"):
        value = "sum(value_sum) / uniqExactMerge(samples)"
        if aggregate == "latest":
            window_min = params["w"] = 1
    elif aggregate == "max":
        value = "max(value_max)"
    elif aggregate == "min":
        value = "min(value_min)"
    elif aggregate in ("count", "rate_per_min"):
        value = "uniqExactMerge(samples)" + (" / {w:UInt32}" if aggregate == "rate_per_min" else "")
    else:
        return None
    what = f"{aggregate} of {name} over {window_min} min" if aggregate != "latest" else \
        f"{name} (each minute's average)"
    sql = (f"SELECT at, {value} FROM (SELECT minute, samples, value_sum, value_min, value_max, value_quantiles, "
           f"{spread} FROM `{db}`.metrics_1m WHERE {where}) WHERE at <= toDateTime({{hi:Int64}} + 60, 'UTC') "
           "GROUP BY at ORDER BY at")
    return sql, params, what


def series(store: Any, inc: dict[str, Any], spec: dict[str, Any] | None, before_s: float, now_us: int,
           ) -> dict[str, Any]:
    """The rule's value from ``before_s`` before the start to the end (or now), and the transitions' values."""
    lo = inc["started_us"] - int(before_s * US)
    hi = min(inc["ended_us"] or now_us, inc["started_us"] + int(MAX_SPAN_S * US))
    hi = max(hi, inc["started_us"])
    doc: dict[str, Any] = {"source": "alerts", "what": "the value each transition of the alert carries",
                           "window_s": float(spec.get("window") or 0) if spec else None,
                           "from": _iso(lo), "to": _iso(hi), "points": [],
                           "transitions": [[_iso(ts), v, sev] for ts, v, sev, _ in inc["transitions"]]}
    built = _series_sql(store.database, spec, inc["labels"] | {"service": inc["service"]})
    if built is None:
        doc["points"] = [[_iso(ts), v] for ts, v, _, _ in inc["transitions"] if v is not None]
        return doc
    sql, params, what = built
    w = int(params["w"])
    params |= {"lo": lo // US - w * 60, "hi": hi // US}
    res = store.query(sql, params)
    table = "log_counts_1m" if "log_counts_1m" in sql else "metrics_1m"
    # the window still open (its minute not over) is drawn at ``hi``: never a point in the future
    points: dict[int, float | None] = {}
    for at, v in res.rows:  # ordered by ``at``
        ts = _us(at)
        if ts >= lo:
            points.setdefault(min(ts, hi), _num(v))  # past ``hi``: only the first (the open window's, "now")
    if table == "log_counts_1m":  # no row: no line counted that minute, a zero (a metric without samples stays a gap)
        first = -(-lo // (60 * US)) * 60 * US
        for minute in range(first, hi + 1, 60 * US):
            points.setdefault(minute, 0.0)
    doc |= {"source": table, "what": what, "points": [[_iso(ts), points[ts]] for ts in sorted(points)]}
    return doc


def thresholds(inc: dict[str, Any], spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """warning/critical from the rule when known, else the thresholds the transitions crossed."""
    out: dict[str, float] = {}
    if spec:
        for sev in ("warning", "critical"):
            v = _num(spec.get(sev))
            if v is not None:
                out[sev] = v
    if not out:
        for _ts, _v, sev, threshold in inc["transitions"]:
            if sev in ("warning", "critical") and threshold is not None:
                out.setdefault(sev, threshold)
    return [{"severity": s, "value": v} for s, v in out.items()]


_LOG_FIELDS = ("ts", "level", "host", "logger", "message", "trace_id")


def error_logs(store: Any, service: str, start_us: int, levels: list[str], limit: int) -> dict[str, Any]:
    """The last ``limit`` lines at ``levels`` before the start and the first ``limit`` from it (within a day)."""
    table = f"`{store.database}`.logs"
    cols = f"ts, level, host, logger, leftUTF8(message, {MAX_MESSAGE_CHARS}), trace_id"
    base = (f"SELECT {cols} FROM {table} WHERE service = {{service:String}} AND level IN {{levels:Array(String)}} "
            "AND ts >= fromUnixTimestamp64Micro({lo:Int64}) AND ts < fromUnixTimestamp64Micro({hi:Int64})")
    span = int(MAX_SPAN_S * US)
    p = {"service": service, "levels": levels}
    before = store.query(f"{base} ORDER BY ts DESC LIMIT {int(limit)}", p | {"lo": start_us - span, "hi": start_us})
    after = store.query(f"{base} ORDER BY ts LIMIT {int(limit)}", p | {"lo": start_us, "hi": start_us + span})

    def lines(rows: list[list[Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            d = dict(zip(_LOG_FIELDS, row, strict=False))
            out.append({"ts": _iso(_us(d["ts"])), "level": _text(d["level"], 20), "host": _text(d["host"], 200),
                        "logger": _text(d["logger"], 200), "message": _text(d["message"], MAX_MESSAGE_CHARS),
                        "trace_id": _text(d["trace_id"], 200)})
        return out

    lo = dt.datetime.fromtimestamp((start_us - span) / US, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    hi = dt.datetime.fromtimestamp((start_us + span) / US, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    more = (f"SELECT ts, level, host, logger, message, trace_id FROM {table} "
            f"WHERE service = {format_query_value(service)} "
            f"AND level IN ({', '.join(map(format_query_value, levels))}) "
            f"AND ts >= toDateTime64('{lo}', 6, 'UTC') AND ts < toDateTime64('{hi}', 6, 'UTC') ORDER BY ts LIMIT 1000")
    return {"levels": levels, "limit": limit, "before": lines(before.rows)[::-1], "after": lines(after.rows),
            "more": {"sql": _text(more, 5000), "cli": _text(f"tocsin query {shlex.quote(more)}", 5500),
                     "api": "POST /api/store/query"}}


def context(store: Any, alert_id: str, rules: RuleLookup, *, before_s: float, log_lines: int,
            now_us: int) -> dict[str, Any] | None:
    """The whole ``/context`` document (module docstring); None when the store has no such incident."""
    inc = incident(store, alert_id)
    if inc is None:
        return None
    spec = rules(inc["rule"])
    flt = (spec or {}).get("filter") or {}
    levels = flt.get("level") if (spec or {}).get("source") == "logs" else None
    levels = [levels] if isinstance(levels, str) else list(levels or DEFAULT_LEVELS)
    return {
        "alert_id": alert_id,
        "incident": {"rule": _text(inc["rule"]), "service": _text(inc["service"]),
                     "labels": {_text(k, 200): _text(v) for k, v in inc["labels"].items()},
                     "state": inc["state"], "severity": inc["severity"], "started_at": _iso(inc["started_us"]),
                     "ended_at": _iso(inc["ended_us"]) if inc["ended_us"] else None},
        "series": series(store, inc, spec, before_s, now_us),
        "thresholds": thresholds(inc, spec),
        "logs": error_logs(store, inc["service"], inc["started_us"], levels, log_lines),
    }


UNAVAILABLE = ("the incident's history is in the ClickHouse store, whose API is not mounted on this server "
               "(it is with `tocsin start all`)")


def context_router(store: Callable[[], Any] | None, rules: RuleLookup, require: Callable[[str], Any]) -> APIRouter:
    """``GET /api/alerts/{alert_id}/context`` over ``store()`` (None: 503); a read token suffices."""
    router = APIRouter(tags=["alerts"])

    def alert_context(alert_id: str = Path(min_length=1, max_length=256),
                      before_s: float = Query(1800.0, ge=0, le=MAX_BEFORE_S,
                                              description="How far before the start the chart begins."),
                      logs: int = Query(20, ge=1, le=MAX_LOG_LINES,
                                        description="Error lines before and after the start, each."),
                      _who: Any = Depends(require("read"))) -> JSONResponse:
        """The rule's value around the incident, its thresholds, and the service's error lines around the start."""
        from tocsin.core.events import now_us

        if store is None:
            return JSONResponse({"detail": UNAVAILABLE}, status_code=503)
        try:
            doc = context(store(), alert_id, rules, before_s=before_s, log_lines=logs, now_us=now_us())
        except TocsinError as exc:
            return JSONResponse({"detail": f"the store could not be read: {exc}"}, status_code=503)
        if doc is None:
            return JSONResponse({"detail": f"no alert {_text(alert_id, 256)!r} in the store (not written yet, "
                                           "or older than its retention)"}, status_code=404)
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    router.add_api_route("/api/alerts/{alert_id}/context", alert_context, methods=["GET"],
                         summary="An alert's value, thresholds and error lines",
                         responses={404: {"description": "The store has no such alert"},
                                    503: {"description": "The store is not reachable from this server"}})
    return router
