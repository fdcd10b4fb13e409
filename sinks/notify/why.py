"""Why was (or wasn't) I paged: an alert's rows in the notification log, per receiver, as decisions.

``tocsin why ALERT_ID`` and ``GET /api/alerts/{alert_id}/notifications`` (the
alert page) both read ``{db}.notifications`` (rows written by the notify sink,
``log.py``) through a store's ``query`` (``sinks/clickhouse/store_access``: the
store direct, or its owner's API), so they say the same. The decisions:

* ``sent``      delivered (attempt N, HTTP status)
* ``retrying``  attempt N failed (HTTP status, error); another follows
* ``failed``    the last attempt failed: nobody was told through this receiver
* ``silenced``  a silence matched (its id), or muted while it fired (its resolve is not announced)
* ``inhibited`` a more severe alert fired at the time
* ``muted``     a route's time interval (``mute_time_interval NAME``, ``outside active_time_intervals ...``)
* ``already sent before a restart`` the restart check found the (transition, receiver) pair sent: skipped
* ``dropped``   not told, on purpose: the route's send_resolved is off, or a webhook's max_alerts cut it from
                the payload (the receiver got the notification with a truncatedAlerts count)
* ``not routed`` no route matched the alert's labels (or no receiver is configured): listed as ``(not routed)``
* ``escalated`` the row belongs to the route's escalation group (``<route>.escalation``), any of the above
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from tocsin.core.errors import TocsinError
from tocsin.core.validation import safe_text
from tocsin.sinks.notify.escalation import is_escalation

NO_RECEIVER = "(not routed)"
"""Where ``explain`` lists the rows of transitions no route took (their receiver is "")."""
MAX_ROWS = 5000
"""An incident that repeats every 4 h for 90 days to 10 receivers makes ~5,400 rows: the newest are kept."""

SQL = ("SELECT ts, alert_event_id, state, severity, receiver, receiver_type, attempt, status, http_status, error, "
       "group_key FROM {table} WHERE alert_id = {{alert_id:String}} ORDER BY ts DESC, attempt DESC LIMIT {limit}")
FIELDS = ("ts", "alert_event_id", "state", "severity", "receiver", "receiver_type", "attempt", "status",
          "http_status", "error", "group_key")


def _ts_us(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp() * 1e6)
    if isinstance(value, str):
        return _ts_us(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    return int(value)


def read(store: Any, alert_id: str) -> list[dict[str, Any]]:
    """The alert's notification log rows, oldest first; ``store`` has ``database`` and ``query(sql, parameters)``."""
    sql = SQL.format(table=f"`{store.database}`.notifications", limit=MAX_ROWS)
    result = store.query(sql, {"alert_id": alert_id})
    rows = [dict(zip(FIELDS, row, strict=False)) for row in result.rows]
    for row in rows:
        row["ts"] = _ts_us(row["ts"])
    return rows[::-1]


def decision(row: dict[str, Any]) -> str:
    """One row as a sentence, escaped for a terminal or a page (control characters shown as escapes)."""
    status, attempt = str(row["status"]), int(row.get("attempt") or 0)
    http = f"HTTP {row['http_status']}" if row.get("http_status") else ""
    error = safe_text(str(row.get("error") or ""), one_line=True)[:500]
    detail = error if http and error.startswith(http) else ", ".join(x for x in (http, error) if x)
    if status == "sent":
        text = f"sent (attempt {attempt}{', ' + http if http else ''})"
    elif status == "retrying":
        text = f"attempt {attempt} failed ({detail or 'no answer'}); retrying"
    elif status == "failed":
        text = f"failed after {attempt} attempts ({detail or 'no answer'})"
    elif status == "silenced":
        text = f"silenced: {error}" if error else "silenced"
    elif status == "inhibited":
        text = f"inhibited: {error or 'a more severe alert fires'}"
    elif status == "muted":
        text = f"muted by {error}" if error else "muted by a time interval"
    elif status == "already_sent":
        text = "already sent before a restart (the restart check skipped it)"
    elif status == "dropped":
        text = f"dropped: {error}" if error else "dropped"
    elif status == "unrouted":
        text = f"not routed: {error}" if error else "not routed: no route matched"
    else:
        text = safe_text(status, one_line=True)
    route = str(row.get("group_key") or "").split(":", 1)[0]
    return f"escalated: {text}" if is_escalation(route) else text


def explain(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """receiver -> its rows in time order, each with ``decision`` (the sentence) and ``escalation``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        route = str(row.get("group_key") or "").split(":", 1)[0]
        item = {"ts": dt.datetime.fromtimestamp(row["ts"] / 1e6, dt.UTC).isoformat().replace("+00:00", "Z"),
                "transition": safe_text(f"{row['state']} ({row['severity']})", one_line=True),
                "alert_event_id": str(row["alert_event_id"]), "status": str(row["status"]),
                "attempt": int(row.get("attempt") or 0), "http_status": int(row.get("http_status") or 0),
                "error": safe_text(str(row.get("error") or ""), one_line=True)[:500],
                "escalation": is_escalation(route), "decision": decision(row)}
        receiver = safe_text(str(row["receiver"]), one_line=True) or NO_RECEIVER
        out.setdefault(receiver, []).append(item)
    return out


def render(alert_id: str, explained: dict[str, list[dict[str, Any]]]) -> str:
    """The text ``tocsin why`` prints."""
    if not explained:
        return (f"no notification logged for {safe_text(alert_id, one_line=True)} (not routed yet, no route "
                "matched, or older than the log's retention)")
    lines = [f"notifications for {safe_text(alert_id, one_line=True)}:"]
    for receiver, items in explained.items():
        lines.append(f"  {receiver}:")
        lines += [f"    {i['ts']}  {i['transition']:<22} {i['decision']}" for i in items]
    return "\n".join(lines)


UNAVAILABLE = ("the notification log is in the ClickHouse store, whose API is not mounted on this server "
               "(it is with `tocsin start all`); run `tocsin why ALERT_ID` where the store is reachable")


def notifications_router(store: Callable[[], Any] | None, require: Callable[[str], Any]) -> APIRouter:
    """``GET /api/alerts/{alert_id}/notifications`` over ``store()`` (a store as in ``read``); None: 503.
    A read token suffices (``require(scope)`` is the API's dependency)."""
    router = APIRouter(tags=["alerts"])

    def notifications(alert_id: str = Path(min_length=1, max_length=256),
                      _who: Any = Depends(require("read"))) -> JSONResponse:
        """What the notification log says for the alert, per receiver (the alert page's section)."""
        if store is None:
            return JSONResponse({"detail": UNAVAILABLE}, status_code=503)
        try:
            explained = explain(read(store(), alert_id))
        except TocsinError as exc:
            return JSONResponse({"detail": f"the notification log could not be read: {exc}"}, status_code=503)
        return JSONResponse({"alert_id": alert_id, "receivers": explained}, headers={"Cache-Control": "no-store"})

    router.add_api_route("/api/alerts/{alert_id}/notifications", notifications, methods=["GET"],
                         summary="Notifications of an alert",
                         responses={503: {"description": "The store is not reachable from this server"}})
    return router
