"""Reading one file: chunked ``pread`` calls split into lines with their byte offsets.

A read returns records ``(bytes, start, end, lines)`` (see
``tocsin.producers.multiline.Record``): a line without its ``\\n`` (and
``\\r``), or a joined multiline record. The bytes after the last newline wait
in ``Tailer.buf`` for the next read. A line longer than ``max_line_bytes``
is cut at a UTF-8 boundary and the rest skipped to its newline without being
held in memory; its original length is remembered for the event's attrs.
``safe_offset`` is where a restart may resume: never inside a line, a
multiline record or a skipped long line.
"""

from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tocsin.producers.logship.checkpoints import FileState
from tocsin.producers.logship.discovery import Source
from tocsin.producers.logship.stats import ShipStats
from tocsin.producers.multiline import MultilineJoiner, Record

if TYPE_CHECKING:
    from tocsin.producers.logship.acks import Chunk

log = logging.getLogger("tocsin.logship")


@dataclass
class Tailer:
    """One file being read: its identity, read position, unacknowledged reads."""

    state: FileState
    source: Source
    fd: int | None = None
    read_pos: int = 0
    buf: bytes = b""
    skipping: bool = False
    skip_start: int = 0
    skip_head: bytes = b""
    skip_len: int = 0
    truncated: dict[int, int] = field(default_factory=dict)
    chunks: collections.deque[Chunk] = field(default_factory=collections.deque)
    inflight: int = 0
    last_data: float = 0.0
    at_eof: bool = False
    rotated: bool = False
    deleted: bool = False
    truncation: bool = False
    target: int | None = None
    joiner: MultilineJoiner | None = None
    replaced: FileState | None = None
    """The checkpoint this inode had before its content changed while the shipper was down."""

    @property
    def acked(self) -> int:
        return self.state.offset

    def pending_record(self) -> bool:
        """True while bytes read are not yet part of a record handed on (partial line, open multiline)."""
        return bool(self.buf or self.skipping or (self.joiner is not None and self.joiner.open_start() is not None))

    def reset_reading(self) -> None:
        """Forgets what was read but not handed on (a rewind or a truncation)."""
        self.buf = b""
        self.skipping = False
        self.truncated.clear()
        if self.joiner is not None:
            self.joiner.reset()


def cut_utf8(data: bytes, limit: int) -> bytes:
    """``data[:limit]`` without splitting a UTF-8 sequence (so truncation adds no invalid UTF-8)."""
    cut = data[:limit]
    i = len(cut)
    while i > 0 and i > limit - 4 and (cut[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and cut[i - 1] >= 0xC0:
        i -= 1
    return cut[:i] if i < len(cut) and i > limit - 4 else cut


def safe_offset(t: Tailer) -> int:
    """The offset before which every record has been handed to the producer."""
    pos = t.skip_start if t.skipping else t.read_pos - len(t.buf)
    if t.joiner is not None:
        open_start = t.joiner.open_start()
        if open_start is not None and open_start < pos:
            pos = open_start
    return pos


def truncated_record(t: Tailer, head: bytes, start: int, end: int, length: int, records: list[Record],
                     stats: ShipStats) -> None:
    """A line cut to ``head``; ``length`` is what it had (for the event's ``original_bytes``)."""
    stats.truncated_lines += 1
    t.truncated[start] = length
    if t.joiner is not None:
        t.joiner.flush(records)  # a truncated line stands alone
    records.append((head, start, end, 1))


def read_chunk(t: Tailer, chunk_bytes: int, max_line: int, now: float, stats: ShipStats
               ) -> tuple[int, list[Record]]:
    """Reads up to ``chunk_bytes`` at the read position: (bytes read, finished records)."""
    assert t.fd is not None
    try:
        data = os.pread(t.fd, chunk_bytes, t.read_pos)
    except OSError as exc:
        log.warning("Reading a log file failed.", extra={"path": t.state.path, "error": str(exc)})
        t.at_eof = True
        return 0, []
    if not data:
        t.at_eof = True
        return 0, []
    t.at_eof = False
    t.last_data = now
    n = len(data)
    pos0 = t.read_pos
    t.read_pos += n
    stats.bytes_read += n
    records: list[Record] = []
    joiner = t.joiner
    if t.skipping:
        nl = data.find(b"\n")
        if nl < 0:
            t.skip_len += n
            return n, records
        t.skip_len += nl
        end = pos0 + nl + 1
        truncated_record(t, t.skip_head, t.skip_start, end, t.skip_len, records, stats)
        t.skipping = False
        t.skip_head = b""
        base = end
        data = data[nl + 1:]
    else:
        base = pos0 - len(t.buf)
        if t.buf:
            data = t.buf + data
    lines = data.split(b"\n")
    t.buf = lines.pop()
    off = base
    blank = 0
    for line in lines:
        ln = len(line)
        end = off + ln + 1
        if ln and line[-1] == 13:  # CRLF
            line = line[:-1]
            ln -= 1
        if ln > max_line:
            truncated_record(t, cut_utf8(line, max_line), off, end, ln, records, stats)
        elif joiner is not None:
            joiner.feed(line, off, end, records)
        elif ln:
            records.append((line, off, end, 1))
        else:
            blank += 1
        off = end
    stats.lines += len(lines)
    stats.blank_lines += blank
    if len(t.buf) > max_line:
        t.skipping = True
        t.skip_start = off
        t.skip_head = cut_utf8(t.buf, max_line)
        t.skip_len = len(t.buf)
        t.buf = b""
    return n, records


def final_records(t: Tailer, stats: ShipStats) -> list[Record]:
    """At the end of a finished file (or of a bulk load): the unterminated last line is a line too."""
    records: list[Record] = []
    if t.skipping:
        truncated_record(t, t.skip_head, t.skip_start, t.read_pos, t.skip_len, records, stats)
        t.skipping = False
    elif t.buf:
        line = t.buf[:-1] if t.buf.endswith(b"\r") else t.buf
        start = t.read_pos - len(t.buf)
        t.buf = b""
        if t.joiner is not None:
            t.joiner.feed(line, start, t.read_pos, records)
        else:
            records.append((line, start, t.read_pos, 1))
        stats.lines += 1
    if t.joiner is not None:
        t.joiner.flush(records)
    return records


def idle_records(t: Tailer) -> list[Record]:
    """The open multiline record of a file idle for ``multiline_flush_s`` (nothing more can join it)."""
    records: list[Record] = []
    if t.joiner is not None and t.joiner.open_start() is not None:
        t.joiner.flush(records)
    return records
