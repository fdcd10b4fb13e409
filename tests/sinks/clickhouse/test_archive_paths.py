"""Archive writes only under ``jobs.archive_dir``: elsewhere, ``..`` and symlinks out are refused, in every route."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import requests

from tests.sinks.clickhouse.test_store_api import TOKEN, _cli, store  # noqa: F401  (store: fixture)
from tocsin.core.clickhouse import connect
from tocsin.core.errors import RefusedError
from tocsin.core.events import now_us
from tocsin.sinks.clickhouse.archive import archive_days, confine
from tocsin.sinks.clickhouse.schema import migrate

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _old_alerts(client, db: str) -> str:
    old = now_us() - 20 * 86_400_000_000  # inside the 30-day TTL
    client.insert(f"`{db}`.alerts", [[f"a{i}", old + i, f"alert-{i}", "fp", "error_rate", "firing"] for i in range(3)],
                  column_names=["event_id", "ts", "alert_id", "fingerprint", "rule", "state"])
    return dt.datetime.fromtimestamp(old / 1e6, dt.UTC).date().isoformat()


def test_confine_refuses_paths_that_resolve_outside(tmp_path):
    root, outside = tmp_path / "archive", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    assert confine("weekly", root) == root / "weekly"
    assert confine(root / "a" / "b", root) == root / "a" / "b"
    assert confine(root, root) == root
    for bad in (outside, "/etc", "../outside", root / ".." / "outside", "out", root / "out" / "deeper", "a/../../x"):
        with pytest.raises(RefusedError, match="outside the archive directory"):
            confine(bad, root)


def test_archive_refuses_out_of_root_targets_and_planted_symlinks(tocsin_config, tmp_path):
    client = connect(tocsin_config.clickhouse)
    db = tocsin_config.clickhouse.database
    migrate(client, db)
    day = _old_alerts(client, db)
    root, outside = tmp_path / "archive", tmp_path / "outside"
    outside.mkdir()
    for bad in (outside, "../outside", tmp_path / "archive" / ".." / "outside"):
        with pytest.raises(RefusedError):
            archive_days(client, db, 15, bad, root=root)
    assert list(outside.iterdir()) == []
    # a symlink planted where the day's file goes: refused, its target untouched
    root.mkdir(exist_ok=True)
    victim = outside / "victim"
    victim.write_text("keep")
    (root / f"alerts-{day}.parquet").symlink_to(victim)
    with pytest.raises(RefusedError, match="is a symlink"):
        archive_days(client, db, 15, root, root=root)
    os.unlink(root / f"alerts-{day}.parquet")
    # a symlink planted at the temp name: the link goes, the target stays
    (root / f"alerts-{day}.parquet.tmp").symlink_to(victim)
    (done,) = archive_days(client, db, 15, root, root=root)
    assert not done.skipped and done.path.read_bytes()[:4] == b"PAR1" and not done.path.is_symlink()
    assert victim.read_text() == "keep"


def test_api_and_cli_refuse_targets_outside_the_archive_dir(store, tmp_path):  # noqa: F811
    cfg, client, url, config_path = store
    _old_alerts(client, cfg.clickhouse.database)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "archive").mkdir(exist_ok=True)
    (tmp_path / "archive" / "out").symlink_to(outside)
    for target in (str(outside), "/tmp", "../outside", "out"):
        resp = requests.post(f"{url}/api/store/archive", json={"older_than_days": 15, "to_dir": target},
                             headers=AUTH, timeout=30)
        assert resp.status_code == 403 and "outside the archive directory" in resp.json()["detail"], resp.text
        out = _cli(config_path, "archive", "--older-than", "15", "--to", target)
        assert out.returncode == 2 and "outside the archive directory" in out.stderr, (target, out.stderr)
    assert list(outside.iterdir()) == []
    out = _cli(config_path, "archive", "--older-than", "15", "--to", "weekly")
    assert out.returncode == 0 and "1 file(s) written" in out.stdout, out.stderr
    assert len(list((tmp_path / "archive" / "weekly").glob("alerts-*.parquet"))) == 1
