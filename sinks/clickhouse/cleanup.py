"""``tocsin cleanup --days N``: remove history older than N days, whole days first.

Every table is partitioned by day, so a day entirely before the cutoff goes
with ``DROP PARTITION`` (a metadata operation: no rewrite). The boundary day is
partly older than the cutoff; its older rows go with a synchronous
``ALTER TABLE ... DELETE IN PARTITION`` that rewrites only that day's parts.
Rollups (per-minute rows) lose the minutes that start before the cutoff.
TTL does the same every day by itself; this is for an operator who wants less
than the retention, now. The result lists every action with its rows and
bytes, so ``--dry-run`` shows exactly what a real run would remove.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from tocsin.core.errors import StoreError
from tocsin.sinks.clickhouse.schema import TTL_TABLES, SchemaContext

_PARTITION_ID_RE = re.compile(r"^[0-9A-Za-z_-]+$")  # toDate partitions have ids like 20261127
# The time column of each table: ts (DateTime64(6)) for events, minute (DateTime) for rollups,
# received_at (DateTime64(3)) for quarantine; the TTL expressions name them.
_TIME_COLUMN = {table: expr.removeprefix("toDateTime(").removesuffix(")") for table, expr in TTL_TABLES.items()}


@dataclass
class CleanupAction:
    table: str
    action: str  # drop_partition | delete_rows
    day: str
    partition_id: str
    rows: int
    bytes: int


@dataclass
class CleanupResult:
    database: str
    days: int
    cutoff: str
    dry_run: bool
    cutoff_us: int = 0
    actions: list[CleanupAction] = field(default_factory=list)

    @property
    def rows_removed(self) -> int:
        return sum(a.rows for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows_removed"] = self.rows_removed
        out["bytes_removed"] = sum(a.bytes for a in self.actions if a.action == "drop_partition")
        return out


def _older(column: str, cutoff_us: int | None = None) -> str:
    """Rows before the cutoff: a query parameter, or an inlined integer (mutations take no parameters)."""
    value = "{cutoff:Int64}" if cutoff_us is None else str(int(cutoff_us))
    if column == "minute":
        return f"minute < toDateTime(intDiv({value}, 1000000), 'UTC')"
    return f"{column} < fromUnixTimestamp64Micro({value}, 'UTC')"


def plan(client: Any, database: str, days: int, now: dt.datetime | None = None,
         cluster: str | None = None) -> CleanupResult:
    """What ``cleanup`` would remove, without removing anything."""
    if days < 0:
        raise StoreError("--days must be 0 or more")
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    cutoff = now - dt.timedelta(days=days)
    cutoff_us = int(cutoff.timestamp()) * 1_000_000 + cutoff.microsecond
    boundary = cutoff.date().isoformat()
    ctx = SchemaContext(database, cluster=cluster)
    result = CleanupResult(database, days, cutoff.isoformat().replace("+00:00", "Z"), dry_run=True,
                           cutoff_us=cutoff_us)
    existing = {
        r[0] for r in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database}
        ).result_rows
    }
    for table, column in _TIME_COLUMN.items():
        storage = ctx.storage(table)
        if storage not in existing:
            continue
        sizes = {
            pid: int(nbytes) for pid, nbytes in client.query(
                "SELECT partition_id, sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} "
                "AND table = {t:String} AND active GROUP BY partition_id",
                parameters={"db": database, "t": storage},
            ).result_rows
        }
        # Count only what is older than the cutoff; whole days below the boundary drop as partitions.
        rows = client.query(
            f"SELECT _partition_id, toString(toDate({column})) AS day, count() FROM {ctx.q(storage)} "
            f"WHERE {_older(column)} GROUP BY _partition_id, day ORDER BY day",
            parameters={"cutoff": cutoff_us},
        ).result_rows
        for pid, day, n in rows:
            if day < boundary:
                result.actions.append(CleanupAction(table, "drop_partition", day, pid, int(n), sizes.get(pid, 0)))
            else:
                result.actions.append(CleanupAction(table, "delete_rows", day, pid, int(n), 0))
    return result


def cleanup(client: Any, database: str, days: int, *, dry_run: bool = False, now: dt.datetime | None = None,
            cluster: str | None = None) -> CleanupResult:
    """Drops whole days older than ``days`` and deletes the older rows of the boundary day."""
    result = plan(client, database, days, now=now, cluster=cluster)
    result.dry_run = dry_run
    if dry_run:
        return result
    ctx = SchemaContext(database, cluster=cluster)
    for a in result.actions:
        target = f"{ctx.q(ctx.storage(a.table))}{ctx.on_cluster}"
        if not _PARTITION_ID_RE.match(a.partition_id):
            raise StoreError(f"unexpected partition id {a.partition_id!r} in {a.table}")
        try:
            if a.action == "drop_partition":
                client.command(f"ALTER TABLE {target} DROP PARTITION ID '{a.partition_id}'")
            else:
                client.command(
                    f"ALTER TABLE {target} DELETE IN PARTITION ID '{a.partition_id}' "
                    f"WHERE {_older(_TIME_COLUMN[a.table], result.cutoff_us)}",
                    settings={"mutations_sync": 2},
                )
        except Exception as exc:
            raise StoreError(f"cleanup of {a.table} day {a.day} failed: {type(exc).__name__}: {exc}") from exc
    return result
