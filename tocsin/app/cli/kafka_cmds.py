"""``tocsin kafka up|down|status`` and ``tocsin topics create|list``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tocsin.app.cli.app import config_of
from tocsin.core import kafka as kafka_api
from tocsin.core import localkafka

kafka_app = typer.Typer(help="The local Apache Kafka broker (KRaft, 127.0.0.1), from Maven Central jars.",
                        no_args_is_help=True)
topics_app = typer.Typer(help="Tocsin's Kafka topics.", no_args_is_help=True)
console = Console()


@kafka_app.command("up")
def kafka_up(
    port: int | None = typer.Option(None, help="Port to listen on (default: a free one)."),
    data: Path | None = typer.Option(None, help="Data directory (default: $TOCSIN_HOME/kafka)."),
    secure: bool = typer.Option(False, "--secure", help="Also a SASL_SSL listener (SCRAM-SHA-512, PLAIN); its "
                                "client settings go to DATA/tls/client.yaml (mode 600), never to the terminal."),
) -> None:
    """Start the local broker, or reuse the running one; the last line is bootstrap=HOST:PORT.

    Example: tocsin kafka up --port 9092
    """
    import secrets

    import yaml

    if localkafka.running(data) is None:
        typer.echo("resolving Kafka jars (first run downloads them with Maven)...", err=True)
        localkafka.ensure_jars()
    setup = localkafka.SecureSetup(password=secrets.token_urlsafe(18)) if secure else None
    state = localkafka.up(port=port, data_dir=data, secure=setup)
    typer.echo(f"pid={state.pid} data={state.data_dir} version={state.version}")
    if setup is not None and state.secure_port:
        client = Path(state.data_dir) / "tls" / "client.yaml"
        client.write_text(yaml.safe_dump({"kafka": {
            "bootstrap_servers": state.secure_bootstrap, "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": setup.username,
            "sasl_plain_password": setup.password, "ssl_cafile": state.ca_file}}))
        client.chmod(0o600)
        typer.echo(f"secure_bootstrap={state.secure_bootstrap} client_config={client}")
    typer.echo(f"bootstrap={state.bootstrap}")


@kafka_app.command("down")
def kafka_down(data: Path | None = typer.Option(None, help="Data directory of the broker to stop.")) -> None:
    """Stop the local broker (SIGTERM, then SIGKILL after 30 s).

    Example: tocsin kafka down
    """
    state = localkafka.down(data)
    typer.echo(f"stopped pid {state.pid}" if state else "no local broker was running")


@kafka_app.command("status")
def kafka_status(
    data: Path | None = typer.Option(None, help="Data directory of the broker."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Whether the local broker runs and answers; exit 1 if not.

    Example: tocsin kafka status --json
    """
    state = localkafka.running(data)
    answering = bool(state and localkafka.metadata_ok(state.bootstrap))
    info = {
        "running": state is not None,
        "answering": answering,
        "bootstrap": state.bootstrap if state else None,
        "pid": state.pid if state else None,
        "version": state.version if state else localkafka.kafka_version(),
    }
    if as_json:
        typer.echo(json.dumps(info))
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in info.items()))
    raise typer.Exit(0 if answering else 1)


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create the topics that are missing (idempotent): partitions and retention from config.

    Example: tocsin topics create
    """
    cfg = config_of(ctx)
    for name, outcome in kafka_api.create_topics(cfg.kafka).items():
        typer.echo(f"{name}\t{outcome}")


@topics_app.command("list")
def topics_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List topics with partitions, cleanup policy and retention.

    Example: tocsin topics list --json
    """
    cfg = config_of(ctx)
    topics = kafka_api.describe_topics(cfg.kafka)
    if as_json:
        typer.echo(json.dumps(topics))
        return
    table = Table("topic", "partitions", "cleanup.policy", "retention.ms")
    for t in topics:
        table.add_row(t["name"], str(t["partitions"]), t["configs"].get("cleanup.policy", ""),
                      t["configs"].get("retention.ms", ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(topics_app, name="topics")
