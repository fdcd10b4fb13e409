"""Operating commands: ``stop``, ``status``, ``alerts [--follow]``, ``resolve``, ``ack``, ``unack``."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tocsin.app import alertlog, supervisor
from tocsin.app.cli.app import config_of
from tocsin.app.status import collect
from tocsin.core.events import iso, now_us
from tocsin.core.validation import safe_cells, safe_text
from tocsin.processors.ack import MAX_NOTE_CHARS, is_acked
from tocsin.processors.rules import parse_duration

console = Console()


def stop(names: list[str] | None = typer.Argument(None, help="Services to stop (default: all).")) -> None:
    """Stop detached services: SIGTERM, then SIGKILL after 30 s.

    Example: tocsin stop processor
    """
    results = supervisor.stop(names or None)
    if not results:
        typer.echo("no tocsin services were running")
    for record, outcome in results:
        typer.echo(f"{record.name}\tpid {record.pid}\t{outcome}")


def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Which services run, their lag, Kafka and ClickHouse reachability, active alerts by severity.

    Exit code 1 when Kafka or ClickHouse is unreachable or a recorded service died.
    Example: tocsin status --json
    """
    info = collect(config_of(ctx))
    healthy = info["kafka"]["reachable"] and info["clickhouse"]["reachable"] and all(
        s["running"] for s in info["services"])
    if as_json:
        typer.echo(json.dumps(info))
        raise typer.Exit(0 if healthy else 1)
    table = Table("service", "runs", "pid", "state", "uptime")
    for s in info["services"]:
        table.add_row(s["name"], ", ".join(s["members"]), str(s["pid"]),
                      "running" if s["running"] else "[red]dead[/red]", f"{s['uptime_s']:.0f} s")
    if info["services"]:
        console.print(table)
    else:
        console.print("no detached services on this host (tocsin start NAME --detach)")
    k = info["kafka"]
    if k["reachable"]:
        lag = ", ".join(f"{g}={'-' if v is None else v}" for g, v in k["lag"].items())
        console.print(f"kafka: reachable; consumer lag: {lag}")
    else:
        console.print(f"kafka: [red]unreachable[/red]: {k['error']}")
    ch = info["clickhouse"]
    console.print(f"clickhouse: {'reachable' if ch['reachable'] else '[red]unreachable[/red]'}: {ch['detail']}")
    if info["alerts"] is not None:
        sev = ", ".join(f"{k}={v}" for k, v in sorted(info["alerts"]["by_severity"].items())) or "none"
        console.print(f"active alerts: {info['alerts']['active']} ({sev})")
    raise typer.Exit(0 if healthy else 1)


def _ack_text(a: dict) -> str:
    """``acked by alice until ...: note`` for a live ack, ``ack lapsed`` for an expired one, else empty."""
    if not a.get("acked_by"):
        return ""
    if a["state"] not in alertlog.ACTIVE_STATES:
        return f"acked by {a['acked_by']}"
    if not is_acked(a, now_us()):
        return f"ack by {a['acked_by']} lapsed"
    until = f" until {iso(a['ack_expires_at'])}" if a.get("ack_expires_at") else ""
    note = f": {a['ack_note']}" if a.get("ack_note") else ""
    return safe_text(f"acked by {a['acked_by']}{until}{note}", one_line=True)


def _row(a: dict) -> list[str]:
    return [a["alert_id"], a["rule"], a["labels"].get("service", ""), a["severity"], a["state"],
            "" if a["value"] is None else f"{a['value']:.4g}", iso(a["started_at"]),
            iso(a["ended_at"]) if a["ended_at"] else "", _ack_text(a)]


def alerts(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Include resolved alerts (latest state of each)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Print transitions as they happen (Ctrl-C stops)."),
) -> None:
    """List active alerts from the alert changelog (tocsin.alerts), or follow it.

    Example: tocsin alerts --follow --json
    """
    cfg = config_of(ctx)
    if follow:
        try:
            for ev in alertlog.follow(cfg.kafka):
                if as_json:
                    typer.echo(json.dumps(ev))
                else:
                    line = (f"{iso(ev['ts'])} {ev['previous_state']}->{ev['state']:<8} {ev['severity']:<8} "
                            f"{ev['rule']} {ev['labels']} value={ev['value']} alert_id={ev['alert_id']}")
                    typer.echo(safe_text(line + (f" {_ack_text(ev)}" if ev.get("acked_by") else ""), one_line=True))
        except KeyboardInterrupt:
            return
        return
    latest = alertlog.latest_by_fingerprint(alertlog.read_transitions(cfg.kafka))
    rows = sorted((a for a in latest.values() if show_all or a["state"] in alertlog.ACTIVE_STATES),
                  key=lambda a: a["started_at"])
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("alert_id", "rule", "service", "severity", "state", "value", "started", "ended", "ack")
    for a in rows:
        table.add_row(*safe_cells(_row(a)))
    console.print(table if rows else "no active alerts")


def resolve(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert_id shown by `tocsin alerts`."),
    reason: str = typer.Option("", "--reason", help="Why (kept with the alert)."),
    actor: str = typer.Option("cli", "--actor", help="Who resolves it."),
) -> None:
    """Resolve an alert by hand: publishes a ControlEvent; the processor emits the transition.

    Exit code 1 if no such alert is known. Resolving a resolved alert is harmless.
    Example: tocsin resolve 3f2a...-1767225600000000 --reason "deployed fix"
    """
    cfg = config_of(ctx)
    match = _known_incident(cfg, alert_id)
    if match["state"] not in alertlog.ACTIVE_STATES:
        typer.echo(f"{alert_id} is already {match['state']}")
        return
    alertlog.publish_control(cfg.kafka, "resolve", alert_id=alert_id, fingerprint=match["fingerprint"],
                             reason=reason, actor=actor)
    typer.echo(f"resolve requested for {alert_id} at {iso(int(time.time() * 1e6))}")


def _known_incident(cfg, alert_id: str) -> dict:
    """The incident's latest transition on the alerts topic; exit 1 when the topic does not know it."""
    latest = alertlog.latest_by_fingerprint(alertlog.read_transitions(cfg.kafka))
    match = next((a for a in latest.values() if a["alert_id"] == alert_id), None)
    if match is None:
        typer.echo(f"error: no alert {safe_text(alert_id, one_line=True)!r} on {cfg.kafka.topics.alerts}", err=True)
        raise typer.Exit(1)
    return match


def _open_incident(cfg, alert_id: str) -> dict:
    match = _known_incident(cfg, alert_id)
    if match["state"] not in alertlog.ACTIVE_STATES:
        typer.echo(f"error: {alert_id} is {match['state']}: only an open alert can be acknowledged", err=True)
        raise typer.Exit(1)
    return match


def ack(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert_id shown by `tocsin alerts`."),
    note: str = typer.Option("", "--note", help="What you are doing about it (shown in notifications)."),
    for_: str | None = typer.Option(None, "--for", help="How long the ack holds (30m, 2h); default: until resolved."),
    actor: str | None = typer.Option(None, "--actor", help="Who acknowledges (default: your login name)."),
) -> None:
    """Acknowledge an open alert: repeat notifications stop (PagerDuty gets `acknowledge`) while it holds.

    An escalation of severity, the end of --for or `tocsin unack` starts them again.
    Exit code 1 if no such open alert is known.
    Example: tocsin ack 3f2a...-1767225600000000 --note "looking at the gateway" --for 2h
    """
    cfg = config_of(ctx)
    expires = None
    if for_ is not None:
        try:
            seconds = parse_duration(for_)
        except ValueError as exc:
            typer.echo(f"error: --for {for_!r}: {exc}", err=True)
            raise typer.Exit(2) from None
        if seconds <= 0:
            typer.echo("error: --for must be longer than 0 s", err=True)
            raise typer.Exit(2)
        expires = now_us() + int(seconds * 1e6)
    match = _open_incident(cfg, alert_id)
    alertlog.publish_control(cfg.kafka, "ack", alert_id=alert_id, fingerprint=match["fingerprint"],
                             reason=note[:MAX_NOTE_CHARS], actor=actor or _login(), ends_at=expires)
    until = f" until {iso(expires)}" if expires else ""
    typer.echo(f"ack requested for {alert_id}{until}")


def unack(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert_id shown by `tocsin alerts`."),
    actor: str | None = typer.Option(None, "--actor", help="Who withdraws the ack (default: your login name)."),
) -> None:
    """Withdraw the acknowledgement of an open alert: repeat notifications start again.

    Example: tocsin unack 3f2a...-1767225600000000
    """
    cfg = config_of(ctx)
    match = _open_incident(cfg, alert_id)
    if not match.get("acked_by"):
        typer.echo(f"{alert_id} is not acknowledged")
        return
    alertlog.publish_control(cfg.kafka, "unack", alert_id=alert_id, fingerprint=match["fingerprint"],
                             actor=actor or _login())
    typer.echo(f"unack requested for {alert_id}")


def why(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert_id shown by `tocsin alerts`."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows per receiver as JSON."),
) -> None:
    """Say, per receiver, what happened to an alert's notifications: sent, retried, failed, silenced (by which
    silence), inhibited, muted (by which interval), escalated; read from the notification log in ClickHouse.

    Example: tocsin why 3f2a...-1767225600000000
    """
    from tocsin.sinks.clickhouse.store_access import open_store
    from tocsin.sinks.notify import why as whylog

    store = open_store(config_of(ctx))
    try:
        explained = whylog.explain(whylog.read(store, alert_id))
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"alert_id": alert_id, "receivers": explained}, indent=2))
    else:
        typer.echo(whylog.render(alert_id, explained))


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def demo(
    duration: float = typer.Option(150.0, "--duration", help="Seconds from first request to giving up (default 150)."),
    json_summary: Path | None = typer.Option(None, "--json-summary", help="Write what happened to this JSON file."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Where the report goes (default $TOCSIN_HOME/demo)."),
) -> None:
    """Run the whole pipeline locally with a simulated shop and an injected incident; exit 0 if it was caught.

    Example: tocsin demo --duration 90 --json-summary demo.json
    """
    from tocsin.app.demo import run

    raise typer.Exit(run(duration, json_summary, out_dir))


def register(app: typer.Typer) -> None:
    app.command("stop")(stop)
    app.command("status")(status)
    app.command("alerts")(alerts)
    app.command("resolve")(resolve)
    app.command("ack")(ack)
    app.command("unack")(unack)
    app.command("why")(why)
    app.command("demo")(demo)
