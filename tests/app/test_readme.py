"""The README's promises that code can check: its configuration table is the generated one."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tocsin.app.configdoc import markdown

README = Path(__file__).parents[2] / "README.md"


def test_readme_configuration_reference_matches_the_code() -> None:
    text = README.read_text()
    block = re.search(r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", text, re.S)
    assert block, "README lost its config-reference markers"
    assert block.group(1) == markdown(), "run: tocsin config reference, and paste it between the markers"


def test_readme_opens_with_the_two_commands_ci_and_make_run() -> None:
    text = README.read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_performance_table_is_the_committed_run() -> None:
    """The table is ``python -m bench table docs/bench.json``: numbers of one real run, not hand-copied."""
    from bench.table import render

    text = README.read_text()
    block = re.search(r"<!-- bench-table:start -->\n(.*)\n<!-- bench-table:end -->", text, re.S)
    assert block, "README lost its bench-table markers"
    doc = json.loads((README.parent / "docs" / "bench.json").read_text())
    assert not doc["quick"], "the README's figures must come from a full-size run"
    assert block.group(1) == render(doc), "run: python -m bench table docs/bench.json, and paste it between the markers"
