"""``tocsin config show|reference|check``: the effective configuration and the reference of every key."""

from __future__ import annotations

import json

import typer
import yaml

from tocsin.app.cli.app import config_of
from tocsin.app.configdoc import markdown
from tocsin.core.config import redact_tree

config_app = typer.Typer(help="The configuration: effective values, the reference of every key, validation.",
                         no_args_is_help=True)


@config_app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the effective configuration (file + environment), secrets masked.

    Example: tocsin --config tocsin.yaml config show
    """
    cfg = config_of(ctx)
    shown = redact_tree(json.loads(cfg.model_dump_json(exclude={"source"})))  # SecretStr masked; URLs too
    typer.echo(yaml.safe_dump(shown, sort_keys=False), nl=False)


@config_app.command("check")
def check(ctx: typer.Context) -> None:
    """Validate the configuration; exit 2 with every problem, naming file and field.

    Example: tocsin --config tocsin.yaml config check
    """
    cfg = config_of(ctx)
    typer.echo(f"ok: {cfg.source or 'defaults and environment'}")


@config_app.command("reference")
def reference() -> None:
    """Print every key with its type, default and meaning, as Markdown (the README's table).

    Example: tocsin config reference > docs/config.md
    """
    typer.echo(markdown(), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
