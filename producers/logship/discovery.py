"""Which files to tail and what happened to them: globs and excludes, rotation, rename and deletion.

A scan expands every input's globs into ``(source, path, key, size)`` once
per file (the first input matching a file owns it). Between scans an idle
open file is checked with ``fstat``/``stat``: its path now naming another
inode is a rename rotation, ``st_nlink == 0`` a deletion, a size below the
read position a truncation (``FileChange``). Rotated names of a configured
file (``app.log.1``, ``app.log-20240301``) belong to its input too.
"""

from __future__ import annotations

import enum
import fnmatch
import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tocsin.producers.config import LogInputConfig
from tocsin.producers.logship.identity import FileKey, find_inode, is_regular
from tocsin.producers.parsers import Parser


@dataclass
class Source:
    """One configured input: patterns, service and the parser its files share."""

    cfg: LogInputConfig
    parser: Parser
    key: bytes
    encode: Callable[[dict[str, Any]], bytes]

    @property
    def service(self) -> str:
        return self.cfg.service

    def excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pat) for pat in self.cfg.exclude)

    def matches(self, path: str) -> bool:
        if self.excluded(os.path.basename(path)):
            return False
        return any(fnmatch.fnmatch(path, pat) or path == pat for pat in self.cfg.paths)

    def owns(self, path: str) -> bool:
        """``matches``, or a rotation of a configured file (``app.log.1``, ``app.log-20240301``)."""
        if self.matches(path):
            return True
        directory, name = os.path.split(path)
        if self.excluded(name):
            return False
        for pattern in self.cfg.paths:
            pat_dir, base = os.path.split(pattern)
            if pat_dir == directory and base and is_rotation_of(name, base):
                return True
        return False


def is_rotation_of(name: str, base: str) -> bool:
    """``app.log.1`` and ``app.log-20240301`` are rotations of ``app.log``."""
    return name.startswith(base + ".") or name.startswith(base + "-")


def scan(sources: list[Source]) -> Iterator[tuple[Source, str, FileKey, int]]:
    """Every regular file the inputs match, once: (its input, path, key, size)."""
    seen: set[FileKey] = set()
    for source in sources:
        for pattern in source.cfg.paths:
            for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                if not source.matches(path):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not is_regular(st.st_mode):
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                yield source, path, key, st.st_size


def rotated_candidates(sources: list[Source], modified_after: float) -> Iterator[tuple[Source, str, FileKey, int]]:
    """Rotated names of configured (non-glob) files written after ``modified_after``: (input, path, key, size).

    These were created and rotated away while the shipper was down, so no
    checkpoint knows them; the caller skips those it already knows.
    """
    for source in sources:
        for pattern in source.cfg.paths:
            directory, base = os.path.split(pattern)
            if glob.has_magic(pattern) or not base:
                continue
            try:
                entries = list(os.scandir(directory or "."))
            except OSError:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                name = entry.name
                if not is_rotation_of(name, base) or source.excluded(name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not is_regular(st.st_mode) or st.st_mtime < modified_after or st.st_size == 0:
                    continue
                yield source, entry.path, (st.st_dev, st.st_ino), st.st_size


class FileChange(enum.Enum):
    TRUNCATED = "truncated"
    DELETED = "deleted"
    ROTATED = "rotated"


def check(fd: int, path: str, key: FileKey, read_pos: int, rotated: bool) -> tuple[FileChange | None, str]:
    """What happened to an open file since it was last read, and its path now (a renamed file's new name)."""
    try:
        fst = os.fstat(fd)
    except OSError:
        return None, path
    if fst.st_size < read_pos:
        return FileChange.TRUNCATED, path
    if rotated:
        return None, path
    if fst.st_nlink == 0:
        return FileChange.DELETED, path
    try:
        st = os.stat(path)
        moved = (st.st_dev, st.st_ino) != key
    except OSError:
        moved = True
    if not moved:
        return None, path
    return FileChange.ROTATED, find_inode(os.path.dirname(path) or ".", key) or path
