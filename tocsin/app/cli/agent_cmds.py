"""CLI commands of the agent area: ``tocsin ship``, ``tocsin agent metrics``, ``tocsin health``."""

from __future__ import annotations

import glob
import json
import logging
import signal
import sys
import time
from pathlib import Path

import typer

from tocsin.app.cli.app import config_of
from tocsin.core.config import RedactingFilter
from tocsin.core.errors import ConfigError

agent_app = typer.Typer(help="Agents that run on application servers.\n\nExample: tocsin agent metrics --once",
                        no_args_is_help=True)


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # credentials inside URLs never reach the log
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO


def _stop_on_signals(component: object) -> None:
    def _stop(signum: int, _frame: object) -> None:
        component.stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def ship(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files or glob patterns to tail (quote globs)."),
    service: str = typer.Option(..., "--service", "-s", help="Service name: Kafka key and event `service`."),
    parser: str = typer.Option("json", "--parser", "-p", help="json, nginx, text or regex:PATTERN."),
    state: Path | None = typer.Option(
        None, "--state", help="Checkpoint file; without it a restart ships every file from the start again."
    ),
    exit_at_eof: bool = typer.Option(
        False, "--exit-at-eof", help="Exit 0 once every line present at start is acknowledged by Kafka."
    ),
    multiline: bool = typer.Option(True, "--multiline/--no-multiline", help="Join tracebacks to their line."),
    stats: bool = typer.Option(False, "--stats", help="Print the shipper's counters as JSON on exit."),
) -> None:
    """Ship log files to the logs topic, at least once (a state file makes restarts resume).

    Example: tocsin ship /var/log/shop/application.log --service shop --state /var/lib/tocsin/shop.state
    """
    from pydantic import ValidationError

    from tocsin.core.config import format_validation_error
    from tocsin.producers.config import LogInputConfig
    from tocsin.producers.logship import LogShipper

    cfg = config_of(ctx)
    try:
        source = LogInputConfig(paths=paths, service=service, parser=parser, multiline=multiline)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("command line", exc)) from None
    for pattern in paths:
        if not glob.glob(pattern):
            print(f"warning: {pattern} matches no file yet", file=sys.stderr)
    _log_to_stderr()
    shipper = LogShipper(cfg, inputs=[source], state_file=state or False, exit_at_eof=exit_at_eof)
    _stop_on_signals(shipper)
    started = time.monotonic()
    with shipper:
        shipper.run()
    if stats:
        counters = shipper.stats_dict()
        counters["elapsed_s"] = round(time.monotonic() - started, 3)  # type: ignore[assignment]
        print(json.dumps(counters), file=sys.stdout)
    if exit_at_eof and not shipper.finished:
        raise typer.Exit(1)  # stopped by a signal before everything was acknowledged


def metrics(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Take one sample, print it, do not publish."),
    interval_s: float | None = typer.Option(None, "--interval-s", help="Override agents.metrics.interval_s."),
) -> None:
    """Sample CPU, memory, disk, network and processes with psutil and publish MetricEvents.

    Example: tocsin agent metrics --interval-s 10
    """
    from tocsin.producers.metrics import MetricsAgent, sample_once

    cfg = config_of(ctx)
    if once:
        for event in sample_once(cfg):
            labels = ",".join(f"{k}={v}" for k, v in sorted(event["labels"].items()))
            print(f"{event['name']}{{{labels}}} {event['value']:.3f} {event['unit']}")
        return
    _log_to_stderr()
    agent = MetricsAgent(cfg, interval_s=interval_s)
    _stop_on_signals(agent)
    with agent:
        agent.run()


def health(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the seed's detailed-health JSON."),
    publish: bool = typer.Option(False, "--publish", help="Also send the results to the health topic."),
) -> None:
    """Run every configured health check now; exit 1 when any is unhealthy.

    Example: tocsin health --json
    """
    from tocsin.producers.health import HealthProber, overall_status, publish_results, seed_entry

    cfg = config_of(ctx)
    results = HealthProber(cfg).run_all()
    if publish:
        publish_results(cfg, results)
    overall = overall_status(results)
    if as_json:
        from tocsin.core.events import iso, now_us

        print(json.dumps({"overall_status": overall, "timestamp": iso(now_us()),
                          "health_checks": [seed_entry(r) for r in results]}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"health: {overall}")
        for column in ("check", "status", "time ms", "details", "error"):
            table.add_column(column)
        colors = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}
        for r in results:
            rt = "" if r["response_time_ms"] is None else f"{r['response_time_ms']:.1f}"
            details = ", ".join(f"{k}={v}" for k, v in r["details"].items())
            table.add_row(r["check"], f"[{colors[r['status']]}]{r['status']}[/]", rt, details, r["error"] or "")
        Console().print(table)
    if overall == "unhealthy":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the root app."""
    app.command("ship")(ship)
    app.command("health")(health)
    agent_app.command("metrics")(metrics)
    app.add_typer(agent_app, name="agent")
