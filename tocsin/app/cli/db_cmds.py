"""``tocsin db migrate``, ``tocsin query``, ``tocsin report`` and ``tocsin cleanup``: the history in ClickHouse.

query, report and cleanup reach the store through ``tocsin.sinks.clickhouse.store_access.open_store``:
directly, or through the HTTP API of the process holding the embedded engine.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tocsin.app.cli.app import config_of
from tocsin.core.errors import SinkError, StoreError
from tocsin.core.validation import safe_text

db_app = typer.Typer(help="The ClickHouse schema of Tocsin's history.", no_args_is_help=True)
console = Console()


class QueryFormat(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ReportFormat(enum.StrEnum):
    text = "text"
    md = "md"
    html = "html"
    json = "json"


@db_app.command("migrate")
def db_migrate(
    ctx: typer.Context,
    cluster: str | None = typer.Option(None, "--cluster", help="Render ON CLUSTER DDL with Replicated + Distributed."),
    print_only: bool = typer.Option(False, "--print", help="Print the DDL instead of running it."),
) -> None:
    """Create or upgrade the tables, rollups and TTLs (idempotent); prints what it ran.

    Example: tocsin db migrate --cluster prod --print
    """
    from tocsin.sinks.clickhouse.schema import migrate, render
    from tocsin.sinks.clickhouse.store_access import chdb_path, owner_pid

    cfg = config_of(ctx)
    cluster = cluster or cfg.sink_clickhouse.cluster
    if print_only:
        for stmt in render(cfg.clickhouse.database, cfg.clickhouse.retention_days, cluster):
            typer.echo(f"{stmt};\n")
        return
    path = chdb_path(cfg.clickhouse.resolved_url())
    pid = owner_pid(path) if path is not None else None
    if pid is not None:
        raise StoreError(f"the embedded store at {path} is held by pid {pid}; its sink migrates when it starts "
                         "(sink_clickhouse.migrate_on_start), or stop it and run this again")
    from tocsin.core.clickhouse import connect

    applied = migrate(connect(cfg.clickhouse), cfg.clickhouse.database, cfg.clickhouse.retention_days, cluster)
    for stmt in applied:
        typer.echo(stmt.splitlines()[0] + (" ..." if "\n" in stmt else ""))
    typer.echo(f"{len(applied)} statement(s) applied to {cfg.clickhouse.database}"
               + ("" if applied else " (schema is up to date)"))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _shown(v: Any) -> Text:
    """A table cell for a terminal: control characters escaped, never read as rich markup."""
    return Text(safe_text(_cell(v), one_line=True))


def query(
    ctx: typer.Context,
    sql: str | None = typer.Argument(None, help="One SELECT over Tocsin's tables (unqualified names are its own)."),
    fmt: QueryFormat = typer.Option(QueryFormat.table, "--format", "-f", help="table, json or csv."),
    running: bool = typer.Option(False, "--running", help="List the user queries running now (id, time, rows)."),
    kill: str | None = typer.Option(None, "--kill", metavar="ID", help="Cancel the running query ID."),
) -> None:
    """Run a read-only SQL query against the history and print the result.

    Only Tocsin's tables are readable: no files, URLs or other databases, and
    the server's limits (time, memory, rows) hold. Refused queries exit 2.

    Example: tocsin query "SELECT service, count() FROM tocsin.logs GROUP BY service" --format csv
    """
    from tocsin.sinks.clickhouse.store_access import open_store

    if (sql is None) == (not running and kill is None) or (running and kill is not None):
        raise typer.BadParameter("give one of: SQL, --running, --kill ID")
    store = open_store(config_of(ctx))
    try:
        if kill is not None:
            killed = store.kill(kill)
            typer.echo(f"killed query {kill}" if killed else f"no query {kill} is running")
            if not killed:
                raise typer.Exit(1)
            return
        if running:  # tab-separated: ids whole (a table would cut them), easy to pipe into --kill
            typer.echo("id\telapsed_s\tread_rows\tmemory_bytes\tsql")
            for q in store.running():
                typer.echo(f"{q['id']}\t{q['elapsed_s']:.1f}\t{q['read_rows']}\t{q['memory_bytes']}\t"
                           f"{safe_text(q['sql'][:200], one_line=True)}")
            return
        assert sql is not None
        res = store.query(sql)
    finally:
        store.close()
    if fmt is QueryFormat.json:
        typer.echo(json.dumps([dict(zip(res.columns, row, strict=True)) for row in res.rows], indent=2,
                              ensure_ascii=False))
    elif fmt is QueryFormat.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(res.columns)
        writer.writerows([safe_text(_cell(v)) for v in row] for row in res.rows)
        typer.echo(buf.getvalue(), nl=False)
    else:
        table = Table(*[_shown(c) for c in res.columns], show_lines=False)
        for row in res.rows:
            table.add_row(*[_shown(v) for v in row])
        console.print(table)
        console.print(f"{len(res.rows)} row(s)", style="dim")
    if res.truncated:
        print(f"warning: result cut at {len(res.rows)} rows (sink_clickhouse.query_max_rows)", file=sys.stderr)


def report(
    ctx: typer.Context,
    hours: float = typer.Option(24.0, "--hours", min=0.0167, help="Length of the period, ending now."),
    service: str | None = typer.Option(None, "--service", help="Only this service."),
    fmt: ReportFormat = typer.Option(ReportFormat.text, "--format", "-f", help="text, md, html or json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    email: bool = typer.Option(False, "--email", help="Also mail it to MONITORING_SUMMARY_RECIPIENTS."),
) -> None:
    """Performance report: requests, errors, latency, top errors, alerts and MTTR, health failures, vs before.

    Example: tocsin report --hours 24 --format html --out report.html
    """
    from tocsin.sinks.clickhouse.reports import render_report
    from tocsin.sinks.clickhouse.store_access import open_store

    cfg = config_of(ctx)
    store = open_store(cfg)
    try:
        with _working(f"building the {hours:g} h report ({store.route} store)"):
            doc = store.report(hours, service)
    finally:
        store.close()
    if email:
        from tocsin.sinks.notify.summary import send_summary

        result = send_summary(cfg, doc)
        if result.outcome != "sent":
            raise SinkError(f"summary email not delivered: {result.error}")
        typer.echo(f"mailed the report to {', '.join(cfg.monitoring_summary_recipients)}", err=True)
    text = render_report(doc, fmt.value)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out} ({fmt.value}, {len(text)} bytes)")


def cleanup(
    ctx: typer.Context,
    days: int = typer.Option(..., "--days", min=0, help="Keep this many days of history."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be removed."),
) -> None:
    """Remove history older than N days: whole days by partition, the boundary day by row.

    Example: tocsin cleanup --days 30 --dry-run
    """
    from tocsin.sinks.clickhouse.store_access import open_store

    store = open_store(config_of(ctx))
    try:
        with _working(f"cleaning up history older than {days} days ({store.route} store)"):
            res = store.cleanup(days, dry_run)
    finally:
        store.close()
    table = Table("table", "action", "day", "rows", "bytes")
    for a in res["actions"]:
        table.add_row(a["table"], a["action"], a["day"], f"{a['rows']:,}", f"{a['bytes']:,}" if a["bytes"] else "")
    if res["actions"]:
        console.print(table)
    verb = "would remove" if res["dry_run"] else "removed"
    typer.echo(f"{verb} {res['rows_removed']:,} row(s) older than {res['cutoff']} "
               f"({len(res['actions'])} action(s), {res['bytes_removed']:,} bytes in dropped partitions)")


def archive(
    ctx: typer.Context,
    older_than: int = typer.Option(..., "--older-than", min=0, help="Archive whole UTC days older than this."),
    to: str = typer.Option(".", "--to", help="Directory for the Parquet files, under jobs.archive_dir "
                                             "(relative to it); anything outside is refused (exit 2)."),
) -> None:
    """Archive alert history to Parquet files, one per UTC day; days already archived are skipped.

    Example: tocsin archive --older-than 23 --to weekly
    """
    from tocsin.sinks.clickhouse.store_access import open_store

    store = open_store(config_of(ctx))
    try:
        with _working(f"archiving alert history older than {older_than} days ({store.route} store)"):
            days = store.archive(older_than, to)
    finally:
        store.close()
    for d in days:
        typer.echo(f"{d['day']}\t{d['rows']:>8} rows\t{'exists' if d['skipped'] else 'written'}\t{d['path']}")
    typer.echo(f"{sum(not d['skipped'] for d in days)} file(s) written, {sum(d['skipped'] for d in days)} existed")


@contextlib.contextmanager
def _working(what: str) -> Iterator[None]:
    """A spinner with elapsed time on a terminal (long work shows progress); silent when piped."""
    if not console.is_terminal:
        yield
        return
    with console.status(f"{what}..."):
        yield


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the root app."""
    app.add_typer(db_app, name="db")
    app.command("query")(query)
    app.command("report")(report)
    app.command("cleanup")(cleanup)
    app.command("archive")(archive)
