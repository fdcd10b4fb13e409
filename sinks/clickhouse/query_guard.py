"""What a user's query may touch, decided by ClickHouse's own parser: Tocsin's tables and nothing else.

ClickHouse's ``readonly=1`` already refuses writes, DDL, settings changes and
table functions that need a temporary table (``file``, ``url``, ``s3``,
``remote``, ...). The embedded engine (chdb) still lets through what runs in
the client or as a plain function: ``INTO OUTFILE`` (chdb is the client, so it
writes the file), the scalar ``file()`` function, and tables of any other
database. So before a query runs, the engine itself normalizes it
(``formatQuery``, which refuses multi-statements) and dumps its syntax tree
(``EXPLAIN AST``, query parameters substituted, so ``{t:Identifier}`` is seen
as the table it names); the walk below admits only:

* one ``SELECT`` (``UNION``/``INTERSECT``/``EXCEPT`` of them), without ``INTO OUTFILE``;
* tables of the configured database (unqualified names resolve there: the
  read-only session's current database is it) and ``ALLOWED_SYSTEM_TABLES``;
* table functions in ``ALLOWED_TABLE_FUNCTIONS`` (generators that read nothing);
* no function in ``DENIED_FUNCTIONS`` (they read files, dictionaries or other tables).

The query then runs as normalized, so what runs is what was checked. The
tree dump prints ``db.table`` without quoting, so a name with a dot in it is
ambiguous: it is refused rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tocsin.core.errors import RefusedError

ALLOWED_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generate_series", "generateSeries", "null",
})
"""Table functions that only generate rows: they read no file, network or other table."""

ALLOWED_SYSTEM_TABLES = frozenset({
    "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "tables", "columns", "parts", "processes",
    "functions", "data_type_families", "time_zones",
})
"""System tables that describe the store's own schema and state (what a report or an operator asks)."""

DENIED_FUNCTIONS = frozenset({
    "file", "catboostevaluate", "naivebayesclassifier", "joinget", "joingetornull", "evalmlmethod",
})
"""Scalar functions that read files or other tables; every ``dict*`` function is denied as well."""

IN_FUNCTIONS = frozenset({"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin",
                          "globalnotnullin"})
"""``x IN db.table`` reads that table: the right side is a table reference when it is an identifier."""

_LINE_RE = re.compile(r"^(?P<indent> *)(?P<kind>\w+)(?: (?P<text>.*?))?(?: \(children \d+\))?$")
_ALIAS_RE = re.compile(r" \(alias .*\)$")


@dataclass
class Node:
    kind: str
    text: str
    children: list[Node] = field(default_factory=list)


def parse_ast(dump: str) -> Node:
    """The tree of ``EXPLAIN AST`` output (one node a line, one space of indent per level)."""
    root = Node("root", "")
    stack: list[tuple[int, Node]] = [(-1, root)]
    for line in dump.splitlines():
        if not line.strip():
            continue
        m = _LINE_RE.match(line)
        if m is None:
            raise RefusedError(f"query refused: cannot read the engine's syntax tree near {line.strip()[:80]!r}")
        depth = len(m["indent"])
        node = Node(m["kind"], _ALIAS_RE.sub("", m["text"] or ""))
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    if len(root.children) != 1:
        raise RefusedError("query refused: one statement only")
    return root.children[0]


def check_tree(top: Node, database: str) -> None:
    """Raises RefusedError naming the first thing the query may not touch."""
    if top.kind != "SelectWithUnionQuery":
        raise RefusedError(f"query refused: only SELECT is allowed (got {top.kind.removesuffix('Query')})")
    # SelectWithUnionQuery's own children: the selects, then INTO OUTFILE (a Literal), FORMAT, SETTINGS.
    for child in top.children[1:]:
        if child.kind == "Literal":
            raise RefusedError("query refused: INTO OUTFILE is not allowed (results come back to you)")
    _walk(top, None, database)


def _walk(node: Node, parent: Node | None, database: str) -> None:
    if node.kind == "Function":
        name = node.text.split(" ", 1)[0]
        if parent is not None and parent.kind == "TableExpression":
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise RefusedError(
                    f"query refused: table function {name}() is not allowed (it reaches files, network or other "
                    f"databases); query the tables of {database}")
        elif name.lower() in DENIED_FUNCTIONS or name.lower().startswith("dict"):
            raise RefusedError(f"query refused: function {name}() is not allowed (it reads outside {database})")
        if name.lower() in IN_FUNCTIONS and node.children and len(node.children[0].children) == 2:
            right = node.children[0].children[1]
            if right.kind == "Identifier":
                _check_table(right.text, database)
    elif node.kind == "TableIdentifier":
        _check_table(node.text, database)
    for child in node.children:
        _walk(child, node, database)


def _check_table(name: str, database: str) -> None:
    if "." not in name:
        return  # the session's current database (the configured one), or a WITH name
    if name.startswith(f"{database}.") and "." not in name[len(database) + 1:]:
        return
    if name.startswith("system.") and name[len("system."):] in ALLOWED_SYSTEM_TABLES:
        return
    raise RefusedError(f"query refused: table {name} is outside the database {database} "
                            f"(allowed: {database}.*, system.{{{', '.join(sorted(ALLOWED_SYSTEM_TABLES))}}})")


def guard(client: Any, sql: str, parameters: dict[str, Any] | None, database: str) -> str:
    """The query normalized by the engine, once its tree passed ``check_tree``; raises RefusedError.

    ``client`` is a read-only clickhouse-connect client: parsing runs nothing
    (``formatQuery`` and ``EXPLAIN AST`` read no table and call no function).
    """
    try:
        normalized = client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]
        dump = client.raw_query(f"EXPLAIN AST {normalized}", parameters=parameters or None,
                                fmt="TabSeparatedRaw").decode("utf-8", "replace")
    except Exception as exc:
        text = _first_line(exc)
        # READONLY: a settings change (SETTINGS max_result_rows = 0); anything else is bad SQL (400).
        raise RefusedError(f"query refused: {text}", http_status=403 if "(READONLY)" in text else 400) from exc
    check_tree(parse_ast(dump), database)
    return str(normalized)


_PREFIX_RE = re.compile(r"^(?:Code: \d+\. DB::Exception: )+")
_VERSION_RE = re.compile(r" \(version [^)]*\)")
_SCOPE_RE = re.compile(r": In scope SELECT formatQuery\(.*$")


def _first_line(exc: BaseException) -> str:
    """The engine's message once: without the repeated code prefix, the version and the formatQuery wrapper."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = _SCOPE_RE.sub("", _VERSION_RE.sub("", text.splitlines()[0]))
    code = re.match(r"^Code: (\d+)\. DB::Exception: ", line)
    return _PREFIX_RE.sub("", line)[:500] + (f" [code {code[1]}]" if code else "")
