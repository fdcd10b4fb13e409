"""Every escape a user found through ``POST /api/store/query`` and ``tocsin query`` is refused, in both routes.

Each escape runs through the owner's API (status 400/403), the CLI through
the owner (exit 2), the store opened directly in this process, and the CLI in
direct mode (its own embedded store); none writes a file (the target must not
appear) and none makes a request (a pytest-httpserver that must stay silent).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import make_config, unique
from tests.sinks.clickhouse.test_store_api import ROOT, TOKEN, _cli, store  # noqa: F401  (store: fixture)
from tocsin.core.errors import RefusedError
from tocsin.sinks.clickhouse.query_guard import check_tree, parse_ast
from tocsin.sinks.clickhouse.store_access import DirectStore, open_store

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def escapes(tmp: Path, web: str, config_path: Path, other_db: str) -> list[tuple[str, str, dict | None]]:
    """(name, sql, parameters) of every escape tried; ``tmp`` is where a write would land."""
    return [
        ("insert into function file", f"INSERT INTO FUNCTION file('{tmp}/w1.csv', 'CSV') SELECT 1", None),
        ("file truncate on insert", f"INSERT INTO FUNCTION file('{tmp}/w2.csv', 'CSV') SELECT 1 "
                                    "SETTINGS engine_file_truncate_on_insert = 1", None),
        ("into outfile", f"SELECT 1 INTO OUTFILE '{tmp}/w3.txt'", None),
        ("into outfile after a select", f"SELECT 1; SELECT 2 INTO OUTFILE '{tmp}/w4.txt'", None),
        ("read /etc/shadow", "SELECT * FROM file('/etc/shadow', 'LineAsString')", None),
        ("read the config", f"SELECT * FROM file('{config_path}', 'LineAsString')", None),
        ("read /proc/self/environ", "SELECT * FROM file('/proc/self/environ', 'RawBLOB')", None),
        ("file glob", "SELECT _path FROM file('/etc/*', 'LineAsString')", None),
        ("scalar file()", "SELECT file('/etc/passwd')", None),
        ("url()", f"SELECT * FROM url('{web}/get', 'LineAsString')", None),
        ("s3()", f"SELECT * FROM s3('{web}/bucket/key.csv', 'CSV')", None),
        ("insert into function url", f"INSERT INTO FUNCTION url('{web}/post', 'CSV', 'x UInt8') SELECT 1", None),
        ("url in a subquery", f"SELECT 1 WHERE 1 IN (SELECT 1 FROM url('{web}/sub', 'CSV', 'x UInt8'))", None),
        ("remote()", "SELECT * FROM remote('127.0.0.1:9000', system.one)", None),
        ("hdfs()", "SELECT * FROM hdfs('hdfs://127.0.0.1:9000/x', 'CSV', 'x UInt8')", None),
        ("mysql()", "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')", None),
        ("postgresql()", "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')", None),
        ("executable()", "SELECT * FROM executable('id', 'TSV', 'x String')", None),
        ("input()", "SELECT * FROM input('x String')", None),
        ("merge() over other databases", f"SELECT * FROM merge('{other_db}', '.*')", None),
        ("another database", f"SELECT * FROM {other_db}.logs", None),
        ("another database via IN", f"SELECT 1 WHERE 1 IN {other_db}.logs", None),
        ("another database via an Identifier parameter", "SELECT * FROM {d:Identifier}.{t:Identifier}",
         {"d": other_db, "t": "logs"}),
        ("a system table that is not allowed", "SELECT * FROM system.users", None),
        ("joinGet", f"SELECT joinGet('{other_db}.j', 'v', 1)", None),
        ("lift the row cap", "SELECT number FROM numbers(10) SETTINGS max_result_rows = 0", None),
        ("lift the time limit", "SELECT 1 SETTINGS max_execution_time = 0", None),
        ("set readonly 0", "SET readonly = 0", None),
        ("drop a table", "DROP TABLE logs", None),
    ]


@pytest.fixture
def web(httpserver):
    """An HTTP server that must receive nothing."""
    httpserver.expect_request("/").respond_with_data("no")
    yield httpserver.url_for("").rstrip("/")
    assert httpserver.log == [], f"an escape made a request: {[r[0].url for r in httpserver.log]}"


def test_every_escape_is_refused_through_the_api_the_cli_and_directly(store, web, tmp_path):  # noqa: F811
    cfg, _, url, config_path = store
    other_db = unique("other")
    cases = escapes(tmp_path, web, config_path, other_db)
    answers = {}
    for name, sql, params in cases:
        body = {"sql": sql, **({"parameters": params} if params else {})}
        resp = requests.post(f"{url}/api/store/query", json=body, headers=AUTH, timeout=30)
        assert resp.status_code in (400, 403), (name, resp.status_code, resp.text)
        assert "refused" in resp.json()["detail"] or "readonly" in resp.json()["detail"], (name, resp.text)
        answers[name] = resp.status_code, resp.json()["detail"]
        direct = open_store(cfg)
        assert isinstance(direct, DirectStore)
        with pytest.raises(RefusedError):
            direct.query(sql, params)

    def cli(case: tuple[str, str, dict | None]) -> tuple[str, subprocess.CompletedProcess]:
        return case[0], _cli(config_path, "query", case[1])

    with ThreadPoolExecutor(3) as pool:
        for name, out in pool.map(cli, [c for c in cases if c[2] is None]):
            assert out.returncode == 2, (name, out.returncode, out.stderr)
            assert out.stderr.startswith("error: store API /api/store/query answered 40"), (name, out.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tocsin.yaml"], "an escape wrote a file"
    for name, (code, detail) in answers.items():
        print(f"| {name} | {code} | {detail[:150]} |")


def test_the_cli_in_direct_mode_refuses_every_escape(kafka_bootstrap, web, tmp_path):
    """No owner: the CLI opens its own embedded store and the same guard and read-only session refuse."""
    cfg = make_config(kafka_bootstrap, f"chdb://{tmp_path / 'store'}")
    config_path = tmp_path / "direct.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"source"})))
    cases = [c for c in escapes(tmp_path, web, config_path, "other_db") if c[2] is None]
    env = {k: v for k, v in os.environ.items() if k not in ("TOCSIN_CONFIG", "CLICKHOUSE_URL")}
    # One process, every escape in turn: the embedded engine starts once (the CLI's main() per statement).
    script = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from tocsin.app.cli import app\n"
        "cases = json.loads(sys.argv[2])\n"
        "for sql in cases:\n"
        "    r = CliRunner().invoke(app, ['-c', sys.argv[1], 'query', sql])\n"
        "    e = r.exception\n"
        "    print(json.dumps([type(e).__name__ if e else None, str(e)[:200]]))\n"
    )
    import json

    out = subprocess.run([sys.executable, "-c", script, str(config_path), json.dumps([c[1] for c in cases])],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]
    assert len(results) == len(cases)
    for (name, _, _), (kind, text) in zip(cases, results, strict=True):
        assert kind == "RefusedError", (name, kind, text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.yaml", "store"]
    # and the entry point maps the refusal to exit 2
    one = subprocess.run([sys.executable, "-m", "tocsin", "-c", str(config_path), "query",
                          "SELECT * FROM file('/etc/passwd', 'LineAsString')"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert one.returncode == 2 and "table function file() is not allowed" in one.stderr, one.stderr


def test_tocsin_tables_and_allowed_system_tables_still_answer(store):  # noqa: F811
    cfg, _, url, _ = store
    db = cfg.clickhouse.database
    for sql in (f"SELECT count() FROM {db}.logs", "SELECT count() FROM logs",
                f"WITH e AS (SELECT * FROM {db}.logs WHERE level = 'ERROR') SELECT count() FROM e",
                f"SELECT name FROM system.tables WHERE database = '{db}' AND name = 'logs'",
                "SELECT count() FROM numbers(10)", f"SELECT 1 WHERE 1 IN (SELECT 1 FROM {db}.logs)"):
        resp = requests.post(f"{url}/api/store/query", json={"sql": sql}, headers=AUTH, timeout=30)
        assert resp.status_code == 200, (sql, resp.text)


@pytest.mark.parametrize("dump, message", [
    ("InsertQuery (children 1)\n Identifier t", "only SELECT"),
    ("SelectWithUnionQuery (children 2)\n ExpressionList (children 1)\n  SelectQuery (children 1)\n"
     " Literal '/tmp/x'", "INTO OUTFILE"),
    ("SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  SelectQuery (children 1)\n"
     "   TablesInSelectQuery (children 1)\n    TablesInSelectQueryElement (children 1)\n"
     "     TableExpression (children 1)\n      TableIdentifier db.a.b", "outside the database"),
])
def test_the_tree_walk_refuses_without_an_engine(dump, message):
    with pytest.raises(RefusedError, match=message):
        check_tree(parse_ast(dump), "db")
