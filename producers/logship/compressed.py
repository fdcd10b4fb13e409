"""Rotated ``.gz`` files of a configured file (``app.log.1.gz``), read once when they appear.

logrotate's ``compress`` without ``delaycompress`` turns ``app.log.1`` into
``app.log.1.gz`` right after rotating it, possibly before the shipper read its
last lines. Such a file is decompressed into an anonymous temporary file
(unlinked at once: the open descriptor is all there is) and read like a
rotated file, once:

1. its decompressed first bytes are fingerprinted; a checkpoint with the same
   fingerprint is the file it was compressed from, so reading resumes at that
   checkpoint's offset under that file's event-id prefix: nothing shipped
   twice with new ids, nothing lost;
2. a fingerprint no checkpoint knows is read from the start, but only when
   the file was written after the last checkpoint (older history is not ours,
   as for missed rotations);
3. the ``.gz`` file's own (device, inode) is then checkpointed as done, so it
   is never read again.

Decompression stops at ``max_bytes`` (a decompression bomb is refused, logged
and counted, not read).
"""

from __future__ import annotations

import fnmatch
import gzip
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator

from tocsin.producers.logship.checkpoints import FileState
from tocsin.producers.logship.discovery import Source
from tocsin.producers.logship.identity import FileKey, fingerprint, is_regular

log = logging.getLogger("tocsin.logship")

GZ_SUFFIX = ".gz"
_CHUNK_BYTES = 1 << 20


class UnreadableError(Exception):
    """A ``.gz`` file that is not read: not gzip, truncated, or larger decompressed than allowed."""


def rotations(sources: list[Source]) -> Iterator[tuple[Source, str, FileKey, float]]:
    """``.gz`` rotations of the inputs that read them: (input, path, key, mtime)."""
    seen: set[FileKey] = set()
    for source in sources:
        if not source.cfg.read_gz:
            continue
        for pattern in source.cfg.paths:
            directory = os.path.dirname(pattern) or "."
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if not entry.name.endswith(GZ_SUFFIX):
                    continue
                plain = entry.path[: -len(GZ_SUFFIX)]
                if not any(fnmatch.fnmatch(plain, p) or fnmatch.fnmatch(plain, p + ".*")
                           or fnmatch.fnmatch(plain, p + "-*") for p in source.cfg.paths):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen or not is_regular(st.st_mode) or st.st_size == 0:
                    continue
                seen.add(key)
                yield source, entry.path, key, st.st_mtime


def decompress(path: str, max_bytes: int) -> int:
    """An open descriptor of an unlinked temporary file holding ``path``'s decompressed content."""
    try:
        with tempfile.TemporaryFile(prefix="tocsin-gz-") as out:
            total = 0
            with gzip.open(path, "rb") as src:
                while chunk := src.read(_CHUNK_BYTES):
                    total += len(chunk)
                    if total > max_bytes:
                        raise UnreadableError(f"more than {max_bytes} bytes decompressed")
                    out.write(chunk)
            out.flush()
            return os.dup(out.fileno())  # the temporary file lives on through this descriptor only
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, truncated, unreadable
        raise UnreadableError(f"cannot decompress: {type(exc).__name__}: {exc}") from exc


def origin(fd: int, states: list[FileState]) -> FileState | None:
    """The first of ``states`` whose fingerprint this (decompressed) file starts with: the file it came from."""
    prints: dict[int, str | None] = {}
    for state in states:
        if not state.fp_len or not state.fp:
            continue
        if state.fp_len not in prints:
            fp, got = fingerprint(fd, state.fp_len)
            prints[state.fp_len] = fp if got == state.fp_len else None
        if prints[state.fp_len] == state.fp:
            return state
    return None
