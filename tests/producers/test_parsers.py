"""Parsers and multiline joining against real-format samples (no broker)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.core.errors import ConfigError
from tocsin.producers.avrofast import LogEventEncoder
from tocsin.producers.multiline import MultilineJoiner
from tocsin.producers.parsers import JsonParser, NginxParser, RegexParser, TextParser, make_parser
from tocsin.producers.routes import OTHER, RouteLimiter, template_of
from tocsin.producers.timeparse import parse_any, parse_clf, parse_iso
from tocsin.schemas.codec import default_codec

# --- real-format samples -------------------------------------------------------

NGINX_COMBINED = (
    '203.0.113.7 - - [10/Oct/2023:13:55:36 +0000] "GET /api/orders/12345?expand=items HTTP/1.1" 200 2326 '
    '"https://shop.example/cart" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"'
)
NGINX_WITH_TIME = (
    '198.51.100.2 - alice [10/Oct/2023:13:55:37 +0200] "POST /api/checkout HTTP/2.0" 502 157 "-" '
    '"curl/8.4.0" 1.234'
)
NGINX_KEYED_TIME = (
    '198.51.100.3 - - [10/Oct/2023:13:55:38 +0000] "GET /static/app.js HTTP/1.1" 404 0 "-" "-" '
    'rt=0.002 uct="0.000" uht="0.001" urt="0.001"'
)
APACHE_MICROS = (
    '192.0.2.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
    '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)" 5123'
)
APACHE_COMMON = '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /index.html HTTP/1.0" 200 2326'

PYTHON_TRACEBACK = """\
2024-03-01 12:00:00,123 ERROR shop.checkout: payment failed
Traceback (most recent call last):
  File "/srv/shop/checkout.py", line 42, in pay
    gateway.charge(order)
  File "/srv/shop/gateway.py", line 7, in charge
    raise ConnectionError("gateway down")
ConnectionError: gateway down

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/shop/checkout.py", line 44, in pay
    raise PaymentError(order.id) from None
shop.errors.PaymentError: 1234
2024-03-01 12:00:01,000 INFO shop.checkout: next request"""

JAVA_STACK = """\
2024-03-01 12:00:00.123 ERROR 4242 --- [nio-8080-exec-1] c.e.shop.OrderController : order failed
java.lang.IllegalStateException: order 12 has no items
\tat com.example.shop.OrderService.place(OrderService.java:88)
\tat com.example.shop.OrderController.create(OrderController.java:41)
\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)
Caused by: java.lang.NullPointerException: Cannot invoke "List.size()" because "items" is null
\tat com.example.shop.Order.count(Order.java:12)
\t... 3 more
2024-03-01 12:00:00.200 INFO 4242 --- [nio-8080-exec-2] c.e.shop.OrderController : ok"""

STRUCTLOG_JSON = json.dumps({"event": "user logged in", "user_id": 42, "level": "info", "logger": "shop.auth",
                             "timestamp": "2024-03-01T12:00:00.123456Z", "trace_id": "4bf92f3577b34da6",
                             "roles": ["admin", "ops"]})
PYTHON_JSON_LOGGER = json.dumps({"asctime": "2024-03-01 12:00:00,456", "name": "shop.db", "levelname": "WARNING",
                                 "message": "slow query", "duration_ms": 812.5, "exc_info": None})


def _join(text: str, max_lines: int = 500) -> list[tuple[bytes, int, int, int]]:
    joiner = MultilineJoiner(max_lines=max_lines)
    out: list[tuple[bytes, int, int, int]] = []
    off = 0
    for line in text.encode().split(b"\n"):
        joiner.feed(line, off, off + len(line) + 1, out)
        off += len(line) + 1
    joiner.flush(out)
    return out


def test_nginx_combined_line_parses_request_status_and_route():
    p = NginxParser()
    rec = p.parse(NGINX_COMBINED.encode())
    assert rec["level"] == "INFO" and rec["logger"] == "access"
    assert rec["ts"] == parse_clf("10/Oct/2023:13:55:36 +0000")
    a = rec["attrs"]
    assert (a["method"], a["path"], a["route"], a["status"], a["bytes"]) == (
        "GET", "/api/orders/12345", "/api/orders/{id}", "200", "2326")
    assert a["user_agent"].startswith("Mozilla/5.0") and a["referer"] == "https://shop.example/cart"
    assert "duration_ms" not in a and p.metrics(rec) == []
    assert p.unparsed == 0


def test_nginx_5xx_is_an_error_and_request_time_yields_api_response_time_metric():
    p = NginxParser()
    rec = p.parse(NGINX_WITH_TIME.encode())
    assert rec["level"] == "ERROR"
    assert rec["attrs"]["remote_user"] == "alice"
    assert rec["ts"] == parse_iso("2023-10-10T11:55:37Z")  # +0200 zone applied
    assert p.metrics(rec) == [("api_response_time", 1234.0, "ms",
                               {"route": "/api/checkout", "method": "POST", "status": "502"})]


def test_nginx_keyed_request_time_and_apache_microseconds():
    p = NginxParser()
    rec = p.parse(NGINX_KEYED_TIME.encode())
    assert rec["level"] == "WARNING" and float(rec["attrs"]["duration_ms"]) == pytest.approx(2.0)
    apache = p.parse(APACHE_MICROS.encode())
    assert float(apache["attrs"]["duration_ms"]) == pytest.approx(5.123)
    common = p.parse(APACHE_COMMON.encode())  # common log format, no referer/agent
    assert common["attrs"]["status"] == "200" and "user_agent" not in common["attrs"]


def test_nginx_garbage_is_shipped_raw_and_counted():
    p = NginxParser()
    rec = p.parse(b"\x16\x03\x01\x02\x00 not an access log")
    assert rec["message"].endswith("not an access log") and "parse_error" in rec["attrs"]
    assert p.unparsed == 1


def test_structlog_json_maps_event_level_logger_timestamp_trace():
    rec = JsonParser().parse(STRUCTLOG_JSON.encode())
    assert rec["message"] == "user logged in" and rec["level"] == "INFO" and rec["logger"] == "shop.auth"
    assert rec["ts"] == parse_iso("2024-03-01T12:00:00.123456Z")
    assert rec["trace_id"] == "4bf92f3577b34da6"
    assert rec["attrs"] == {"user_id": "42", "roles": '["admin","ops"]'}


def test_python_json_logger_asctime_with_comma_millis():
    rec = JsonParser().parse(PYTHON_JSON_LOGGER.encode())
    assert rec["level"] == "WARNING" and rec["logger"] == "shop.db" and rec["message"] == "slow query"
    assert rec["ts"] == parse_iso("2024-03-01T12:00:00.456Z")
    assert rec["attrs"] == {"duration_ms": "812.5", "exc_info": ""}


def test_our_own_logging_format_round_trips(tmp_path):
    from tocsin.producers.logging import configure_logging

    setup = configure_logging("shop", log_dir=tmp_path)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("shop.orders").exception("order failed", extra={"order_id": 7, "trace_id": "t-1"})
    finally:
        setup.close()
    line = (tmp_path / "application.log").read_bytes().splitlines()[-1]
    rec = JsonParser().parse(line)
    assert (rec["level"], rec["logger"], rec["message"], rec["trace_id"]) == (
        "ERROR", "shop.orders", "order failed", "t-1")
    assert rec["attrs"]["order_id"] == "7" and "ValueError: boom" in rec["attrs"]["exception"]
    assert rec["attrs"]["service"] == "shop"


def test_invalid_json_and_invalid_utf8_are_shipped_and_counted():
    p = JsonParser()
    bad = p.parse(b'{"message": "cut in the mid')
    assert bad["message"] == '{"message": "cut in the mid' and bad["attrs"]["parse_error"]
    latin1 = p.parse('{"message": "caf\xe9"}'.encode("latin-1"))
    assert latin1["message"] == "caf\ufffd"
    not_object = p.parse(b"[1, 2]")
    assert not_object["attrs"]["parse_error"] == "not a JSON object"
    assert (p.unparsed, p.invalid_utf8) == (2, 1)


def test_python_traceback_joins_its_log_line_including_chained_exceptions():
    records = _join(PYTHON_TRACEBACK)
    assert len(records) == 2
    data, start, _end, nlines = records[0]
    text = data.decode()
    assert start == 0 and nlines == 14
    assert text.startswith("2024-03-01 12:00:00,123 ERROR") and text.endswith("shop.errors.PaymentError: 1234")
    rec = TextParser().parse(data)
    assert rec["level"] == "ERROR" and rec["ts"] == parse_iso("2024-03-01T12:00:00.123Z")
    assert records[1][0].decode().endswith("next request")
    assert records[1][1] == len(text) + 1  # the next record's offset is where its line starts


def test_java_stack_trace_joins_exception_header_and_caused_by():
    records = _join(JAVA_STACK)
    assert len(records) == 2
    first = records[0][0].decode()
    assert "java.lang.IllegalStateException" in first and "Caused by:" in first and first.endswith("... 3 more")
    assert records[0][3] == 8


def test_exception_header_without_frames_starts_its_own_record():
    records = _join("first line\nValueError: not a trace\nthird line")
    assert [r[0] for r in records] == [b"first line", b"ValueError: not a trace", b"third line"]


def test_multiline_record_is_cut_at_max_lines():
    joiner_records = _join("head\n" + "\n".join(f"  frame {i}" for i in range(10)), max_lines=4)
    assert [r[3] for r in joiner_records] == [4, 4, 3]


def test_json_line_followed_by_raw_traceback_appends_it_to_the_message():
    text = STRUCTLOG_JSON + "\nTraceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'k'"
    records = _join(text)
    assert len(records) == 1
    rec = JsonParser().parse(records[0][0])
    assert rec["message"].startswith("user logged in\nTraceback") and rec["message"].endswith("KeyError: 'k'")


def test_regex_parser_named_groups():
    p = make_parser(r"regex:^(?P<ts>\S+ \S+) \[(?P<level>\w+)\] (?P<logger>[\w.]+): (?P<message>.*)$")
    assert isinstance(p, RegexParser)
    rec = p.parse(b"2024-03-01 12:00:00,001 [warn] shop.cache: miss ratio 0.4 user=9")
    assert (rec["level"], rec["logger"], rec["message"]) == ("WARNING", "shop.cache", "miss ratio 0.4 user=9")
    assert rec["ts"] == parse_iso("2024-03-01T12:00:00.001Z")
    miss = p.parse(b"free text ERROR")
    assert miss["attrs"]["parse_error"] and miss["level"] == "ERROR" and p.unparsed == 1


def test_bad_parser_specs_are_config_errors():
    with pytest.raises(ConfigError):
        make_parser("regex:(unclosed")
    with pytest.raises(ConfigError):
        make_parser("regex:no groups")
    with pytest.raises(ConfigError):
        make_parser("xml")


def test_timestamps():
    assert parse_iso("1970-01-01T00:00:01Z") == 1_000_000
    assert parse_iso("2024-02-30T00:00:00Z") is None
    assert parse_any(1_700_000_000) == 1_700_000_000_000_000
    assert parse_any(1_700_000_000_123) == 1_700_000_000_123_000
    assert parse_any("not a time") is None and parse_any(True) is None


def test_route_templates_and_limit():
    assert template_of("/api/orders/12345/items?x=1") == "/api/orders/{id}/items"
    assert template_of("/u/550e8400-e29b-41d4-a716-446655440000") == "/u/{uuid}"
    assert template_of("/blob/3f2a9c0d1e4b5a6f7c8d") == "/blob/{hex}"
    limiter = RouteLimiter(max_routes=2)
    assert limiter("/a/1") == "/a/{id}" and limiter("/b") == "/b"
    assert limiter("/c") == OTHER and limiter("/a/2") == "/a/{id}" and limiter.overflowed == 1


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(event_id=_text, ts=st.integers(-(2**63), 2**63 - 1), level=st.sampled_from(["INFO", "ERROR", "X"]),
       logger=_text, message=st.text(max_size=3000),
       trace=st.none() | _text, attrs=st.dictionaries(_text, _text, max_size=20))
def test_fast_log_event_encoder_matches_the_codec_byte_for_byte(event_id, ts, level, logger, message, trace, attrs):
    message = message.encode("utf-8", "replace").decode("utf-8")
    rec = {"event_id": event_id, "ts": ts, "service": "shop", "host": "h-1", "level": level, "logger": logger,
           "message": message, "trace_id": trace, "attrs": attrs}
    codec = default_codec()
    assert LogEventEncoder("shop", "h-1")(rec) == codec.encode("LogEvent", rec)
    assert codec.decode(LogEventEncoder("shop", "h-1")(rec))[1]["message"] == message
