"""``tocsin notify test`` and ``tocsin silence add|expire|list``: checking receivers and muting alerts.

Thin shells over ``tocsin.sinks.notify.sink.send_probe`` and ``tocsin.sinks.notify.silences``; a test
whose delivery finally failed exits 1 (``SinkError``), like every failed piece of work.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from tocsin.app.cli.app import config_of
from tocsin.core.errors import ConfigError, SinkError
from tocsin.core.validation import safe_cells, safe_text

notify_app = typer.Typer(help="Notifications: send a test through a receiver.\n\nExample: tocsin notify test",
                         no_args_is_help=True)
silence_app = typer.Typer(help="Silences: mute matching alerts for a while.\n\n"
                               "Example: tocsin silence add --matcher service=shop --duration 2h --reason deploy",
                          no_args_is_help=True)

AD_HOC = "ad-hoc"


def _ad_hoc_receivers(webhook: str | None, slack: str | None, pagerduty: str | None, routing_key: str | None,
                      alertmanager: str | None, smtp: str | None, to: list[str], smtp_security: str,
                      smtp_user: str | None, smtp_password: str | None, timeout_s: float) -> list[Any]:
    from pydantic import TypeAdapter, ValidationError

    from tocsin.sinks.notify import ReceiverConfig

    specs: list[dict[str, Any]] = []
    common = {"timeout_s": timeout_s}
    if webhook:
        specs.append({"type": "webhook", "name": f"{AD_HOC}-webhook", "url": webhook})
    if slack:
        specs.append({"type": "slack", "name": f"{AD_HOC}-slack", "url": slack})
    if pagerduty:
        if not routing_key:
            raise ConfigError("--pagerduty needs --routing-key")
        specs.append({"type": "pagerduty", "name": f"{AD_HOC}-pagerduty", "url": pagerduty, "routing_key": routing_key})
    if alertmanager:
        specs.append({"type": "alertmanager", "name": f"{AD_HOC}-alertmanager", "url": alertmanager})
    if smtp:
        host, _, port = smtp.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--smtp {smtp!r}: expected HOST:PORT")
        if not to:
            raise ConfigError("--smtp needs at least one --to ADDRESS")
        specs.append({"type": "email", "name": f"{AD_HOC}-email", "smtp_host": host, "smtp_port": int(port),
                      "security": smtp_security, "to": to, "username": smtp_user, "password": smtp_password})
    adapter: TypeAdapter[Any] = TypeAdapter(ReceiverConfig)
    out = []
    for spec in specs:
        try:
            out.append(adapter.validate_python({**common, **spec}))
        except ValidationError as exc:
            raise ConfigError([f"--{spec['type']}: {e['loc'][-1] if e['loc'] else ''}: {e['msg']}"
                               for e in exc.errors()]) from None
    return out


@notify_app.command("test")
def test(
    ctx: typer.Context,
    receiver: list[str] = typer.Option([], "--receiver", "-r", help="A configured receiver (repeatable); "
                                       "default: every configured one."),
    webhook: str | None = typer.Option(None, "--webhook", help="Ad hoc: POST Alertmanager v4 JSON to this URL."),
    slack: str | None = typer.Option(None, "--slack", help="Ad hoc: a Slack incoming-webhook URL."),
    pagerduty: str | None = typer.Option(None, "--pagerduty", help="Ad hoc: a PagerDuty Events v2 URL."),
    routing_key: str | None = typer.Option(None, "--routing-key", envvar="TOCSIN_PAGERDUTY_ROUTING_KEY",
                                           help="Routing key for --pagerduty."),
    alertmanager: str | None = typer.Option(None, "--alertmanager", help="Ad hoc: an Alertmanager base URL."),
    smtp: str | None = typer.Option(None, "--smtp", help="Ad hoc: an SMTP server, HOST:PORT."),
    to: list[str] = typer.Option([], "--to", help="Recipient for --smtp (repeatable)."),
    smtp_security: str = typer.Option("none", "--smtp-security", help="starttls, ssl or none (for --smtp)."),
    smtp_user: str | None = typer.Option(None, "--smtp-user", help="SMTP AUTH user (for --smtp)."),
    smtp_password: str | None = typer.Option(None, "--smtp-password", envvar="TOCSIN_SMTP_PASSWORD",
                                             help="SMTP AUTH password (for --smtp; better via the env var)."),
    attempts: int | None = typer.Option(None, "--attempts", min=1, help="Attempts before giving up "
                                        "(default: the receiver's max_attempts; 3 ad hoc)."),
    timeout_s: float = typer.Option(10.0, "--timeout", min=0.1, help="Per-request timeout in seconds (ad hoc)."),
) -> None:
    """Send a test notification through receivers; exits 1 when a delivery finally failed.

    Example: tocsin notify test --receiver ops-mail
    """
    from tocsin.sinks.notify import RetryPolicy, send_probe

    cfg = config_of(ctx)
    ad_hoc = _ad_hoc_receivers(webhook, slack, pagerduty, routing_key, alertmanager, smtp, to, smtp_security,
                               smtp_user, smtp_password, timeout_s)
    if ad_hoc and receiver:
        raise ConfigError("use either --receiver or an ad-hoc receiver option, not both")
    if ad_hoc:
        targets = ad_hoc
    else:
        known = {r.name: r for r in cfg.notify.receivers}
        unknown = [name for name in receiver if name not in known]
        if unknown:
            raise ConfigError(f"unknown receiver(s) {', '.join(unknown)}; configured: {', '.join(known) or 'none'}")
        targets = [known[name] for name in receiver] if receiver else list(known.values())
        if not targets:
            raise ConfigError("no receivers configured (notify.receivers); or use --webhook, --slack, "
                              "--pagerduty, --alertmanager or --smtp")
    failed = []
    for rc in targets:
        policy = RetryPolicy.of(rc)
        if attempts is not None or ad_hoc:
            policy = RetryPolicy(attempts or 3, 120.0, min(rc.backoff_initial_s, 1.0), 10.0, 30.0)
        for state, result, n in send_probe(rc, cfg, policy):
            proto = "SMTP" if rc.type == "email" else "HTTP"
            detail = f" [{proto} {result.http_status}]" if result.http_status else ""
            outcome = "sent" if result.outcome == "sent" else "failed"
            line = f"{rc.name} ({rc.type}) {state}: {outcome} after {n} attempt(s){detail}"
            if result.error:
                line += f": {result.error}"
            typer.echo(safe_text(line, one_line=True))
            if result.outcome != "sent":
                failed.append(rc.name)
    if failed:
        raise SinkError(f"test notification not delivered to: {', '.join(failed)}")


def _fmt_ts(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@silence_app.command("add")
def silence_add(
    ctx: typer.Context,
    matcher: list[str] = typer.Option(..., "--matcher", "-m", help="label=value, label!=value, label=~regex or "
                                      "label!~regex (repeatable, all must match)."),
    duration: str = typer.Option(..., "--duration", "-d", help="How long: 30m, 2h, 1h30m, 1d (at most 90d)."),
    reason: str = typer.Option(..., "--reason", help="Why (shown in `tocsin silence list`)."),
    author: str | None = typer.Option(None, "--author", help="Who (default: user@host)."),
    start: str | None = typer.Option(None, "--start", help="Planned start: ISO 8601 (2026-05-01T22:00+02:00, "
                                     "UTC without an offset) or +2h from now (default: now)."),
) -> None:
    """Mute alerts matching every matcher for a while, now or from a planned start; prints the silence id.

    Example: tocsin silence add --matcher service=shop --duration 2h --reason "deploy 4.2"
    Example: tocsin silence add -m service=~"db|cache" -d 4h --start 2026-05-01T22:00+02:00 --reason upgrade
    """
    from tocsin.sinks.notify import MatcherSpec, create_event, parse_duration, parse_start, publish

    cfg = config_of(ctx)
    try:
        matchers = [MatcherSpec.parse(m) for m in matcher]
    except ValueError as exc:
        raise ConfigError(f"--matcher: {exc}") from None
    start_us = parse_start(start) if start else None
    event = create_event(matchers, parse_duration(duration), reason, author, start_us=start_us)
    publish(cfg.kafka, cfg.kafka.topics.silences, event)
    typer.echo(safe_text(f"{event['silence_id']} from {_fmt_ts(event['starts_at'])} until {_fmt_ts(event['ends_at'])}: "
                         f"{', '.join(str(m) for m in matchers)}", one_line=True))


@silence_app.command("expire")
def silence_expire(
    ctx: typer.Context,
    silence_id: str = typer.Argument(..., help="The id `tocsin silence add` printed."),
    author: str | None = typer.Option(None, "--author", help="Who (default: user@host)."),
) -> None:
    """End a silence now.

    Example: tocsin silence expire 3f2a9c1b0d4e
    """
    from tocsin.core.events import now_us
    from tocsin.sinks.notify import expire_event, publish, read_store

    cfg = config_of(ctx)
    silence = read_store(cfg.kafka).get(silence_id)
    if silence is None or silence.ends_at_us <= now_us():
        raise ConfigError(f"no active silence {silence_id!r} (see `tocsin silence list`)")
    publish(cfg.kafka, cfg.kafka.topics.silences, expire_event(silence, author))
    typer.echo(f"{silence_id} expired")


@silence_app.command("list")
def silence_list(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List active and pending silences.

    Example: tocsin silence list
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from tocsin.core.events import now_us
    from tocsin.sinks.notify import read_store

    cfg = config_of(ctx)
    now = now_us()
    silences = read_store(cfg.kafka).active(now)
    if json_out:
        typer.echo(json.dumps([s.describe(now) for s in silences], indent=2))
        return
    if not silences:
        typer.echo("no active silences")
        return
    table = Table("id", "state", "matchers", "from", "until", "reason", "created by")
    for s in silences:
        table.add_row(*safe_cells([s.id, s.state(now), ", ".join(str(m) for m in s.matchers), _fmt_ts(s.starts_at_us),
                                   _fmt_ts(s.ends_at_us), s.reason, s.actor]))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the root app."""
    app.add_typer(notify_app, name="notify")
    app.add_typer(silence_app, name="silence")
