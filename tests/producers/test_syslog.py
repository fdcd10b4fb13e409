"""Syslog listener: logger(1) and a real rsyslogd (omfwd) send RFC 5424 and RFC 3164 over UDP and TCP."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.kafkautil import wait_for
from tests.producers.inpututil import deadletters, events, running, wait_events, with_agents
from tocsin.producers.inputs.syslog import BadSyslog, SyslogInput, parse

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
LOGGER = shutil.which("logger") or "/usr/bin/logger"


def _cfg(cfg, **extra):
    return with_agents(cfg, syslog={"enabled": True, "udp_port": 0, "tcp_port": 0, **extra})


def test_rfc5424_with_structured_data_and_rfc3164():
    e = parse(b'<165>1 2003-10-11T22:14:15.003Z mymachine evntslog - ID47 [ex@32473 iut="3" a="x\\"y"] '
              b"\xef\xbb\xbfhello")
    assert (e["host"], e["app"], e["level"], e["message"]) == ("mymachine", "evntslog", "INFO", "hello")
    assert e["attrs"]["sd.ex@32473.a"] == 'x"y' and e["attrs"]["msgid"] == "ID47"
    assert e["ts"] == 1065910455003000
    e = parse(b"<11>Oct  3 22:14:15 web-1 nginx[42]: upstream timed out", "10.0.0.9")
    assert (e["host"], e["app"], e["level"], e["attrs"]["procid"]) == ("web-1", "nginx", "ERROR", "42")


@pytest.mark.parametrize("raw,reason", [(b"hello", "no <PRI>"), (b"<192>x", "over 191"),
                                        (b"<1>1 - - - - - [x a=b] m", "no quoted value"),
                                        (b"<1>1 yesterday h a - - - m", "RFC 3339")])
def test_garbage_is_refused_with_a_reason(raw, reason):
    with pytest.raises(BadSyslog, match=reason):
        parse(raw)


def _logger(port: int, transport: str, fmt: str, tag: str, message: str, *extra: str) -> None:
    subprocess.run([LOGGER, "--server", "127.0.0.1", "--port", str(port), f"--{transport}", f"--{fmt}",
                    "-t", tag, "-p", "local0.err", *extra, message], check=True, timeout=30)


def test_logger_udp_and_tcp_in_both_formats(tocsin_config):
    cfg = _cfg(tocsin_config)
    with running(SyslogInput(cfg)) as rx:
        udp, tcp = rx.udp_address[1], rx.tcp_address[1]
        _logger(udp, "udp", "rfc5424", "pay", "udp 5424")
        _logger(udp, "udp", "rfc3164", "pay", "udp 3164")
        _logger(tcp, "tcp", "rfc5424", "web", "tcp 5424 octets", "--octet-count")
        _logger(tcp, "tcp", "rfc3164", "web", "tcp 3164 lines")
        _logger(tcp, "tcp", "rfc5424", "web", "tcp 5424 sd", "--sd-id", "req@1", "--sd-param", 'id="7"')
        logs = wait_events(cfg.kafka, cfg.kafka.topics.logs, lambda ev: ev if len(ev) >= 5 else None, "5 messages")
    by = {e["message"]: e for e in logs}
    assert set(by) == {"udp 5424", "udp 3164", "tcp 5424 octets", "tcp 3164 lines", "tcp 5424 sd"}
    assert {by[m]["service"] for m in ("udp 5424", "udp 3164")} == {"pay"}
    assert all(e["level"] == "ERROR" and e["attrs"]["facility"] == "local0" for e in logs)
    assert by["udp 3164"]["attrs"]["format"] == "rfc3164" and by["tcp 5424 octets"]["attrs"]["format"] == "rfc5424"
    assert by["tcp 5424 sd"]["attrs"]["sd.req@1.id"] == "7"
    assert by["udp 5424"]["attrs"]["transport"] == "udp" and by["tcp 3164 lines"]["attrs"]["transport"] == "tcp"


def test_rsyslog_forwards_over_tcp_and_udp(tocsin_config, tmp_path):
    cfg = _cfg(tocsin_config, service_from="fixed", service="shop-sys")
    with running(SyslogInput(cfg)) as rx:
        udp, tcp = rx.udp_address[1], rx.tcp_address[1]
        inport = _free_udp()
        conf = tmp_path / "rsyslog.conf"
        conf.write_text(f"""
global(workDirectory="{tmp_path}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{inport}")
action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp" template="RSYSLOG_SyslogProtocol23Format"
       TCP_Framing="octet-counted")
action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp" template="RSYSLOG_TraditionalForwardFormat")
""")
        proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def send() -> set[str]:
                _logger(inport, "udp", "rfc3164", "nginx", "via rsyslog")
                return {e["attrs"]["format"] for e in events(cfg.kafka, cfg.kafka.topics.logs)
                        if e["message"].strip() == "via rsyslog"}
            # rsyslog needs a moment to open its input: resend until both forwards arrived
            wait_for(lambda: {"rfc5424", "rfc3164"} <= send(), 60, "rsyslog's TCP and UDP forwards")
        finally:
            proc.terminate()
            proc.wait(10)
    logs = [e for e in events(cfg.kafka, cfg.kafka.topics.logs) if e["message"].strip() == "via rsyslog"]
    formats = {e["attrs"]["format"] for e in logs}
    assert {"rfc5424", "rfc3164"} <= formats
    assert all(e["service"] == "shop-sys" and e["logger"] == "nginx" and e["level"] == "ERROR" for e in logs)


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_garbage_oversize_and_bad_frames_are_dead_lettered_or_cut(tocsin_config):
    cfg = _cfg(tocsin_config, max_message_bytes=1024)
    with running(SyslogInput(cfg)) as rx:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"\xff\xfe not syslog at all", rx.udp_address)
        with socket.create_connection(rx.tcp_address) as t:
            t.sendall(b"<13>Oct  3 22:14:15 h app: " + b"x" * 5000 + b"\n<13>Oct  3 22:14:15 h app: after\n")
        with socket.create_connection(rx.tcp_address) as t:
            t.sendall(b"12x <13>broken frame")
        wait_for(lambda: rx.counters.get("bad_messages") >= 2 and rx.counters.get("published") >= 4, 30,
                 "garbage dead-lettered and the rest published")
    logs = {e["message"][:5]: e for e in events(cfg.kafka, cfg.kafka.topics.logs)}
    assert logs["after"]["attrs"]["format"] == "rfc3164"
    assert logs["xxxxx"]["attrs"]["truncated"] == "true" and len(logs["xxxxx"]["message"]) < 1024
    reasons = sorted(h["error"] for _, h in deadletters(cfg.kafka))
    assert any("no <PRI>" in r for r in reasons) and any("octet-counted" in r for r in reasons)
