"""Syslog listener: RFC 5424 and RFC 3164 messages over UDP and TCP (RFC 6587 octet counting or LF framing)
as LogEvents.

Parsing is hand-written: both grammars are a dozen fields, and the PyPI parsers are unmaintained
(syslog-rfc5424-parser's last release is from 2019) and cover one format each. A message is:

* RFC 5424 when ``<PRI>1 `` starts it: timestamp, hostname, app-name, procid, msgid, structured data
  (each param becomes ``attrs["sd.<id>.<param>"]``) and the message (a UTF-8 BOM is stripped);
* otherwise RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG``; a message with a valid PRI that
  does not follow that shape is kept whole as the message with the peer as host (RFC 3164 4.3.3);
* garbage (no ``<PRI>``, PRI over 191, a TCP frame whose length is not a number): dead-lettered with the reason
  and counted.

Mapping: the service is the app-name/tag (``service_from: app_name``) or ``syslog.service``; the level
comes from the severity (0-2 CRITICAL, 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG); facility, severity,
procid, msgid, peer and transport are attrs. ``syslog.redact`` rewrites the message and the attribute values
(structured data included), and what is dead-lettered, before anything is encoded.

Delivery: messages are published in batches with ``acks=all``; a batch that Kafka did not acknowledge
is retried until it is. **UDP is at most once**: a datagram lost on the network, or arriving while the
queue is full (Kafka down), is gone (the latter is counted in ``udp_dropped``). TCP is pushed back: while
Kafka does not acknowledge, the queue fills and the listener stops reading, so the sender's own queue
(rsyslog's action queue) holds the messages; what sat in socket buffers when a connection broke is lost,
as plain-TCP syslog has no acknowledgement (RELP would be needed for more).
"""

from __future__ import annotations

import functools
import logging
import queue
import re
import socket
import socketserver
import threading
import time
from datetime import datetime
from typing import Any

from tocsin.core.component import Component
from tocsin.core.errors import KafkaError
from tocsin.core.events import LOG_EVENT, new_event_id, now_us
from tocsin.producers.config import AgentSettings
from tocsin.producers.inputs.config import SyslogConfig
from tocsin.producers.inputs.publish import AckedPublisher, InputCounters, Record, input_stats
from tocsin.producers.redact import redactor_of

log = logging.getLogger("tocsin.syslog")
LEVELS = ("CRITICAL", "CRITICAL", "CRITICAL", "ERROR", "WARNING", "INFO", "INFO", "DEBUG")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3",
              "local4", "local5", "local6", "local7")
_PRI = re.compile(rb"<(\d{1,3})>")
_5424 = re.compile(r"1 (\S+) (\S+) (\S+) (\S+) (\S+) ?(.*)\Z", re.S)
_3164 = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d) (\S+) "
                   r"([^\s:\[]{1,64})(?:\[([^\]]{0,32})\])?:? ?(.*)\Z", re.S)
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), 1)}
_MAX_FRAME_DIGITS = 10
_MAX_SD_PARAMS = 64


class BadSyslog(Exception):
    """Why a message is not syslog (the dead letter's reason)."""


def _nil(v: str) -> str:
    return "" if v == "-" else v


def _structured_data(text: str) -> tuple[dict[str, str], str]:
    """RFC 5424 STRUCTURED-DATA (``-`` or ``[id k="v"...]...``) as attrs, and the rest (the MSG)."""
    if text.startswith("-"):
        return {}, text[2:] if text.startswith("- ") else text[1:]
    attrs: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n and text[i] == "[":
        j = i + 1
        while j < n and text[j] not in " ]":
            j += 1
        sd_id = text[i + 1:j]
        while j < n and text[j] == " ":
            j += 1
            k = j
            while k < n and text[k] != "=":
                k += 1
            name = text[j:k]
            if k + 1 >= n or text[k + 1] != '"':
                raise BadSyslog(f"structured data param {name[:40]!r} has no quoted value")
            k += 2
            value = []
            while k < n and text[k] != '"':
                if text[k] == "\\" and k + 1 < n and text[k + 1] in '"\\]':
                    k += 1
                value.append(text[k])
                k += 1
            if k >= n:
                raise BadSyslog("structured data value is not closed")
            if len(attrs) < _MAX_SD_PARAMS:
                attrs[f"sd.{sd_id}.{name}"] = "".join(value)
            j = k + 1
        if j >= n or text[j] != "]":
            raise BadSyslog("structured data element is not closed with ]")
        i = j + 1
    if i == 0:
        raise BadSyslog("structured data is neither - nor [...]")
    return attrs, text[i + 1:] if text[i:i + 1] == " " else text[i:]


def _ts_3164(mon: str, day: str, hh: str, mm: str, ss: str, now: float) -> int:
    """RFC 3164 has neither year nor zone: the receiver's local time, last year when that is in the future."""
    return _ts_3164_cached(mon, day, hh, mm, ss, int(now // 3600))


@functools.lru_cache(maxsize=4096)
def _ts_3164_cached(mon: str, day: str, hh: str, mm: str, ss: str, hour: int) -> int:
    """Cached per second of the stamp (and hour of arrival): mktime is the costliest step of a 3164 parse."""
    now = hour * 3600.0
    lt = time.localtime(now)
    month = _MONTHS.get(mon)
    if month is None:
        raise ValueError(f"no month {mon!r}")
    stamp = time.mktime((lt.tm_year, month, int(day), int(hh), int(mm), int(ss), 0, 0, -1))
    if stamp - now > 86400:
        stamp = time.mktime((lt.tm_year - 1, month, int(day), int(hh), int(mm), int(ss), 0, 0, -1))
    return int(stamp * 1_000_000)


def parse(raw: bytes, peer: str = "", now: float | None = None) -> dict[str, Any]:
    """One syslog message as LogEvent fields (without event_id and service); ``BadSyslog`` if it is not one."""
    m = _PRI.match(raw)
    if m is None:
        raise BadSyslog("no <PRI> at the start: not a syslog message")
    pri = int(m.group(1))
    if pri > 191:
        raise BadSyslog(f"PRI {pri} is over 191")
    facility, severity = divmod(pri, 8)
    text = raw[m.end():].decode("utf-8", "replace").rstrip("\r\n\x00")
    now = time.time() if now is None else now
    attrs = {"facility": FACILITIES[facility], "severity": str(severity)}
    if peer:
        attrs["peer"] = peer
    m5 = _5424.match(text)
    if m5 is not None:
        stamp, host, app, procid, msgid, rest = m5.groups()
        sd, message = _structured_data(rest) if rest else ({}, "")
        if stamp == "-":
            ts = int(now * 1_000_000)
        else:
            try:
                ts = int(datetime.fromisoformat(stamp).timestamp() * 1_000_000)
            except ValueError as exc:
                raise BadSyslog(f"RFC 5424 timestamp {stamp[:40]!r} is not RFC 3339") from exc
        attrs.update(format="rfc5424", **({"procid": _nil(procid)} if _nil(procid) else {}),
                     **({"msgid": _nil(msgid)} if _nil(msgid) else {}), **sd)
        return {"ts": ts, "host": _nil(host) or peer, "app": _nil(app), "level": LEVELS[severity],
                "message": message.removeprefix("\ufeff"), "attrs": attrs}
    m3 = _3164.match(text)
    if m3 is not None:
        mon, day, hh, mm, ss, host, tag, pid, message = m3.groups()
        try:
            ts = _ts_3164(mon, day, hh, mm, ss, now)
        except (ValueError, OverflowError):
            m3 = None
        else:
            attrs["format"] = "rfc3164"
            if pid:
                attrs["procid"] = pid
            return {"ts": ts, "host": host, "app": tag, "level": LEVELS[severity], "message": message,
                    "attrs": attrs}
    attrs["format"] = "rfc3164-unparsed"
    return {"ts": int(now * 1_000_000), "host": peer, "app": "", "level": LEVELS[severity], "message": text,
            "attrs": attrs}


class _Tcp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    listener: SyslogInput


class _TcpHandler(socketserver.StreamRequestHandler):
    server: _Tcp

    def handle(self) -> None:
        self.server.listener.serve_connection(self.connection, self.rfile, self.client_address[0])


class SyslogInput(Component):
    """Listens on UDP and TCP; ``udp_address``/``tcp_address`` are where, once started."""

    name = "syslog"

    def __init__(self, cfg: AgentSettings) -> None:
        super().__init__()
        self.cfg = cfg
        self.settings: SyslogConfig = cfg.agents.syslog
        self.service = self.settings.service or cfg.agents.service
        self.redactor = redactor_of(self.settings.redact)
        self.publisher = AckedPublisher(cfg.kafka, "syslog", self.settings.ack_timeout_s, self.redactor)
        self.counters = InputCounters()
        self._queue: queue.Queue[tuple[bytes, str, str, str | None]] = queue.Queue(self.settings.queue_max_messages)
        self._udp: socket.socket | None = None
        self._tcp: _Tcp | None = None
        self._threads: list[threading.Thread] = []
        self._connections = 0
        self._conn_lock = threading.Lock()
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None

    def start(self) -> None:
        s = self.settings
        if s.udp_port is not None and self._udp is None:
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._udp.bind((s.host, s.udp_port))
            self._udp.settimeout(0.5)
            self.udp_address = self._udp.getsockname()
        if s.tcp_port is not None and self._tcp is None:
            self._tcp = _Tcp((s.host, s.tcp_port), _TcpHandler)
            self._tcp.listener = self
            self.tcp_address = self._tcp.server_address  # type: ignore[assignment]
        log.info("Syslog listening.", extra={"udp": self.udp_address, "tcp": self.tcp_address})

    # -- receiving --------------------------------------------------------------------------------------

    def _udp_loop(self) -> None:
        assert self._udp is not None
        size = self.settings.max_message_bytes
        while not self.stopping:
            try:
                data, addr = self._udp.recvfrom(size + 1)
            except TimeoutError:
                continue
            except OSError:
                if self.stopping:
                    return
                raise
            self.counters.add("udp_received")
            try:
                self._queue.put_nowait((data, addr[0], "udp", None))
            except queue.Full:
                self.counters.add("udp_dropped")  # UDP is at most once: no way to push back

    def serve_connection(self, conn: socket.socket, rfile: Any, peer: str) -> None:
        """One TCP connection: frames until EOF, idle timeout or stop; a full queue blocks reading."""
        with self._conn_lock:
            if self._connections >= self.settings.max_connections:
                self.counters.add("tcp_refused")
                return
            self._connections += 1
        conn.settimeout(self.settings.idle_timeout_s)
        limit = self.settings.max_message_bytes
        try:
            while not self.stopping:
                first = rfile.peek(1)[:1]
                if not first:
                    return
                if first.isdigit():  # RFC 6587 3.4.1 octet counting: "LEN SP MSG"
                    head = b""
                    while len(head) <= _MAX_FRAME_DIGITS and (c := rfile.read(1)) and c != b" ":
                        head += c
                    if not head.isdigit() or len(head) > _MAX_FRAME_DIGITS:
                        self._garbage(head + rfile.read1(256), peer, "tcp",
                                      "octet-counted frame length is not 'DIGITS SP'")
                        return  # the stream cannot be resynchronised
                    n = int(head)
                    keep = min(n, limit + 1)  # one byte over the limit tells to_records to mark it truncated
                    frame = rfile.read(keep)
                    if len(frame) < keep:
                        return
                    if n > keep:
                        self._skip(rfile, n - keep)
                else:  # RFC 6587 3.4.2 non-transparent framing: one message per line
                    frame = rfile.readline(limit + 1)
                    if not frame:
                        return
                    if len(frame) > limit and not frame.endswith(b"\n"):
                        while (more := rfile.readline(limit)) and not more.endswith(b"\n"):
                            pass
                    frame = frame.rstrip(b"\r\n")
                    if not frame:
                        continue
                self.counters.add("tcp_received")
                while not self.stopping:  # backpressure: wait for room instead of dropping
                    try:
                        self._queue.put((frame, peer, "tcp", None), timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except (TimeoutError, ConnectionError, OSError):
            return
        finally:
            with self._conn_lock:
                self._connections -= 1

    @staticmethod
    def _skip(rfile: Any, n: int) -> None:
        while n > 0:
            chunk = rfile.read(min(n, 65536))
            if not chunk:
                return
            n -= len(chunk)

    def _garbage(self, raw: bytes, peer: str, transport: str, reason: str) -> None:
        """Dead-letters input that is not syslog (queued like a message, so it is acknowledged in order)."""
        self._queue.put((raw, peer, transport, reason))

    # -- publishing ---------------------------------------------------------------------------------------

    def to_records(self, items: list[tuple[bytes, str, str, str | None]]) -> list[Record]:
        pub = self.publisher
        topic = self.cfg.kafka.topics.logs
        out: list[Record] = []
        events: dict[str, list[dict[str, Any]]] = {}
        now = time.time()
        limit = self.settings.max_message_bytes
        redact = self.redactor.record if self.redactor is not None else None
        for raw, peer, transport, refused in items:
            source = f"syslog:{transport}"
            if refused is not None:
                self.counters.add("bad_messages")
                out.append(pub.dead(source, raw, refused))
                continue
            truncated = len(raw) > limit
            try:
                fields = parse(raw[:limit], peer, now)
            except BadSyslog as exc:
                self.counters.add("bad_messages")
                out.append(pub.dead(source, raw, str(exc)))
                continue
            attrs = fields["attrs"]
            attrs["transport"] = transport
            if truncated:
                attrs["truncated"] = "true"
                self.counters.add("truncated")
            app = fields["app"]
            service = app if (self.settings.service_from == "app_name" and app) else self.service
            event = {"event_id": new_event_id(), "ts": fields["ts"] or now_us(), "service": service[:256],
                     "host": fields["host"][:256], "level": fields["level"], "logger": app[:256],
                     "message": fields["message"], "trace_id": None, "attrs": attrs}
            if redact is not None:
                redact(event)
            events.setdefault(source, []).append(event)
        for source, batch in events.items():
            recs, bad = pub.encode_all(topic, LOG_EVENT, batch, source)
            self.counters.add("bad_messages", bad)
            out.extend(recs)
        return out

    def _publish_loop(self) -> None:
        s = self.settings
        backoff = 0.2
        while True:
            self.mark_progress()
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self.stopping:
                    return
                continue
            items = [first]
            deadline = time.monotonic() + s.batch_wait_s
            while len(items) < s.batch_max:
                left = deadline - time.monotonic()
                try:
                    items.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            records = self.to_records(items)
            while True:  # a batch is retried until Kafka acknowledged it: the queue fills meanwhile
                self.mark_progress()
                try:
                    self.publisher.publish(records)
                    self.counters.add("published", len(items))
                    backoff = 0.2
                    break
                except KafkaError as exc:
                    self.counters.add("publish_failures")
                    log.warning("Syslog batch not acknowledged; retrying.", extra={"error": str(exc)})
                    if self._stop.wait(backoff) and self._queue.empty() and time.monotonic() > deadline + 10:
                        self.counters.add("lost_at_stop", len(items) + self._queue.qsize())
                        log.error("Stopped with syslog messages Kafka never acknowledged.",
                                  extra={"lost": len(items) + self._queue.qsize()})
                        return
                    backoff = min(backoff * 2, 5.0)

    @property
    def stall_after_s(self) -> float:
        return max(self.STALL_AFTER_S, 6 * self.settings.ack_timeout_s)

    def stats_dict(self) -> dict[str, int]:
        """The listener's counters and its replacements per pattern (``redacted_<name>``): the agent's metrics."""
        return input_stats(self.counters, self.redactor)

    def run(self) -> None:
        self.start()
        targets = [self._publish_loop]
        if self._udp is not None:
            targets.append(self._udp_loop)
        if self._tcp is not None:
            targets.append(lambda: self._tcp.serve_forever(poll_interval=0.2))  # type: ignore[union-attr]
        self._threads = [threading.Thread(target=t, name=f"syslog-{i}", daemon=True) for i, t in enumerate(targets)]
        for t in self._threads:
            t.start()
        self._stop.wait()
        if self._tcp is not None:
            self._tcp.shutdown()
        for t in self._threads:
            t.join(15)

    def _release(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.server_close()
        for t in self._threads:
            t.join(15)
        self.publisher.close()


__all__ = ["BadSyslog", "SyslogInput", "parse"]
