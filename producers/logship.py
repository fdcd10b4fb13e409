"""The log shipper: tails files into the logs topic, at least once, across rotation, truncation and kill -9.

Protocol, per file:

1. A file is known by its identity: device, inode and a hash of its first
   bytes (``fingerprint_bytes``), plus a truncation generation. The event-id
   prefix derives from it, and each record's event_id is that prefix plus
   the record's byte offset, so a record shipped twice has one id.
2. Reading appends to the producer and remembers, per read, the futures of
   the records sent and the offset up to which every record has been sent
   (never inside a line, a multiline record or a truncated line).
3. A read is acknowledged when every future in it succeeded; acknowledged
   reads advance the file's offset in order.
4. The state file saves those offsets every ``checkpoint_interval_s``, so
   a restart resumes at the last acknowledged line: whatever was sent but not
   acknowledged at a kill is sent again (same event ids).
5. A failed delivery rewinds the file to its acknowledged offset and pauses
   with exponential backoff. While ``max_inflight_bytes`` are unacknowledged
   (a broker that is down) no file is read: the files are the buffer.

Rename rotation: the open descriptor is read to its end and closed once the
path points elsewhere and ``rotate_wait_s`` passed; the new file is found by
the next scan. After a restart, a file the state knows but the globs no longer
match is looked for by inode beside its old path. Copytruncate: a file shorter
than the read position, or whose first bytes changed, is re-read from 0 with
the next generation, after the lines between the last read and the
truncation are recovered from the copy (same directory, same first bytes).
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import glob
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tocsin.core import kafka as kafka_api
from tocsin.core import paths
from tocsin.core.component import Component
from tocsin.core.errors import KafkaError
from tocsin.core.events import HOSTNAME, METRIC_EVENT, now_us
from tocsin.producers.avrofast import FastavroEncoder, log_event_encoder
from tocsin.producers.config import AgentSettings, LogInputConfig, LogShipConfig
from tocsin.producers.kafkasend import RecordSender, batch_failure
from tocsin.producers.logstate import FileState, StateStore
from tocsin.producers.multiline import MultilineJoiner, Record
from tocsin.producers.parsers import Parser, make_parser

log = logging.getLogger("tocsin.logship")

# Producer settings of the shipper: reconnect quickly after a broker restart
# (kafka-python's default backs off up to 30 s), and never block a send for
# long on metadata, so shutdown and backoff stay responsive.
SHIPPER_PRODUCER_OVERRIDES: dict[str, Any] = {
    "reconnect_backoff_max_ms": 2000,
    "max_block_ms": 5000,
    "bootstrap_timeout_ms": 5000,
    "metrics_enabled": False,  # kafka-python's sensors cost ~2 µs per record; we count our own
}
_READS_PER_TURN = 4  # chunks read from one file before the next file gets its turn
# Reading stops after this long per loop turn, so that checkpoints stay frequent while a backlog is read
# (fewer repeats after a kill) and acknowledgements are reaped often.
_READ_BUDGET_S = 0.05
_TRUNCATED_MARK = "true"
_STALL_MARGIN_S = 30.0  # beyond kafka-python's own delivery timeout
# Clock slack when telling files rotated after the last checkpoint from older ones.
_MISSED_ROTATION_MARGIN_S = 5.0


def _cut_utf8(data: bytes, limit: int) -> bytes:
    """``data[:limit]`` without splitting a UTF-8 sequence (so truncation adds no invalid UTF-8)."""
    cut = data[:limit]
    i = len(cut)
    while i > 0 and i > limit - 4 and (cut[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and cut[i - 1] >= 0xC0:
        i -= 1
    return cut[:i] if i < len(cut) and i > limit - 4 else cut


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

    def matches(self, path: str) -> bool:
        name = os.path.basename(path)
        if any(fnmatch.fnmatch(name, pat) for pat in self.cfg.exclude):
            return False
        return any(fnmatch.fnmatch(path, pat) or path == pat for pat in self.cfg.paths)

    def owns(self, path: str) -> bool:
        """``matches``, or a rotation of a configured file (``app.log.1``, ``app.log-20240301``)."""
        if self.matches(path):
            return True
        directory, name = os.path.split(path)
        if any(fnmatch.fnmatch(name, pat) for pat in self.cfg.exclude):
            return False
        for pattern in self.cfg.paths:
            pat_dir, base = os.path.split(pattern)
            if pat_dir == directory and base and (name.startswith(base + ".") or name.startswith(base + "-")):
                return True
        return False


@dataclass
class _Chunk:
    end: int
    futures: list[Any]
    nbytes: int
    records: int
    sent_at: float


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
    chunks: collections.deque[_Chunk] = field(default_factory=collections.deque)
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


@dataclass
class ShipStats:
    """Counters of one shipper; ``as_dict()`` adds the parsers' own."""

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


def _fingerprint(fd: int, nbytes: int) -> tuple[str, int]:
    head = os.pread(fd, nbytes, 0)
    return hashlib.blake2b(head, digest_size=16).hexdigest(), len(head)


def _id_prefix(dev: int, ino: int, fp: str, gen: int) -> str:
    ident = f"{HOSTNAME}:{dev}:{ino}:{fp}:{gen}".encode()
    return hashlib.blake2b(ident, digest_size=8).hexdigest() + "-"


class LogShipper(Component):
    """Tails the configured files into the logs topic, at least once.

    >>> with LogShipper(cfg, exit_at_eof=True) as shipper:   # doctest: +SKIP
    ...     shipper.run()                                   # returns once all present lines are acked
    """

    name = "logship"

    def __init__(self, cfg: AgentSettings, inputs: list[LogInputConfig] | None = None,
                 state_file: Path | bool | None = True, exit_at_eof: bool = False,
                 settings: LogShipConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.settings = settings or cfg.agents.logship
        self.inputs = list(inputs if inputs is not None else self.settings.inputs)
        if state_file is True:
            state_path = self.settings.state_file or paths.home() / "logship.state.json"
        else:
            state_path = state_file or None
        self.store = StateStore(Path(state_path) if state_path else None)
        self.exit_at_eof = exit_at_eof
        self.topic = cfg.kafka.topics.logs
        self.metrics_topic = cfg.kafka.topics.metrics
        self.stats = ShipStats()
        self.sources = [Source(i, make_parser(i.parser), i.service.encode(), log_event_encoder(i.service, HOSTNAME))
                        for i in self.inputs]
        self.tailers: dict[tuple[int, int], Tailer] = {}
        self._known: dict[tuple[int, int], FileState] = {}
        self._producer: Any = None
        self._sender: RecordSender | None = None
        self._inflight = 0
        self._retry_at = 0.0
        self._backoff = self.settings.backoff_initial_s
        self._next_scan = 0.0
        self._next_checkpoint = 0.0
        self._dirty = False
        self._first_scan = True
        self._started = False
        delivery_timeout_ms = {**kafka_api.PRODUCER_DEFAULTS, **SHIPPER_PRODUCER_OVERRIDES}["delivery_timeout_ms"]
        self._stall_s = delivery_timeout_ms / 1000 + _STALL_MARGIN_S
        self._encode_metric = FastavroEncoder(METRIC_EVENT)
        self.finished = False

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Locks and loads the state, then connects (a broker that is down is retried in ``run()``)."""
        if self._started:
            return
        self._started = True
        self.store.lock()
        self._known = self.store.load()
        self._connect(time.monotonic())

    def run(self) -> None:
        self.start()
        poll = self.settings.poll_interval_s
        while not self.stopping:
            self.mark_progress()
            now = time.monotonic()
            if self._producer is None and not self._connect(now):
                self._stop.wait(min(poll, max(0.0, self._retry_at - now)) or poll)
                continue
            if now >= self._next_scan:
                self._scan(now)
                if self._sender is not None:
                    self._sender.maintain()
            read = 0
            try:
                if now >= self._retry_at:
                    read = self._read_all(now)
                progressed = self._reap_all(now)
                self._housekeep(now)
            except KafkaError as exc:
                # Sending failed between reading and recording the read (e.g. no topic metadata):
                # every file goes back to its acknowledged offset, and reading pauses.
                for t in self.tailers.values():
                    if t.chunks or t.buf or t.skipping or t.read_pos != t.state.offset:
                        self._rewind(t)
                self._fail(now, "Could not hand lines to Kafka; rewinding to the last acknowledged line.", exc)
                continue
            if now >= self._next_checkpoint:
                self._checkpoint()
            if self.exit_at_eof and self._all_done():
                self._checkpoint(force=True)
                self.finished = True
                log.info("Every line present at start is acknowledged.", extra=self.stats_dict())
                return
            if read == 0 and not progressed:
                # Waiting for acks: short sleeps; idle: the poll interval.
                self._stop.wait(0.01 if self._inflight else poll)

    def _release(self) -> None:
        try:
            if self._sender is not None:
                try:
                    self._sender.flush(10.0)
                except KafkaError as exc:
                    log.warning("Could not deliver everything before closing.", extra={"error": str(exc)})
                self._reap_all(time.monotonic())
            self._checkpoint(force=True)
        finally:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=5)
                except Exception as exc:  # closing must not raise from close()
                    log.warning("Closing the Kafka producer failed.", extra={"error": str(exc)})
            for t in self.tailers.values():
                self._close_fd(t)
            self.store.unlock()

    def stats_dict(self) -> dict[str, int]:
        out = dict(vars(self.stats))
        out["unparsed"] = sum(s.parser.unparsed for s in self.sources)
        out["invalid_utf8"] = sum(s.parser.invalid_utf8 for s in self.sources)
        out["multiline_splits"] = sum(t.joiner.splits for t in self.tailers.values() if t.joiner)
        out["files"] = len(self.tailers)
        out["inflight_bytes"] = self._inflight
        return out

    # -- connection and backoff -------------------------------------------

    def _connect(self, now: float) -> bool:
        if self._producer is not None:
            return True
        if now < self._retry_at:
            return False
        try:
            self._producer = kafka_api.producer(self.cfg.kafka, **SHIPPER_PRODUCER_OVERRIDES)
        except KafkaError as exc:
            self.stats.connect_failures += 1
            self._fail(now, "Kafka is unreachable; files wait.", exc)
            return False
        self._sender = RecordSender(self._producer)
        self._backoff = self.settings.backoff_initial_s
        return True

    def _fail(self, now: float, message: str, exc: BaseException) -> None:
        self._retry_at = now + self._backoff
        log.warning(message, extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": round(self._backoff, 2)})
        self._backoff = min(self._backoff * 2, self.settings.backoff_max_s)

    # -- discovery --------------------------------------------------------

    def _scan(self, now: float) -> None:
        """Expands globs, opens new files, reopens closed ones that grew, recovers rotated ones at start."""
        self._next_scan = now + self.settings.scan_interval_s
        seen: set[tuple[int, int]] = set()
        for source in self.sources:
            for pattern in source.cfg.paths:
                for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                    if not source.matches(path):
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if not _is_regular(st.st_mode):
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    self._discover(source, path, key, st.st_size, now)
        if self._first_scan:
            self._first_scan = False
            self._recover_rotated(seen, now)
            self._recover_missed_rotations()
            self._checkpoint(force=True)  # record every file found before reading a backlog of them

    def _discover(self, source: Source, path: str, key: tuple[int, int], size: int, now: float) -> None:
        t = self.tailers.get(key)
        if t is not None:
            t.state.seen = time.time()
            if t.fd is None and not t.state.done and size != t.acked:
                self._open(t, path)
            return
        if size == 0:
            if self._first_scan and self.exit_at_eof:
                log.info("Empty file: nothing to ship yet.", extra={"path": path})
            return  # identity needs content; the next scan looks again
        prior = self._known.get(key)
        if prior is not None and prior.done and size <= prior.offset:
            prior.seen = time.time()  # finished earlier (a rotated file the glob also matches)
            return
        t = self._new_tailer(source, path, key, prior)
        if t is None:
            return
        if self._first_scan:
            t.target = size
            if prior is None and self.settings.read_from == "end" and not self.exit_at_eof:
                t.state.offset = t.read_pos = size  # the first start skips existing content
        self.tailers[key] = t
        self._dirty = True
        if t.replaced is not None and t.replaced.offset > 0:
            self._recover_copy(source, t.replaced, t.replaced.offset)  # copytruncate while we were down

    def _new_tailer(self, source: Source, path: str, key: tuple[int, int], prior: FileState | None,
                    rotated: bool = False) -> Tailer | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("Cannot open log file.", extra={"path": path, "error": str(exc)})
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != key:  # replaced between stat and open: next scan
            os.close(fd)
            return None
        fp_len = prior.fp_len if prior else self.settings.fingerprint_bytes
        fp, got = _fingerprint(fd, fp_len)
        replaced = None
        if prior is not None and (got != prior.fp_len or fp != prior.fp):
            # Same inode, other content: a reused inode, or truncated while we were down.
            log.info("File content changed since the checkpoint; reading it from the start.",
                     extra={"path": path, "inode": key[1]})
            replaced = prior
            prior = FileState(key[0], key[1], "", 0, prior.gen + 1, "", 0, path, source.service, time.time())
            fp, got = _fingerprint(fd, self.settings.fingerprint_bytes)
        if prior is None or not prior.fp:
            gen = prior.gen if prior else 0
            state = FileState(key[0], key[1], fp, got, gen, _id_prefix(key[0], key[1], fp, gen), 0, path,
                              source.service, time.time())
        else:
            state = prior
            state.path, state.seen = path, time.time()
        t = Tailer(state=state, source=source, fd=fd, read_pos=state.offset, rotated=rotated,
                   last_data=time.monotonic(), replaced=replaced)
        if source.cfg.multiline:
            t.joiner = MultilineJoiner(self.settings.max_multiline_lines, self.settings.max_line_bytes)
        if st.st_size < state.offset:
            t.truncation = True
        self.stats.files_opened += 1
        return t

    def _open(self, t: Tailer, path: str) -> None:
        fresh = self._new_tailer(t.source, path, (t.state.dev, t.state.ino), t.state)
        if fresh is not None:
            fresh.target = t.target
            self.tailers[(t.state.dev, t.state.ino)] = fresh

    def _recover_rotated(self, seen: set[tuple[int, int]], now: float) -> None:
        """Finds files the state knows that were renamed while the shipper was down (``app.log.1``)."""
        for key, state in self._known.items():
            if key in seen or key in self.tailers or state.done:
                continue
            source = next((s for s in self.sources if s.service == state.service and s.owns(state.path)), None)
            if source is None:
                continue
            path = _find_inode(os.path.dirname(state.path) or ".", key)
            if path is None:
                continue
            t = self._new_tailer(source, path, key, state, rotated=True)
            if t is None:
                continue
            try:
                t.target = os.fstat(t.fd).st_size if t.fd is not None else None
            except OSError:
                t.target = None
            self.tailers[key] = t
            self.stats.rotations += 1
            log.info("Finishing a file rotated while the shipper was down.", extra={"path": path})

    def _recover_missed_rotations(self) -> None:
        """Ships rotated files (``app.log.1``) that were created and rotated away while the shipper was down.

        Such a file was never matched by the configured path, so the state
        does not know it; it is recognised by its name (the configured file's
        name plus a suffix) and by having been written after the last checkpoint.
        """
        if self.store.written_at is None:
            return  # first start: history before us is not ours to ship
        threshold = self.store.written_at - self.settings.scan_interval_s - _MISSED_ROTATION_MARGIN_S
        for source in self.sources:
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
                    if not (name.startswith(base + ".") or name.startswith(base + "-")):
                        continue
                    if any(fnmatch.fnmatch(name, pat) for pat in source.cfg.exclude):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in self.tailers or key in self._known or not _is_regular(st.st_mode):
                        continue
                    if st.st_mtime < threshold or st.st_size == 0:
                        continue
                    t = self._new_tailer(source, entry.path, key, None, rotated=True)
                    if t is None:
                        continue
                    t.target = st.st_size
                    self.tailers[key] = t
                    self.stats.rotations += 1
                    self._dirty = True
                    log.info("Shipping a file rotated away while the shipper was down.", extra={"path": entry.path})

    # -- reading ----------------------------------------------------------

    def _read_order(self) -> list[Tailer]:
        # Rotated files first: their lines are older than the new file's.
        return sorted((t for t in self.tailers.values() if t.fd is not None),
                      key=lambda t: (not t.rotated, t.state.path))

    def _read_all(self, now: float) -> int:
        total = 0
        limit = self.settings.max_inflight_bytes
        for t in self._read_order():
            if t.truncation:
                continue
            for _ in range(_READS_PER_TURN):
                if self._inflight >= limit:
                    return total
                n = self._read_once(t, now)
                total += n
                if n == 0:
                    break
                if time.monotonic() - now > _READ_BUDGET_S:
                    return total  # acks, rotation checks and checkpoints get their turn
        return total

    def _read_once(self, t: Tailer, now: float) -> int:
        assert t.fd is not None
        if self._prefix_changed(t):
            t.truncation = t.at_eof = True
            return 0
        try:
            data = os.pread(t.fd, self.settings.read_chunk_bytes, t.read_pos)
        except OSError as exc:
            log.warning("Reading a log file failed.", extra={"path": t.state.path, "error": str(exc)})
            t.at_eof = True
            return 0
        if not data:
            t.at_eof = True
            return 0
        t.at_eof = False
        t.last_data = now
        n = len(data)
        pos0 = t.read_pos
        t.read_pos += n
        self.stats.bytes_read += n
        max_line = self.settings.max_line_bytes
        records: list[Record] = []
        joiner = t.joiner
        if t.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                t.skip_len += n
                return n
            t.skip_len += nl
            end = pos0 + nl + 1
            self._truncated_record(t, t.skip_head, t.skip_start, end, t.skip_len, records)
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
                self._truncated_record(t, _cut_utf8(line, max_line), off, end, ln, records)
            elif joiner is not None:
                joiner.feed(line, off, end, records)
            elif ln:
                records.append((line, off, end, 1))
            else:
                blank += 1
            off = end
        self.stats.lines += len(lines)
        self.stats.blank_lines += blank
        if len(t.buf) > max_line:
            t.skipping = True
            t.skip_start = off
            t.skip_head = _cut_utf8(t.buf, max_line)
            t.skip_len = len(t.buf)
            t.buf = b""
        self._ship(t, records, n)
        return n

    def _truncated_record(self, t: Tailer, head: bytes, start: int, end: int, length: int,
                          records: list[Record]) -> None:
        self.stats.truncated_lines += 1
        t.truncated[start] = length
        if t.joiner is not None:
            t.joiner.flush(records)  # a truncated line stands alone
        records.append((head, start, end, 1))

    def _safe_offset(self, t: Tailer) -> int:
        """The offset before which every record has been handed to the producer."""
        pos = t.skip_start if t.skipping else t.read_pos - len(t.buf)
        if t.joiner is not None:
            open_start = t.joiner.open_start()
            if open_start is not None and open_start < pos:
                pos = open_start
        return pos

    def _ship(self, t: Tailer, records: list[Record], nbytes: int) -> None:
        """Parses, encodes and sends records; remembers their futures with the safe offset."""
        futures: list[Any] = []
        if records:
            source = t.source
            parse = source.parser.parse
            encode = source.encode
            key, service = source.key, source.service
            prefix = t.state.id
            truncated = t.truncated
            max_event = self.settings.max_event_bytes
            emits_metrics = source.parser.emits_metrics
            read_ts = now_us()
            values: list[bytes] = []
            metric_values: list[bytes] = []
            append = values.append
            for data, start, _end, nlines in records:
                rec = parse(data)
                if rec["ts"] is None:
                    rec["ts"] = read_ts
                rec["event_id"] = f"{prefix}{start:x}"
                rec["service"] = service
                rec["host"] = HOSTNAME
                if truncated and start in truncated:
                    rec["attrs"]["truncated"] = _TRUNCATED_MARK
                    rec["attrs"]["original_bytes"] = str(truncated.pop(start))
                if nlines > 1:
                    rec["attrs"]["lines"] = str(nlines)
                value = encode(rec)
                if len(value) > max_event:
                    value = self._shrink(rec, max_event, encode)
                append(value)
                if emits_metrics:
                    for i, (name, val, unit, labels) in enumerate(source.parser.metrics(rec)):
                        metric = {"event_id": f"{rec['event_id']}.m{i}", "ts": rec["ts"], "service": service,
                                  "host": HOSTNAME, "name": name, "value": val, "unit": unit, "labels": labels}
                        metric_values.append(self._encode_metric(metric))
            sender = self._sender
            assert sender is not None
            futures = sender.send_many(self.topic, key, values)
            if metric_values:
                futures += sender.send_many(self.metrics_topic, key, metric_values)
                self.stats.metric_events += len(metric_values)
            self.stats.records += len(records)
        safe = self._safe_offset(t)
        if not futures and not t.chunks:
            if safe != t.state.offset:
                t.state.offset = safe
                self._dirty = True
            return
        t.chunks.append(_Chunk(safe, futures, nbytes, len(records), time.monotonic()))
        t.inflight += nbytes
        self._inflight += nbytes

    def _shrink(self, rec: dict[str, Any], max_event: int, encode: Callable[[dict[str, Any]], bytes]) -> bytes:
        """Cuts the message (then attrs) of an event too large for the broker; marks it truncated."""
        self.stats.oversize_events += 1
        attrs = rec["attrs"]
        attrs["truncated"] = _TRUNCATED_MARK
        value = encode(rec)
        excess = len(value) - max_event + 64
        msg = rec["message"].encode()
        if excess < len(msg):
            rec["message"] = _cut_utf8(msg, len(msg) - excess).decode("utf-8", "replace")
            value = encode(rec)
        if len(value) > max_event:  # the attributes themselves are too big
            rec["attrs"] = {"truncated": _TRUNCATED_MARK, "dropped_attrs": str(len(attrs))}
            msg = rec["message"].encode()
            rec["message"] = _cut_utf8(msg, max(0, max_event // 2)).decode("utf-8", "replace")
            value = encode(rec)
        return value

    # -- acknowledgements -------------------------------------------------

    def _reap_all(self, now: float) -> bool:
        progressed = False
        failed: BaseException | None = None
        for t in list(self.tailers.values()):
            result = self._reap(t, now)
            if result is True:
                progressed = True
            elif isinstance(result, BaseException):
                failed = result
                self._rewind(t)
        if failed is not None:
            self.stats.delivery_failures += 1
            self._fail(now, "Kafka did not acknowledge; rewinding to the last acknowledged line.", failed)
        elif progressed:
            self._backoff = self.settings.backoff_initial_s
        return progressed

    def _reap(self, t: Tailer, now: float) -> bool | BaseException:
        progressed = False
        chunks = t.chunks
        while chunks:
            chunk = chunks[0]
            futures = chunk.futures
            if futures:
                pending = False
                for f in futures:
                    if not f.is_done:
                        pending = True
                        break
                    error = batch_failure(f)
                    if error is not None:
                        return error
                if pending:
                    if now - chunk.sent_at > self._stall_s:
                        # kafka-python fails a batch after delivery_timeout_ms; one never answered is lost
                        # to us (e.g. split after MESSAGE_TOO_LARGE): send it again rather than stall.
                        return KafkaError(f"no acknowledgement after {self._stall_s:.0f} s")
                    break
            chunks.popleft()
            t.inflight -= chunk.nbytes
            self._inflight -= chunk.nbytes
            self.stats.acked += chunk.records
            if chunk.end != t.state.offset:
                t.state.offset = chunk.end
                self._dirty = True
            progressed = True
        return progressed

    def _rewind(self, t: Tailer) -> None:
        self.stats.rewinds += 1
        self._inflight -= t.inflight
        t.inflight = 0
        t.chunks.clear()
        t.read_pos = t.state.offset
        t.buf = b""
        t.skipping = False
        t.truncated.clear()
        if t.joiner is not None:
            t.joiner.reset()

    # -- rotation, truncation, idle flush ---------------------------------

    def _prefix_changed(self, t: Tailer) -> bool:
        """True when the file's first bytes are no longer those it was identified by (truncated, refilled)."""
        if t.fd is None or not t.state.fp_len:
            return False
        try:
            fp, got = _fingerprint(t.fd, t.state.fp_len)
        except OSError:
            return False
        return got < t.state.fp_len or fp != t.state.fp

    def _housekeep(self, now: float) -> None:
        s = self.settings
        for key, t in list(self.tailers.items()):
            if t.fd is None:
                if t.state.done and not t.chunks and t.deleted:
                    del self.tailers[key]
                    self._dirty = True
                continue
            if t.truncation:
                self._handle_truncation(t, now)
                continue
            if not t.at_eof:
                continue
            self._check_file(t, now)
            if t.truncation:
                self._handle_truncation(t, now)
                continue
            idle = now - t.last_data
            finishing = t.rotated and idle >= s.rotate_wait_s
            at_target = self.exit_at_eof and t.target is not None and t.read_pos >= t.target
            if finishing or at_target:
                self._flush_partial(t)
            elif t.joiner is not None and idle >= s.multiline_flush_s and t.joiner.open_start() is not None:
                records: list[Record] = []
                t.joiner.flush(records)
                self._ship(t, records, 0)
            if finishing and not t.chunks and not t.buf and not t.skipping:
                t.state.done = True
                self._close_fd(t)
                self._dirty = True
                if t.deleted:
                    self.stats.deleted_files += 1
            elif (not t.rotated and idle >= s.close_inactive_s and not t.chunks and not t.buf
                  and (t.joiner is None or t.joiner.open_start() is None)):
                self._close_fd(t)

    def _flush_partial(self, t: Tailer) -> None:
        """At the end of a finished file (or of a bulk load): the unterminated last line is a line too."""
        records: list[Record] = []
        if t.skipping:
            self._truncated_record(t, t.skip_head, t.skip_start, t.read_pos, t.skip_len, records)
            t.skipping = False
        elif t.buf:
            line = t.buf[:-1] if t.buf.endswith(b"\r") else t.buf
            start = t.read_pos - len(t.buf)
            t.buf = b""
            if t.joiner is not None:
                t.joiner.feed(line, start, t.read_pos, records)
            else:
                records.append((line, start, t.read_pos, 1))
            self.stats.lines += 1
        if t.joiner is not None:
            t.joiner.flush(records)
        if records or (not t.chunks and t.state.offset != self._safe_offset(t)):
            self._ship(t, records, 0)

    def _check_file(self, t: Tailer, now: float) -> None:
        """Notices rename rotation, deletion and truncation of an idle file."""
        assert t.fd is not None
        try:
            fst = os.fstat(t.fd)
        except OSError:
            return
        if fst.st_size < t.read_pos:
            t.truncation = True
            return
        if t.rotated:
            return
        if fst.st_nlink == 0:
            t.rotated = t.deleted = True
            log.info("Log file deleted; finishing what is left of it.", extra={"path": t.state.path})
            return
        try:
            st = os.stat(t.state.path)
            moved = (st.st_dev, st.st_ino) != (t.state.dev, t.state.ino)
        except OSError:
            moved = True
        if moved:
            t.rotated = True
            self.stats.rotations += 1
            self._next_scan = now  # pick the new file up at once
            renamed = _find_inode(os.path.dirname(t.state.path) or ".", (t.state.dev, t.state.ino))
            if renamed is not None:
                t.state.path = renamed
            log.info("Log file rotated; finishing the old file.", extra={"path": t.state.path})

    def _handle_truncation(self, t: Tailer, now: float) -> None:
        """Copytruncate: recover unread lines from the copy, then read the file again from 0."""
        if t.chunks:
            return  # wait until what was sent is acknowledged (or rewound)
        old = t.state
        if not self._recover_copy(t.source, old, self._safe_offset(t)):
            if t.buf or t.skipping or (t.joiner is not None and t.joiner.open_start() is not None):
                # No copy to re-read from: ship what was read before the truncation first.
                self._flush_partial(t)
                if t.chunks:
                    return
            log.info("Log file truncated; reading it again from the start.", extra={"path": old.path})
        self.stats.truncations += 1
        gen = old.gen + 1
        t.buf = b""
        t.skipping = False
        t.truncated.clear()
        if t.joiner is not None:
            t.joiner.reset()
        assert t.fd is not None
        fp, got = _fingerprint(t.fd, self.settings.fingerprint_bytes)
        t.state = FileState(old.dev, old.ino, fp, got, gen, _id_prefix(old.dev, old.ino, fp, gen), 0, old.path,
                            old.service, time.time())
        t.read_pos = 0
        t.truncation = False
        t.target = None
        self._dirty = True
        if got == 0:
            # Empty after truncation: fingerprint once content arrives (next scan re-discovers it).
            self._close_fd(t)
            del self.tailers[(old.dev, old.ino)]

    def _recover_copy(self, source: Source, old: FileState, min_size: int) -> bool:
        """Reads what was not yet acknowledged of a truncated file from its copy, under the old event ids."""
        copy = _find_copy(os.path.dirname(old.path) or ".", old, min_size)
        if copy is None:
            return False
        path, key = copy
        existing = self.tailers.get(key)
        if existing is not None:
            if existing.state.id == old.id:
                return True  # already recovering from it
            # Found by the glob as a file of its own: its lines are those of the old file, so re-key it.
            if existing.chunks or existing.state.offset > old.offset:
                return True
            self._close_fd(existing)
            del self.tailers[key]
        recovered = FileState(key[0], key[1], old.fp, old.fp_len, old.gen, old.id, old.offset, path,
                              old.service, time.time())
        rt = self._new_tailer(source, path, key, recovered, rotated=True)
        if rt is None:
            return False
        rt.target = os.fstat(rt.fd).st_size if rt.fd is not None else None
        self.tailers[key] = rt
        self.stats.copy_recoveries += 1
        self._dirty = True
        log.info("Copytruncate: reading unshipped lines from the copy.", extra={"path": path, "offset": old.offset})
        return True

    def _close_fd(self, t: Tailer) -> None:
        if t.fd is not None:
            with contextlib.suppress(OSError):
                os.close(t.fd)
            t.fd = None

    # -- checkpoints and completion ---------------------------------------

    def _checkpoint(self, force: bool = False) -> None:
        self._next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        if not (self._dirty or force):
            return
        now = time.time()
        horizon = now - self.settings.forget_after_s
        states = {k: t.state for k, t in self.tailers.items()}
        for key, state in self._known.items():
            if key not in states and state.seen >= horizon and not (state.done and not os.path.exists(state.path)):
                states[key] = state
        self._known = states
        try:
            self.store.save(list(states.values()))
            self._dirty = False
        except OSError as exc:
            log.warning("Could not write the state file.", extra={"error": str(exc)})

    def _all_done(self) -> bool:
        for t in self.tailers.values():
            if t.target is None:
                continue
            if t.chunks or t.truncation or t.state.offset < t.target:
                return False
        return True


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _find_inode(directory: str, key: tuple[int, int]) -> str | None:
    """The path of the file with this (device, inode) in ``directory``, if any."""
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


def _find_copy(directory: str, state: FileState, min_size: int) -> tuple[str, tuple[int, int]] | None:
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
        if (st.st_dev, st.st_ino) == (state.dev, state.ino) or not _is_regular(st.st_mode) or st.st_size < min_size:
            continue
        candidates.append((st.st_mtime, entry.path, (st.st_dev, st.st_ino)))
    for _, path, key in sorted(candidates, reverse=True):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fp, got = _fingerprint(fd, state.fp_len)
        finally:
            os.close(fd)
        if got == state.fp_len and fp == state.fp:
            return path, key
    return None
