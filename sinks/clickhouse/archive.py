"""Archival of alert history to Parquet files, one file per UTC day, before retention drops it.

ClickHouse writes the Parquet itself (``FORMAT Parquet``), so no Arrow library
is needed. A day already archived is skipped, which makes the weekly job and
``tocsin archive`` idempotent; files are written to a temp name and renamed,
so a crash never leaves a half file that looks complete.

Files are written only under the configured archive directory
(``jobs.archive_dir``): ``confine`` resolves the target (``..`` and symlinks
included) and refuses anything that lands elsewhere, and each file is created
with ``O_NOFOLLOW | O_EXCL`` so a symlink planted inside cannot redirect it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from tocsin.core.errors import RefusedError


@dataclass(frozen=True)
class ArchivedDay:
    day: dt.date
    path: Path
    rows: int
    skipped: bool

    def to_dict(self) -> dict[str, object]:
        return {"day": self.day.isoformat(), "path": str(self.path), "rows": self.rows, "skipped": self.skipped}


def days_to_archive(client: Client, database: str, older_than_days: int, table: str = "alerts") -> list[dt.date]:
    """Whole UTC days with rows older than ``older_than_days`` days."""
    result = client.query(
        f"SELECT DISTINCT toDate(ts, 'UTC') AS d FROM `{database}`.`{table}` "
        f"WHERE toDate(ts, 'UTC') < today() - {int(older_than_days)} ORDER BY d"
    )
    return [row[0] for row in result.result_rows]


def confine(to_dir: Path | str, root: Path | str) -> Path:
    """``to_dir`` resolved (relative to ``root`` when relative), or RefusedError when it is outside ``root``."""
    real_root = Path(os.path.realpath(root))
    target = Path(to_dir)
    real = Path(os.path.realpath(target if target.is_absolute() else real_root / target))
    if real != real_root and real_root not in real.parents:
        raise RefusedError(f"archive refused: {to_dir} resolves to {real}, outside the archive directory "
                           f"{real_root} (jobs.archive_dir)")
    return real


def _write_new(path: Path, data: bytes) -> None:
    """Writes ``data`` to a new file at ``path``: never through a symlink, never over an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def archive_days(client: Client, database: str, older_than_days: int, to_dir: Path, *, root: Path | str,
                 table: str = "alerts") -> list[ArchivedDay]:
    """Archives whole days older than ``older_than_days`` into ``to_dir``, which must lie under ``root``."""
    to_dir = confine(to_dir, root)
    Path(os.path.realpath(root)).mkdir(parents=True, exist_ok=True)
    to_dir.mkdir(parents=True, exist_ok=True)
    to_dir = confine(to_dir, root)  # again after mkdir: a component created meanwhile cannot lead out
    out = []
    for day in days_to_archive(client, database, older_than_days, table):
        path = to_dir / f"{table}-{day.isoformat()}.parquet"
        where = f"toDate(ts, 'UTC') = toDate('{day.isoformat()}')"
        rows = client.query(f"SELECT count() FROM `{database}`.`{table}` WHERE {where}").result_rows[0][0]
        if path.is_symlink():
            raise RefusedError(f"archive refused: {path} is a symlink; remove it")
        if path.exists():
            out.append(ArchivedDay(day, path, rows, skipped=True))
            continue
        data = client.raw_query(f"SELECT * FROM `{database}`.`{table}` WHERE {where} ORDER BY ts", fmt="Parquet")
        tmp = path.with_suffix(".parquet.tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()  # a leftover of a crash (or a planted link): the link itself goes, not its target
        _write_new(tmp, data)
        os.replace(tmp, path)  # rename replaces the name, never follows a link
        out.append(ArchivedDay(day, path, rows, skipped=False))
    return out
