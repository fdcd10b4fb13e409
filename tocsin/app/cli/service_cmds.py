"""``tocsin start NAME``: run one registered service in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

import typer

from tocsin.app import supervisor
from tocsin.app.cli.app import config_of
from tocsin.app.services import SERVICES, builder, with_heartbeats
from tocsin.core.config import RedactingFilter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class FieldsFormatter(logging.Formatter):
    """Log lines are short sentences; the structured fields (``extra=``) follow as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        return line + "".join(f" {k}={v}" for k, v in fields.items()) if fields else line


def start(
    ctx: typer.Context,
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background (tocsin stop ends it)."),
) -> None:
    """Run a service in the foreground (SIGTERM or Ctrl-C stops it cleanly), or detached.

    `all` runs processor, sinks and agent in one process: the embedded ClickHouse allows one owner.
    Example: tocsin start all --detach
    """
    cfg = config_of(ctx)  # validate before detaching: a bad file fails here, with exit 2
    builder(service)  # and an unknown name too
    if detach:
        record = supervisor.start_detached(service, cfg.source)
        typer.echo(f"{service} started: pid {record.pid}, log {record.log_file}")
        return
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # credentials inside URLs never reach the service log
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    component = with_heartbeats(cfg, service, builder(service)(cfg))

    def _stop(signum: int, _frame: object) -> None:
        component.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with component:
        component.run()


def register(app: typer.Typer) -> None:
    app.command("start")(start)
