"""The root Typer app and the global ``--config`` option; ``tocsin.app.cli`` registers every command group on it."""

from __future__ import annotations

from pathlib import Path

import typer

from tocsin.app.config import TocsinConfig, load_config

app = typer.Typer(
    name="tocsin",
    help="Tocsin: production monitoring on Kafka and ClickHouse.\n\nExample: tocsin kafka up && tocsin topics create",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    """Per-invocation state: the config path, loaded once on first use."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._config: TocsinConfig | None = None

    @property
    def config(self) -> TocsinConfig:
        if self._config is None:
            self._config = load_config(self.path)
        return self._config


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="TOCSIN_CONFIG", help="YAML config file (default: built-in defaults)."
    ),
) -> None:
    ctx.obj = State(config)


def config_of(ctx: typer.Context) -> TocsinConfig:
    """The validated config of this invocation (raises ConfigError -> exit 2)."""
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state.config
