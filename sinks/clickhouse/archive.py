"""Archival of alert history to Parquet files, one file per UTC day, before retention drops it.

ClickHouse writes the Parquet itself (``FORMAT Parquet``), so no Arrow library
is needed. A day already archived is skipped, which makes the weekly job and
``tocsin archive`` idempotent; files are written to a temp name and renamed,
so a crash never leaves a half file that looks complete.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client


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


def archive_days(client: Client, database: str, older_than_days: int, to_dir: Path,
                 table: str = "alerts") -> list[ArchivedDay]:
    to_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for day in days_to_archive(client, database, older_than_days, table):
        path = to_dir / f"{table}-{day.isoformat()}.parquet"
        where = f"toDate(ts, 'UTC') = toDate('{day.isoformat()}')"
        rows = client.query(f"SELECT count() FROM `{database}`.`{table}` WHERE {where}").result_rows[0][0]
        if path.exists():
            out.append(ArchivedDay(day, path, rows, skipped=True))
            continue
        data = client.raw_query(f"SELECT * FROM `{database}`.`{table}` WHERE {where} ORDER BY ts", fmt="Parquet")
        tmp = path.with_suffix(".parquet.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        out.append(ArchivedDay(day, path, rows, skipped=False))
    return out
