"""The log shipper: tails files into the logs topic, at least once, across rotation, truncation and kill -9.

Protocol, per file (the parts live beside this module):

1. A file is known by its identity (``identity``): device, inode and a hash
   of its first bytes (``fingerprint_bytes``), plus a truncation generation.
   The event-id prefix derives from it, and each record's event_id is that
   prefix plus the record's byte offset (``events``), so a record shipped
   twice has one id.
2. Reading (``reader``) appends to the producer and remembers, per read, the
   futures of the records sent and the offset up to which every record has
   been sent (never inside a line, a multiline record or a truncated line).
3. A read is acknowledged when every future in it succeeded; acknowledged
   reads advance the file's offset in order (``acks``).
4. The state file (``checkpoints``) saves those offsets every
   ``checkpoint_interval_s``, so a restart resumes at the last acknowledged
   line: whatever was sent but not acknowledged at a kill is sent again (same
   event ids).
5. A failed delivery rewinds the file to its acknowledged offset and pauses
   with exponential backoff. While ``max_inflight_bytes`` are unacknowledged
   (a broker that is down) no file is read: the files are the buffer.

Rename rotation (``discovery``): the open descriptor is read to its end and
closed once the path points elsewhere and ``rotate_wait_s`` passed; the new
file is found by the next scan. After a restart, a file the state knows but
the globs no longer match is looked for by inode beside its old path.
Copytruncate: a file shorter than the read position, or whose first bytes
changed, is re-read from 0 with the next generation, after the lines between
the last read and the truncation are recovered from the copy (same
directory, same first bytes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from tocsin.core import kafka as kafka_api
from tocsin.core import paths
from tocsin.core.component import Component
from tocsin.core.errors import KafkaError
from tocsin.core.events import HOSTNAME, METRIC_EVENT
from tocsin.producers.avrofast import FastavroEncoder, log_event_encoder
from tocsin.producers.config import AgentSettings, LogInputConfig, LogShipConfig, MultilineConfig
from tocsin.producers.kafkasend import RecordSender
from tocsin.producers.logship import compressed, discovery, identity, reader
from tocsin.producers.logship.acks import AckTracker
from tocsin.producers.logship.checkpoints import FileState, StateStore, retained
from tocsin.producers.logship.discovery import FileChange, Source
from tocsin.producers.logship.events import encode_records
from tocsin.producers.logship.identity import FileKey
from tocsin.producers.logship.reader import Tailer
from tocsin.producers.logship.stats import ShipStats
from tocsin.producers.multiline import MultilineJoiner, PatternJoiner, Record
from tocsin.producers.parsers import make_parser
from tocsin.producers.redact import redactor_of
from tocsin.producers.shape import Shaper

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
_STALL_MARGIN_S = 30.0  # beyond kafka-python's own delivery timeout
# Clock slack when telling files rotated after the last checkpoint from older ones.
_MISSED_ROTATION_MARGIN_S = 5.0


def _shaper(cfg: LogInputConfig) -> Shaper | None:
    shaper = Shaper(cfg.shape)
    return shaper if shaper.active else None


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
        self.sources = [Source(i, make_parser(i.parser), i.service.encode(), log_event_encoder(i.service, HOSTNAME),
                               redactor_of(i.redact), _shaper(i)) for i in self.inputs]
        self.tailers: dict[FileKey, Tailer] = {}
        self._known: dict[FileKey, FileState] = {}
        self._producer: Any = None
        self._sender: RecordSender | None = None
        self._retry_at = 0.0
        self._backoff = self.settings.backoff_initial_s
        self._next_scan = 0.0
        self._next_checkpoint = 0.0
        self._dirty = False
        self._first_scan = True
        self._started = False
        delivery_timeout_ms = {**kafka_api.PRODUCER_DEFAULTS, **SHIPPER_PRODUCER_OVERRIDES}["delivery_timeout_ms"]
        self.acks = AckTracker(delivery_timeout_ms / 1000 + _STALL_MARGIN_S, self.stats)
        self._encode_metric = FastavroEncoder(METRIC_EVENT)
        self.finished = False

    @property
    def _inflight(self) -> int:
        """Bytes read but not acknowledged, over all files."""
        return self.acks.inflight_bytes

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
                        self.acks.rewind(t)
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
        for source in self.sources:  # replacements per pattern and records shaped out, over every input
            if source.redactor is not None:
                for name, n in source.redactor.counts.items():
                    out[f"redacted_{name}"] = out.get(f"redacted_{name}", 0) + n
            if source.shaper is not None:
                for reason, n in source.shaper.counts.items():
                    out[reason] = out.get(reason, 0) + n
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
        seen: set[FileKey] = set()
        for source, path, key, size in discovery.scan(self.sources):
            seen.add(key)
            self._discover(source, path, key, size)
        self._discover_gz()
        if self._first_scan:
            self._first_scan = False
            self._recover_rotated(seen)
            self._recover_missed_rotations()
            self._checkpoint(force=True)  # record every file found before reading a backlog of them

    def _discover(self, source: Source, path: str, key: FileKey, size: int) -> None:
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
        copy = False
        if prior is None:  # a copy of a known file (copytruncate) continues its identity, never starts a new one
            states = {**self._known, **{k: t.state for k, t in self.tailers.items()}}.values()
            live = {t.state.id for t in self.tailers.values() if t.fd is not None}
            skip, prior = identity.copy_identity(path, key, size, source.service, states, live,
                                                 self.settings.fingerprint_bytes)
            if skip:
                return
            if prior is not None:
                copy = self._dirty = True
                self._known[key] = prior
                log.info("A copy of a known file: continuing its identity.", extra={"path": path})
        if prior is not None and prior.done and size <= prior.offset:
            prior.seen = time.time()  # finished earlier (a rotated file the glob also matches)
            return
        t = self._new_tailer(source, path, key, prior, rotated=copy)
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

    def _new_tailer(self, source: Source, path: str, key: FileKey, prior: FileState | None,
                    rotated: bool = False) -> Tailer | None:
        """Opens a file and settles its identity: the checkpoint's if its first bytes are unchanged."""
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
        fp, got = identity.fingerprint(fd, fp_len)
        replaced = None
        if prior is not None and (got != prior.fp_len or fp != prior.fp):
            # Same inode, other content: a reused inode, or truncated while we were down.
            log.info("File content changed since the checkpoint; reading it from the start.",
                     extra={"path": path, "inode": key[1]})
            replaced = prior
            prior = FileState(key[0], key[1], "", 0, prior.gen + 1, "", 0, path, source.service, time.time())
            fp, got = identity.fingerprint(fd, self.settings.fingerprint_bytes)
        if prior is None or not prior.fp:
            state = identity.new_state(key, fp, got, prior.gen if prior else 0, path, source.service, time.time())
        else:
            state = prior
            state.path, state.seen = path, time.time()
        t = Tailer(state=state, source=source, fd=fd, read_pos=state.offset, rotated=rotated,
                   last_data=time.monotonic(), replaced=replaced)
        self._add_joiner(t)
        if st.st_size < state.offset:
            t.truncation = True
        self.stats.files_opened += 1
        return t

    def _add_joiner(self, t: Tailer) -> None:
        ml = t.source.cfg.multiline
        if isinstance(ml, MultilineConfig):
            t.joiner = PatternJoiner(ml.start, ml.continuation, self.settings.max_multiline_lines,
                                     self.settings.max_line_bytes)
        elif ml:
            t.joiner = MultilineJoiner(self.settings.max_multiline_lines, self.settings.max_line_bytes)

    def _open(self, t: Tailer, path: str) -> None:
        fresh = self._new_tailer(t.source, path, (t.state.dev, t.state.ino), t.state)
        if fresh is not None:
            fresh.target = t.target
            self.tailers[(t.state.dev, t.state.ino)] = fresh

    def _recover_rotated(self, seen: set[FileKey]) -> None:
        """Finds files the state knows that were renamed while the shipper was down (``app.log.1``)."""
        for key, state in self._known.items():
            if key in seen or key in self.tailers or state.done:
                continue
            source = next((s for s in self.sources if s.service == state.service and s.owns(state.path)), None)
            if source is None:
                continue
            path = identity.find_inode(os.path.dirname(state.path) or ".", key)
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
        for source, path, key, size in discovery.rotated_candidates(self.sources, threshold):
            if key in self.tailers or key in self._known:
                continue
            t = self._new_tailer(source, path, key, None, rotated=True)
            if t is None:
                continue
            t.target = size
            self.tailers[key] = t
            self.stats.rotations += 1
            self._dirty = True
            log.info("Shipping a file rotated away while the shipper was down.", extra={"path": path})

    def _discover_gz(self) -> None:
        """Rotated ``.gz`` files not seen before: read once, resuming the file they were compressed from."""
        threshold = ((self.store.written_at or 0.0) - self.settings.scan_interval_s - _MISSED_ROTATION_MARGIN_S
                     if self.store.written_at is not None else None)
        for source, path, key, mtime in compressed.rotations(self.sources):
            known = self._known.get(key)
            if key in self.tailers:
                continue
            if known is not None and known.path == path:
                known.seen = time.time()  # read (or refused) once: remembered while it exists
                continue
            try:
                fd = compressed.decompress(path, self.settings.max_gz_bytes)
            except compressed.UnreadableError as exc:
                self.stats.gz_refused += 1
                log.warning("Rotated .gz file not read.", extra={"path": path, "error": str(exc)})
                self._known[key] = FileState(key[0], key[1], "", 0, 0, "", 0, path, source.service, time.time(),
                                             done=True)
                self._dirty = True
                continue
            origin = compressed.origin(fd, [t.state for t in self.tailers.values()] + list(self._known.values()))
            reading = self.tailers.get(origin.key) if origin is not None else None
            if reading is not None and reading.state is origin and not origin.done:
                os.close(fd)  # the plain file is still being read to its end: look again at the next scan
                continue
            if origin is None and (threshold is None or mtime < threshold):
                # Unknown content from before this shipper's time (or its first start): not ours to ship.
                os.close(fd)
                self._known[key] = FileState(key[0], key[1], "", 0, 0, "", 0, path, source.service, time.time(),
                                             done=True)
                self._dirty = True
                continue
            size = os.fstat(fd).st_size
            if origin is not None:
                state = FileState(key[0], key[1], origin.fp, origin.fp_len, origin.gen, origin.id,
                                  min(origin.offset, size), path, source.service, time.time())
            else:
                fp, got = identity.fingerprint(fd, self.settings.fingerprint_bytes)
                state = identity.new_state(key, fp, got, 0, path, source.service, time.time())
            t = Tailer(state=state, source=source, fd=fd, read_pos=state.offset, rotated=True,
                       last_data=time.monotonic(), target=size)
            self._add_joiner(t)
            self.tailers[key] = t
            self.stats.gz_files += 1
            self.stats.files_opened += 1
            self._dirty = True
            log.info("Reading a rotated .gz file once.", extra={"path": path, "offset": state.offset,
                                                                "resumes": origin.path if origin else None})

    # -- reading and sending ----------------------------------------------

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
                    return total  # backpressure: wait for acknowledgements
                n = self._read_once(t, now)
                total += n
                if n == 0:
                    break
                if time.monotonic() - now > _READ_BUDGET_S:
                    return total  # acks, rotation checks and checkpoints get their turn
        return total

    def _read_once(self, t: Tailer, now: float) -> int:
        if identity.prefix_changed(t.fd, t.state):
            t.truncation = t.at_eof = True
            return 0
        n, records = reader.read_chunk(t, self.settings.read_chunk_bytes, self.settings.max_line_bytes, now,
                                       self.stats)
        if n:
            self._ship(t, records, n)
        return n

    def _ship(self, t: Tailer, records: list[Record], nbytes: int) -> None:
        """Encodes and sends records; remembers their futures with the safe offset."""
        futures: list[Any] = []
        if records:
            values, metric_values = encode_records(t, records, self.settings.max_event_bytes, self._encode_metric,
                                                   self.stats)
            sender = self._sender
            assert sender is not None
            key = t.source.key
            futures = sender.send_many(self.topic, key, values)
            if metric_values:
                futures += sender.send_many(self.metrics_topic, key, metric_values)
                self.stats.metric_events += len(metric_values)
            self.stats.records += len(records)
        if self.acks.add(t, futures, nbytes, len(records)):
            self._dirty = True

    # -- acknowledgements -------------------------------------------------

    def _reap_all(self, now: float) -> bool:
        progressed = False
        failed: BaseException | None = None
        for t in list(self.tailers.values()):
            result, moved = self.acks.reap(t, now)
            self._dirty |= moved
            if result is True:
                progressed = True
            elif isinstance(result, BaseException):
                failed = result
                self.acks.rewind(t)
        if failed is not None:
            self.stats.delivery_failures += 1
            self._fail(now, "Kafka did not acknowledge; rewinding to the last acknowledged line.", failed)
        elif progressed:
            self._backoff = self.settings.backoff_initial_s
        return progressed

    # -- rotation, truncation, idle flush ---------------------------------

    def _housekeep(self, now: float) -> None:
        s = self.settings
        for key, t in list(self.tailers.items()):
            if t.fd is None:
                if t.state.done and not t.chunks and t.deleted:
                    del self.tailers[key]
                    self._dirty = True
                continue
            if t.truncation:
                self._handle_truncation(t)
                continue
            if not t.at_eof:
                continue
            self._check_file(t, now)
            if t.truncation:
                self._handle_truncation(t)
                continue
            idle = now - t.last_data
            finishing = t.rotated and idle >= s.rotate_wait_s
            at_target = self.exit_at_eof and t.target is not None and t.read_pos >= t.target
            if finishing or at_target:
                self._flush_partial(t)
            elif t.joiner is not None and idle >= s.multiline_flush_s and t.joiner.open_start() is not None:
                self._ship(t, reader.idle_records(t), 0)
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
        records = reader.final_records(t, self.stats)
        if records or (not t.chunks and t.state.offset != reader.safe_offset(t)):
            self._ship(t, records, 0)

    def _check_file(self, t: Tailer, now: float) -> None:
        """Notices rename rotation, deletion and truncation of an idle file."""
        assert t.fd is not None
        change, path = discovery.check(t.fd, t.state.path, t.state.key, t.read_pos, t.rotated)
        if change is FileChange.TRUNCATED:
            t.truncation = True
        elif change is FileChange.DELETED:
            t.rotated = t.deleted = True
            log.info("Log file deleted; finishing what is left of it.", extra={"path": t.state.path})
        elif change is FileChange.ROTATED:
            t.rotated = True
            self.stats.rotations += 1
            self._next_scan = now  # pick the new file up at once
            t.state.path = path
            log.info("Log file rotated; finishing the old file.", extra={"path": t.state.path})

    def _handle_truncation(self, t: Tailer) -> None:
        """Copytruncate: recover unread lines from the copy, then read the file again from 0."""
        if t.chunks:
            return  # wait until what was sent is acknowledged (or rewound)
        old = t.state
        if not self._recover_copy(t.source, old, reader.safe_offset(t)):
            if t.pending_record():
                # No copy to re-read from: ship what was read before the truncation first.
                self._flush_partial(t)
                if t.chunks:
                    return
            log.info("Log file truncated; reading it again from the start.", extra={"path": old.path})
        self.stats.truncations += 1
        t.reset_reading()
        assert t.fd is not None
        fp, got = identity.fingerprint(t.fd, self.settings.fingerprint_bytes)
        t.state = identity.new_state(old.key, fp, got, old.gen + 1, old.path, old.service, time.time())
        t.read_pos = 0
        t.truncation = False
        t.target = None
        self._dirty = True
        if got == 0:
            # Empty after truncation: fingerprint once content arrives (next scan re-discovers it).
            self._close_fd(t)
            del self.tailers[old.key]

    def _recover_copy(self, source: Source, old: FileState, min_size: int) -> bool:
        """Reads what was not yet acknowledged of a truncated file from its copy, under the old event ids."""
        copy = identity.find_copy(os.path.dirname(old.path) or ".", old, min_size)
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
        """Saves the acknowledged offsets (only ever those: a checkpoint never runs ahead of Kafka)."""
        self._next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        if not (self._dirty or force):
            return
        horizon = time.time() - self.settings.forget_after_s
        self._known = states = retained({k: t.state for k, t in self.tailers.items()}, self._known, horizon)
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
