"""Performance reports over the ClickHouse history: one JSON document, rendered as text, Markdown or HTML.

``build_report(ask, database, hours)`` runs read-only SQL through ``ask(sql,
parameters) -> QueryResult`` (a direct client or the store owner's HTTP API)
and returns a JSON-able document: per service request count, errors and error
rate, p50/p95/p99 latency, the top error messages grouped by a normalized
message, alerts fired and resolved with durations and MTTR, health-check
failures, each beside the previous period of the same length.

Sources: request counts and latency percentiles come from the ``metrics_1m``
rollup (DDSketch states, relative error ``QUANTILE_ACCURACY``), error and log
counts from ``log_counts_1m``; only the error messages, alerts and health
checks read raw rows. The period is ``hours`` ending at ``end`` (default now),
both cut to whole minutes because the rollups are per minute.
``render_report(doc, fmt)`` turns the document into text, md, html (with
inline SVG charts, no external assets) or json.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tocsin.core.patterns import NORMALIZE_RULES, PATTERN_MAX_CHARS
from tocsin.core.patterns import normalize_message as normalize_message  # re-exported for callers
from tocsin.sinks.clickhouse.config import ClickHouseSinkConfig
from tocsin.sinks.clickhouse.results import QueryResult
from tocsin.sinks.clickhouse.schema import QUANTILE_ACCURACY, QUANTILE_LEVELS, QUANTILES_FN

Ask = Callable[[str, dict[str, Any] | None], QueryResult]
FORMATS = ("text", "md", "html", "json")
TEMPLATES = Path(__file__).parent / "templates"
# Chart buckets: the smallest of these (minutes) that keeps a chart under MAX_POINTS points.
BUCKET_MINUTES = (1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
MAX_POINTS = 60
SEVERITY_ORDER = {"critical": 3, "warning": 2, "info": 1, "none": 0}

def _normalize_sql(column: str) -> tuple[str, dict[str, str]]:
    expr, params = column, {}
    for i, (pattern, repl) in enumerate(NORMALIZE_RULES):
        params[f"re{i}"], params[f"rp{i}"] = pattern, repl.replace("\\", "\\\\")
        expr = f"replaceRegexpAll({expr}, {{re{i}:String}}, {{rp{i}:String}})"
    return f"substring({expr}, 1, {PATTERN_MAX_CHARS})", params


def _iso(us: int | None) -> str | None:
    if not us:
        return None
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat().replace("+00:00", "Z")


def _pct(cur: float | None, prev: float | None) -> float | None:
    if cur is None or prev is None or prev == 0:
        return None
    return (cur - prev) / prev * 100.0


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def period_bounds(hours: float, end: dt.datetime | None = None) -> tuple[int, int, int]:
    """(previous start, start, end) in epoch seconds, cut to whole minutes."""
    end = end or dt.datetime.now(dt.UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    end_s = int(end.timestamp()) // 60 * 60
    minutes = max(1, round(hours * 60))
    return end_s - 2 * minutes * 60, end_s - minutes * 60, end_s


def build_report(ask: Ask, database: str, hours: float, service: str | None = None,
                 end: dt.datetime | None = None, options: ClickHouseSinkConfig | None = None) -> dict[str, Any]:
    """The report document (see the module docstring); every figure also for the previous period."""
    opts = options or ClickHouseSinkConfig()
    prev_s, start_s, end_s = period_bounds(hours, end)
    db = f"`{database}`"
    base: dict[str, Any] = {
        "prev": prev_s, "start": start_s, "end": end_s, "names": list(opts.report_request_metrics),
        "levels": list(opts.report_error_levels), "service": service or "",
    }
    svc = " AND service = {service:String}" if service else ""
    in_rollup = "minute >= toDateTime({prev:UInt32}, 'UTC') AND minute < toDateTime({end:UInt32}, 'UTC')"
    cur_rollup = "minute >= toDateTime({start:UInt32}, 'UTC')"
    in_raw = ("ts >= fromUnixTimestamp64Micro(toInt64({prev:UInt32}) * 1000000, 'UTC') "
              "AND ts < fromUnixTimestamp64Micro(toInt64({end:UInt32}) * 1000000, 'UTC')")
    cur_raw = "ts >= fromUnixTimestamp64Micro(toInt64({start:UInt32}) * 1000000, 'UTC')"
    merge_if = QUANTILES_FN.replace("(", "MergeIf(", 1)

    services: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return services.setdefault(name, {
            "service": name, "requests": 0, "errors": 0, "log_events": 0, "p50_ms": None, "p95_ms": None,
            "p99_ms": None, "previous": {"requests": 0, "errors": 0, "log_events": 0, "p50_ms": None,
                                         "p95_ms": None, "p99_ms": None},
        })

    levels = {lv: i for i, lv in enumerate(QUANTILE_LEVELS)}
    req = ask(
        f"SELECT service, sumIf(samples, {cur_rollup}) AS requests, sumIf(samples, NOT ({cur_rollup})) AS prev,"
        f" {merge_if}(value_quantiles, {cur_rollup}) AS q, {merge_if}(value_quantiles, NOT ({cur_rollup})) AS pq"
        f" FROM {db}.metrics_1m WHERE {in_rollup} AND name IN {{names:Array(String)}}{svc} GROUP BY service",
        base,
    )
    for name, requests, prev, q, pq in req.rows:
        e = entry(name)
        e["requests"], e["previous"]["requests"] = int(requests), int(prev)
        for key, lv in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            e[key] = _num(q[levels[lv]]) if requests else None
            e["previous"][key] = _num(pq[levels[lv]]) if prev else None
    logs = ask(
        f"SELECT service, sumIf(events, {cur_rollup} AND level IN {{levels:Array(String)}}),"
        f" sumIf(events, {cur_rollup}), sumIf(events, NOT ({cur_rollup}) AND level IN {{levels:Array(String)}}),"
        f" sumIf(events, NOT ({cur_rollup})) FROM {db}.log_counts_1m WHERE {in_rollup}{svc} GROUP BY service",
        base,
    )
    for name, errors, events, perrors, pevents in logs.rows:
        e = entry(name)
        e["errors"], e["log_events"] = int(errors), int(events)
        e["previous"]["errors"], e["previous"]["log_events"] = int(perrors), int(pevents)
    minutes = (end_s - start_s) / 60
    for e in services.values():
        for d in (e, e["previous"]):
            d["error_rate"] = d["errors"] / d["requests"] if d["requests"] else None
            d["errors_per_min"] = d["errors"] / minutes
        e["change"] = _changes(e, e["previous"])
    ordered = sorted(services.values(), key=lambda e: (-e["errors"], -e["requests"], e["service"]))
    totals = _totals(ordered, minutes)

    norm, norm_params = _normalize_sql("message")
    top = ask(
        f"SELECT service, {norm} AS pattern, countIf({cur_raw}) AS n, countIf(NOT ({cur_raw})) AS prev_n,"
        f" anyIf(message, {cur_raw}) AS example, minIf(toUnixTimestamp64Micro(ts), {cur_raw}),"
        f" maxIf(toUnixTimestamp64Micro(ts), {cur_raw})"
        f" FROM {db}.logs WHERE {in_raw} AND level IN {{levels:Array(String)}}{svc}"
        f" GROUP BY service, pattern HAVING n > 0 ORDER BY n DESC, service, pattern LIMIT {{top:UInt32}}",
        {**base, **norm_params, "top": opts.report_top_errors},
    )
    top_errors = [
        {"service": s, "pattern": p, "count": int(n), "previous_count": int(pn), "example": ex,
         "first_seen": _iso(first), "last_seen": _iso(last)}
        for s, p, n, pn, ex, first, last in top.rows
    ]

    quarantined = ask(
        f"SELECT count() FROM {db}.quarantine WHERE received_at >= fromUnixTimestamp64Micro("
        f"toInt64({{start:UInt32}}) * 1000000, 'UTC') AND received_at < fromUnixTimestamp64Micro("
        f"toInt64({{end:UInt32}}) * 1000000, 'UTC'){svc}", base,
    ).rows[0][0]
    totals["quarantined"] = int(quarantined)
    alerts = _alerts(ask, db, base, svc, in_raw, start_s, end_s)
    health = _health(ask, db, base, svc, in_raw, cur_raw)
    series = _series(ask, db, base, svc, start_s, end_s)
    return {
        "title": "Tocsin performance report",
        "generated_at": _iso(int(dt.datetime.now(dt.UTC).timestamp() * 1e6)),
        "period": {"start": _iso(start_s * 1_000_000), "end": _iso(end_s * 1_000_000), "hours": minutes / 60},
        "previous_period": {"start": _iso(prev_s * 1_000_000), "end": _iso(start_s * 1_000_000)},
        "service_filter": service,
        "request_metrics": list(opts.report_request_metrics),
        "error_levels": list(opts.report_error_levels),
        "quantile_relative_accuracy": QUANTILE_ACCURACY,
        "totals": totals,
        "services": ordered,
        "top_errors": top_errors,
        "alerts": alerts,
        "health": health,
        "series": series,
    }


def _changes(cur: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any]:
    rate_delta = None
    if cur.get("error_rate") is not None and prev.get("error_rate") is not None:
        rate_delta = cur["error_rate"] - prev["error_rate"]
    return {
        "requests_pct": _pct(cur["requests"], prev["requests"]),
        "errors_pct": _pct(cur["errors"], prev["errors"]),
        "error_rate_delta": rate_delta,
        "p95_pct": _pct(cur.get("p95_ms"), prev.get("p95_ms")),
    }


def _totals(services: list[dict[str, Any]], minutes: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("requests", "errors", "log_events"):
        out[key] = sum(e[key] for e in services)
    prev = {key: sum(e["previous"][key] for e in services) for key in ("requests", "errors", "log_events")}
    for d in (out, prev):
        d["error_rate"] = d["errors"] / d["requests"] if d["requests"] else None
        d["errors_per_min"] = d["errors"] / minutes
    out["previous"] = prev
    out["change"] = _changes(out, prev)
    return out


def _alerts(ask: Ask, db: str, base: dict[str, Any], svc: str, in_raw: str, start_s: int,
            end_s: int) -> dict[str, Any]:
    res = ask(
        "SELECT alert_id, any(rule), any(service), any(fingerprint), groupUniqArray(severity),"
        " minIf(toUnixTimestamp64Micro(ts), state = 'firing'), maxIf(toUnixTimestamp64Micro(ts), state = 'resolved'),"
        " min(toUnixTimestamp64Micro(started_at)), argMax(state, ts), anyIf(resolved_by, state = 'resolved')"
        f" FROM {db}.alerts WHERE alert_id IN (SELECT alert_id FROM {db}.alerts WHERE {in_raw}{svc})"
        " GROUP BY alert_id",
        base,
    )
    start_us, end_us, prev_us = start_s * 1_000_000, end_s * 1_000_000, base["prev"] * 1_000_000
    items: list[dict[str, Any]] = []
    stats = {"cur": {"fired": 0, "resolved": 0, "durations": []}, "prev": {"fired": 0, "resolved": 0, "durations": []}}
    for alert_id, rule, service, fingerprint, sevs, fired, resolved, started, last_state, resolved_by in res.rows:
        began = fired or started
        duration_s = (resolved - began) / 1e6 if resolved and began and resolved >= began else None
        for key, lo, hi in (("cur", start_us, end_us), ("prev", prev_us, start_us)):
            if fired and lo <= fired < hi:
                stats[key]["fired"] += 1
            if resolved and lo <= resolved < hi:
                stats[key]["resolved"] += 1
                if duration_s is not None:
                    stats[key]["durations"].append(duration_s)
        in_cur = any(t and start_us <= t < end_us for t in (fired, resolved)) or (
            last_state != "resolved" and bool(fired) and fired < end_us)
        if in_cur:
            items.append({
                "alert_id": alert_id, "rule": rule, "service": service, "fingerprint": fingerprint,
                "severity": max(sevs or ["none"], key=lambda s: SEVERITY_ORDER.get(s, 0)),
                "fired_at": _iso(fired), "resolved_at": _iso(resolved) if resolved and resolved < end_us else None,
                "state": last_state, "duration_s": duration_s if resolved and resolved < end_us else None,
                "resolved_by": resolved_by or None,
            })
    items.sort(key=lambda a: (a["fired_at"] or "", a["alert_id"]))

    def mttr(durations: list[float]) -> float | None:
        return sum(durations) / len(durations) if durations else None

    cur, prev = stats["cur"], stats["prev"]
    return {
        "fired": cur["fired"], "resolved": cur["resolved"], "mttr_s": mttr(cur["durations"]),
        "previous": {"fired": prev["fired"], "resolved": prev["resolved"], "mttr_s": mttr(prev["durations"])},
        "change": {"fired_pct": _pct(cur["fired"], prev["fired"]),
                   "mttr_pct": _pct(mttr(cur["durations"]), mttr(prev["durations"]))},
        "items": items,
    }


def _health(ask: Ask, db: str, base: dict[str, Any], svc: str, in_raw: str, cur_raw: str) -> dict[str, Any]:
    res = ask(
        f"SELECT service, check, countIf({cur_raw}) AS total, countIf({cur_raw} AND status = 'unhealthy'),"
        f" countIf({cur_raw} AND status = 'degraded'), countIf(NOT ({cur_raw}) AND status != 'healthy'),"
        f" argMaxIf(error, ts, {cur_raw} AND status != 'healthy'),"
        f" maxIf(toUnixTimestamp64Micro(ts), {cur_raw} AND status != 'healthy')"
        f" FROM {db}.health_checks WHERE {in_raw}{svc} GROUP BY service, check ORDER BY service, check",
        base,
    )
    items = []
    failures = prev_failures = 0
    for service, check, total, unhealthy, degraded, prev_bad, last_error, last_failure in res.rows:
        failures += unhealthy + degraded
        prev_failures += prev_bad
        if unhealthy or degraded:
            items.append({"service": service, "check": check, "checks": int(total), "unhealthy": int(unhealthy),
                          "degraded": int(degraded), "last_error": last_error or None,
                          "last_failure": _iso(last_failure)})
    items.sort(key=lambda h: (-(h["unhealthy"] + h["degraded"]), h["service"], h["check"]))
    return {"failures": failures, "previous_failures": prev_failures,
            "change_pct": _pct(failures, prev_failures), "items": items}


def bucket_minutes(total_minutes: float) -> int:
    for m in BUCKET_MINUTES:
        if total_minutes / m <= MAX_POINTS:
            return m
    return BUCKET_MINUTES[-1]


def _series(ask: Ask, db: str, base: dict[str, Any], svc: str, start_s: int, end_s: int) -> dict[str, Any]:
    bucket = bucket_minutes((end_s - start_s) / 60)
    params = {**base, "bucket": bucket}
    window = "minute >= toDateTime({start:UInt32}, 'UTC') AND minute < toDateTime({end:UInt32}, 'UTC')"
    # Buckets start at the period's start (not at the epoch's), so none is cut short at either end.
    t_expr = ("{start:UInt32} + intDiv(toUnixTimestamp(minute) - {start:UInt32}, {bucket:UInt32} * 60)"
              " * {bucket:UInt32} * 60")
    p95 = QUANTILES_FN.replace("(", "Merge(", 1)
    points: dict[tuple[int, str], dict[str, Any]] = {}

    def point(t: int, service: str) -> dict[str, Any]:
        return points.setdefault((t, service), {"t": t, "service": service, "requests": 0, "errors": 0,
                                                "p95_ms": None})

    req = ask(
        f"SELECT {t_expr} AS t, service, sum(samples), {p95}(value_quantiles)[{QUANTILE_LEVELS.index(0.95) + 1}]"
        f" FROM {db}.metrics_1m WHERE {window} AND name IN {{names:Array(String)}}{svc}"
        " GROUP BY t, service ORDER BY t, service",
        params,
    )
    for t, service, n, q95 in req.rows:
        p = point(int(t), service)
        p["requests"], p["p95_ms"] = int(n), _num(q95)
    err = ask(
        f"SELECT {t_expr} AS t, service, sum(events) FROM {db}.log_counts_1m"
        f" WHERE {window} AND level IN {{levels:Array(String)}}{svc} GROUP BY t, service ORDER BY t, service",
        params,
    )
    for t, service, n in err.rows:
        point(int(t), service)["errors"] = int(n)
    return {"bucket_s": bucket * 60, "start": start_s, "end": end_s,
            "points": sorted(points.values(), key=lambda p: (p["t"], p["service"]))}


# -- rendering ----------------------------------------------------------------------------

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def _nice_max(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if x <= m * exp:
            return m * exp
    return 10 * exp


def svg_line_chart(title: str, unit: str, series: dict[str, list[tuple[int, float | None]]], start: int,
                   end: int, width: int = 640, height: int = 220) -> str:
    """An inline SVG line chart (one line per series, time on x); every label is escaped."""
    left, right, top, bottom = 56, 120, 28, 28
    pw, ph = width - left - right, height - top - bottom
    values = [v for pts in series.values() for _, v in pts if v is not None]
    ymax = _nice_max(max(values) if values else 0.0)
    span = max(1, end - start)

    def x(t: int) -> float:
        return left + (t - start) / span * pw

    def y(v: float) -> float:
        return top + ph - v / ymax * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" class="chart"><title>{html.escape(title)}</title>',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">'
                   f'{html.escape(_short_num(v))}{html.escape(unit)}</text>')
    for frac in (0, 0.5, 1):
        t = int(start + frac * span)
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%m-%d %H:%M")
        out.append(f'<text x="{x(t):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{label}</text>')
    if not values:
        out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
                   'fill="#888">no data</text>')
    for i, (name, pts) in enumerate(sorted(series.items())[: len(PALETTE)]):
        color = PALETTE[i]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts if v is not None)
        if coords:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{coords}"/>')
        out.append(f'<rect x="{left + pw + 10}" y="{top + i * 16}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + pw + 24}" y="{top + i * 16 + 9}" font-size="11">'
                   f'{html.escape(name[:16])}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_bar_chart(title: str, bars: list[tuple[str, float]], unit: str = "", width: int = 640) -> str:
    """An inline SVG horizontal bar chart; every label is escaped."""
    row, left = 20, 140
    height = 30 + row * max(1, len(bars))
    vmax = _nice_max(max((v for _, v in bars), default=0.0))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" class="chart"><title>{html.escape(title)}</title>',
           f'<text x="4" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, v) in enumerate(bars):
        yy = 26 + i * row
        w = (width - left - 80) * (v / vmax)
        out.append(f'<text x="{left - 6}" y="{yy + 12}" font-size="11" text-anchor="end">'
                   f'{html.escape(label[:22])}</text>')
        out.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="{row - 6}" fill="#d62728"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{yy + 12}" font-size="11">'
                   f'{html.escape(_short_num(v))}{html.escape(unit)}</text>')
    if not bars:
        out.append('<text x="4" y="42" font-size="12" fill="#888">none</text>')
    out.append("</svg>")
    return "".join(out)


def _short_num(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2g}"


def charts(doc: dict[str, Any]) -> dict[str, str]:
    """The HTML report's charts, as SVG strings."""
    s = doc["series"]
    by: dict[str, dict[str, list[tuple[int, float | None]]]] = {"requests": {}, "errors": {}, "p95_ms": {}}
    for p in s["points"]:
        for key in by:
            by[key].setdefault(p["service"], []).append((p["t"], p[key]))
    per = f"per {s['bucket_s'] // 60} min"
    return {
        "requests": svg_line_chart(f"Requests {per}", "", by["requests"], s["start"], s["end"]),
        "errors": svg_line_chart(f"Errors {per}", "", by["errors"], s["start"], s["end"]),
        "latency": svg_line_chart(f"p95 latency {per}", " ms", by["p95_ms"], s["start"], s["end"]),
        "error_rate": svg_bar_chart(
            "Error rate by service", [(e["service"], 100 * (e["error_rate"] or 0.0)) for e in doc["services"]], " %"),
    }


def _environment(autoescape: bool) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=autoescape, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, ms=fmt_ms, dur=fmt_dur, change=fmt_change, rate=fmt_rate,
                       mdcell=md_cell, mdcode=md_code)
    return env


def fmt_num(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}" if float(v) == int(v) else f"{v:,.2f}"


def fmt_pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1f} %"


def fmt_rate(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def fmt_ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f} ms"


def fmt_dur(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v < 120:
        return f"{v:.0f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.1f} h"


def fmt_change(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{'+' if v >= 0 else ''}{v:.1f} %"


def md_cell(v: Any) -> str:
    """Markdown table cell: pipes and newlines would break the table, and Markdown passes HTML through."""
    return html.escape(str(v), quote=False).replace("|", "\\|").replace("\n", " ")


def md_code(v: Any) -> str:
    """Markdown code span in a table cell: entities are literal there, so only pipes and backticks change."""
    return str(v).replace("`", "'").replace("|", "\\|").replace("\n", " ")


def render_report(doc: dict[str, Any], fmt: str = "text") -> str:
    """The document as text, md, html or json."""
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    template = {"text": "report.txt.j2", "md": "report.md.j2", "html": "report.html.j2"}[fmt]
    env = _environment(autoescape=fmt == "html")
    extra: dict[str, Any] = {}
    if fmt == "html":
        from markupsafe import Markup

        # The SVGs are assembled here from escaped parts, so they may go in unescaped.
        extra["charts"] = {k: Markup(v) for k, v in charts(doc).items()}
    return env.get_template(template).render(r=doc, **extra)
