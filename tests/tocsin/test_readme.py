"""The README's promises that code can check: its configuration table is the generated one."""

from __future__ import annotations

import re
from pathlib import Path

from tocsin.configdoc import markdown

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
