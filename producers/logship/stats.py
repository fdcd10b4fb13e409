"""The log shipper's counters (the agent's metrics); ``LogShipper.stats_dict()`` adds the parsers' own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ShipStats:
    """Counters of one shipper, each only ever incremented."""

    lines: int = 0
    records: int = 0
    metric_events: int = 0
    acked: int = 0
    bytes_read: int = 0
    blank_lines: int = 0
    truncated_lines: int = 0
    oversize_events: int = 0
    files_opened: int = 0
    rotations: int = 0
    truncations: int = 0
    copy_recoveries: int = 0
    deleted_files: int = 0
    delivery_failures: int = 0
    rewinds: int = 0
    connect_failures: int = 0
