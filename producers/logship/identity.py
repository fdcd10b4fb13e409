"""How the shipper knows a file: (device, inode), a hash of its first bytes, and a truncation generation.

The event-id prefix of a file's lines derives from that identity (with the
host), so a line shipped twice, after a crash or a rewind, keeps one id. A
file beside a truncated one with the same first bytes is its copy
(copytruncate); a changed prefix means the file was truncated and refilled.
"""

from __future__ import annotations

import hashlib
import os
import stat

from tocsin.core.events import HOSTNAME
from tocsin.producers.logship.checkpoints import FileState

FileKey = tuple[int, int]
"""(st_dev, st_ino): what a file is while it exists, whatever its name."""


def fingerprint(fd: int, nbytes: int) -> tuple[str, int]:
    """(hash of the first ``nbytes`` bytes, how many bytes there were)."""
    head = os.pread(fd, nbytes, 0)
    return hashlib.blake2b(head, digest_size=16).hexdigest(), len(head)


def id_prefix(dev: int, ino: int, fp: str, gen: int) -> str:
    """The event-id prefix of one file generation's lines (the line's byte offset follows it)."""
    ident = f"{HOSTNAME}:{dev}:{ino}:{fp}:{gen}".encode()
    return hashlib.blake2b(ident, digest_size=8).hexdigest() + "-"


def new_state(key: FileKey, fp: str, fp_len: int, gen: int, path: str, service: str, seen: float) -> FileState:
    """The state of a file generation seen for the first time: nothing acknowledged yet."""
    return FileState(key[0], key[1], fp, fp_len, gen, id_prefix(key[0], key[1], fp, gen), 0, path, service, seen)


def prefix_changed(fd: int | None, state: FileState) -> bool:
    """True when the file's first bytes are no longer those it was identified by (truncated, refilled)."""
    if fd is None or not state.fp_len:
        return False
    try:
        fp, got = fingerprint(fd, state.fp_len)
    except OSError:
        return False
    return got < state.fp_len or fp != state.fp


def is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def find_inode(directory: str, key: FileKey) -> str | None:
    """The path of the file with this (device, inode) in ``directory``, if any (a rename rotation)."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == key:
                    return entry.path
    except OSError:
        return None
    return None


def find_copy(directory: str, state: FileState, min_size: int) -> tuple[str, FileKey] | None:
    """A file beside a truncated one holding its old content: same first bytes, at least ``min_size`` long."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return None
    # Newest first: the copy was made just before the truncation.
    candidates = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (state.dev, state.ino) or not is_regular(st.st_mode) or st.st_size < min_size:
            continue
        candidates.append((st.st_mtime, entry.path, (st.st_dev, st.st_ino)))
    for _, path, key in sorted(candidates, reverse=True):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fp, got = fingerprint(fd, state.fp_len)
        finally:
            os.close(fd)
        if got == state.fp_len and fp == state.fp:
            return path, key
    return None
