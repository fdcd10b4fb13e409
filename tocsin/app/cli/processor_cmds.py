"""``tocsin rules check [FILE]`` validates a rule file; ``tocsin rules test FILE...`` runs its unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tocsin.app.cli.app import config_of
from tocsin.processors.rules import DEFAULT_RULES, RuleSet, RuleSpec, load_rules

rules_app = typer.Typer(help="Alert rules of the stream processor.", no_args_is_help=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _measure(s: RuleSpec) -> str:
    """What a rule computes, in a table cell."""
    if s.kind == "absence":
        return f"absent {_duration(s.absent_for)}"
    if s.kind == "forecast":
        return f"linear in {_duration(s.predict)}"
    return s.aggregate or "-"


def _rows(rules: RuleSet) -> list[dict[str, object]]:
    rows = []
    for r in rules.rules:
        s = r.spec
        rows.append({
            "name": s.name, "kind": s.kind, "source": s.source, "filter": s.filter,
            "aggregate": _measure(s),
            "window": _duration(s.window) if s.kind != "absence" else "-",
            "group_by": s.group_by, "direction": s.direction if s.kind != "absence" else "-",
            "warning": s.warning, "critical": s.critical if s.kind != "absence" else s.severity,
            "for": _duration(s.for_s), "resolve_after": _duration(s.resolve_after),
            "cooldown": _duration(s.cooldown),
        })
    return rows


def check(
    ctx: typer.Context,
    file: Path | None = typer.Argument(
        None, help="Rule YAML (default: processor.rules_file from the config, else the seed's defaults)."),
    as_json: bool = typer.Option(False, "--json", help="Print the validated rules as JSON."),
) -> None:
    """Validate a rule file and print its rules; a bad rule exits 2 naming the rule and the field.

    Example: tocsin rules check processors/rules/default.yaml
    """
    if file is None:
        file = config_of(ctx).processor.rules_file or DEFAULT_RULES
    rules = load_rules(file)  # RuleError (a ConfigError) -> exit 2, one line per problem
    rows = _rows(rules)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} rules in {file}")
    for col in ("name", "source", "aggregate", "window", "group_by", "warning", "critical", "for",
                "resolve_after", "cooldown"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else "-" if v is None else str(v)
                        for v in (row[c] for c in ("name", "source", "aggregate", "window", "group_by", "warning",
                                                   "critical", "for", "resolve_after", "cooldown"))))
    Console(width=160).print(table)
    typer.echo(f"ok: {len(rows)} rules")


def test(
    files: list[Path] = typer.Argument(..., help="Rule test files in promtool's format (e.g. default_test.yaml)."),
) -> None:
    """Run rule unit tests (promtool's test file format) through the processor's engine; a mismatch exits 1.

    Example: tocsin rules test processors/rules/default_test.yaml
    """
    from tocsin.processors.promtest import run_file

    failed = 0
    for file in files:
        result = run_file(file)  # RuleError (a ConfigError) -> exit 2: a bad test or rule file
        for failure in result.failures:
            typer.echo(failure.render())
        failed += len(result.failures)
        verdict = "FAILED" if result.failures else "SUCCESS"
        typer.echo(f"{verdict}: {file}: {result.tests} tests, {result.checks} checks, "
                   f"{len(result.failures)} failed")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the root app."""
    rules_app.command("check")(check)
    rules_app.command("test")(test)
    app.add_typer(rules_app, name="rules")
