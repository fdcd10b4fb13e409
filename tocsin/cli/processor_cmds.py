"""CLI commands of the processor area (registered by tocsin.cli.app)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the root app."""
