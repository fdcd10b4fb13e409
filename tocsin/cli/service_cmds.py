"""``tocsin start NAME``: run one registered service in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

import typer

from tocsin.cli.app import config_of
from tocsin.services import SERVICES, builder


def start(
    ctx: typer.Context,
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
) -> None:
    """Run a service in the foreground; SIGTERM or Ctrl-C stops it cleanly.

    Example: tocsin start processor
    """
    cfg = config_of(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    component = builder(service)(cfg)

    def _stop(signum: int, _frame: object) -> None:
        component.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with component:
        component.run()


def register(app: typer.Typer) -> None:
    app.command("start")(start)
