"""Joins Python tracebacks and Java stack traces to the log line they belong to.

Works on raw lines (bytes, no newline) with their file offsets, so that a
joined record keeps the offset of its first line (its event_id) and the
shipper never checkpoints into the middle of a record. Rules, as Fluent Bit's
built-in ``python`` and ``java`` multiline parsers apply them:

* an indented line (``  File "x.py"``, ``\\tat com.Foo.bar(Foo.java:1)``,
  ``\\t... 5 more``) continues the record;
* ``Traceback (most recent call last):``, ``Caused by:``, ``During handling
  of the above exception...`` and ``The above exception was the direct
  cause...`` continue it;
* inside a Python traceback the first unindented line (``ValueError: x``) is
  the exception line and ends the traceback;
* a Java exception header (``java.lang.IllegalStateException: boom``) and a
  blank line are held back: they join the record when the next line is a
  stack frame or chain marker, and start a new record otherwise.

A record grows to at most ``max_lines`` lines and ``max_bytes`` bytes; past
that it is emitted and the next line starts a new one (counted in ``splits``).
"""

from __future__ import annotations

import re

Record = tuple[bytes, int, int, int]
"""(joined bytes, offset of the first line, offset after the last line, number of lines)."""

_TRACEBACK = b"Traceback (most recent call last):"
_CHAIN_PREFIXES = (
    b"Caused by: ",
    b"During handling of the above exception",
    b"The above exception was the direct cause",
)
_JAVA_HEADER = re.compile(
    rb"^(?:(?:[a-zA-Z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable)"  # java.lang.FooException
    rb"|[A-Z][\w]*(?:Exception|Error))(?::\s|$)"  # bare FooError: msg
)
_STACK_FRAME = re.compile(rb"^\s+(?:at |\.\.\. \d+ (?:more|common frames omitted))")


class MultilineJoiner:
    """Feeds lines in, appends finished records to the ``out`` list given to each call."""

    def __init__(self, max_lines: int = 500, max_bytes: int = 1 << 20) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._head = b""
        self._more: list[bytes] | None = None  # continuation lines, when there are any
        self._start = -1  # offset of the pending record's first line, -1 when none
        self._end = 0
        self._bytes = 0
        self._in_traceback = False
        self._held: list[tuple[bytes, int, int]] = []
        self.splits = 0

    def open_start(self) -> int | None:
        """Offset of the first line not yet emitted (a checkpoint must stay at or before it)."""
        if self._start >= 0:
            return self._start
        return self._held[0][1] if self._held else None

    def feed(self, line: bytes, start: int, end: int, out: list[Record]) -> None:
        if self._start < 0:
            if line:
                self._begin(line, start, end)
            return
        first = line[:1]
        if self._held:
            if _STACK_FRAME.match(line) or line.startswith(_CHAIN_PREFIXES) or line.startswith(_TRACEBACK):
                for held_line, _, held_end in self._held:
                    self._append(held_line, held_end, out)
                self._held.clear()
                self._continue(line, end, out)
                return
            held = self._held
            self._held = []
            self._emit(out)
            for held_line, held_start, held_end in held:
                if held_line.strip():
                    self.feed(held_line, held_start, held_end, out)
            self.feed(line, start, end, out)
            return
        if first in (b" ", b"\t"):
            if line.strip():
                self._append(line, end, out)
            else:
                self._held.append((line, start, end))
            return
        if self._in_traceback and line:
            self._in_traceback = False  # the exception line closes a Python traceback
            self._append(line, end, out)
            return
        if first == b"{":  # the common JSON case: a new record (the _emit/_begin pair, inlined)
            more = self._more
            out.append((self._head if more is None else b"\n".join([self._head, *more]), self._start, self._end,
                        1 if more is None else len(more) + 1))
            self._head, self._more, self._start, self._end, self._bytes = line, None, start, end, len(line)
            return
        if not line:
            self._held.append((line, start, end))
            return
        if line.startswith(_TRACEBACK) or line.startswith(_CHAIN_PREFIXES):
            self._continue(line, end, out)
            return
        if _JAVA_HEADER.match(line):
            self._held.append((line, start, end))
            return
        self._emit(out)
        self._begin(line, start, end)

    def flush(self, out: list[Record]) -> None:
        """Emits what is pending (idle timeout, end of a finished file, shutdown)."""
        held = self._held
        self._held = []
        self._emit(out)
        for line, start, end in held:
            if line.strip():
                self._begin(line, start, end)
                self._emit(out)

    def reset(self) -> None:
        """Forgets everything pending (the shipper rewinds the file to a checkpoint)."""
        self._head = b""
        self._more = None
        self._start = -1
        self._held = []
        self._in_traceback = False
        self._bytes = 0

    def _continue(self, line: bytes, end: int, out: list[Record]) -> None:
        if line.startswith(_TRACEBACK):
            self._in_traceback = True
        self._append(line, end, out)

    def _begin(self, line: bytes, start: int, end: int) -> None:
        self._head = line
        self._more = None
        self._start = start
        self._end = end
        self._bytes = len(line)
        self._in_traceback = line.startswith(_TRACEBACK)

    def _append(self, line: bytes, end: int, out: list[Record]) -> None:
        more = self._more
        lines = 1 if more is None else len(more) + 1
        if lines >= self.max_lines or self._bytes + len(line) + 1 > self.max_bytes:
            self.splits += 1
            in_tb = self._in_traceback
            start = self._end
            self._emit(out)
            self._begin(line, start, end)
            self._in_traceback = in_tb
            return
        if more is None:
            self._more = [line]
        else:
            more.append(line)
        self._end = end
        self._bytes += len(line) + 1

    def _emit(self, out: list[Record]) -> None:
        if self._start < 0:
            return
        more = self._more
        if more is None:
            out.append((self._head, self._start, self._end, 1))
        else:
            out.append((b"\n".join([self._head, *more]), self._start, self._end, len(more) + 1))
        self._head = b""
        self._more = None
        self._start = -1
        self._in_traceback = False


class PatternJoiner:
    """Joins lines by the site's own rules: a ``start`` pattern begins a record, or a ``continuation`` one
    continues the previous line (Vector's ``halt_before`` and ``continue_through`` modes, one pattern each).

    Patterns are RE2 (linear time) and match at the start of the line. Same interface, limits and
    ``splits`` counter as ``MultilineJoiner``.
    """

    def __init__(self, start: str | None = None, continuation: str | None = None, max_lines: int = 500,
                 max_bytes: int = 1 << 20) -> None:
        import re2

        if (start is None) == (continuation is None):
            raise ValueError("give exactly one of start and continuation")
        self._start_re = re2.compile(start.encode()) if start is not None else None
        self._cont_re = re2.compile(continuation.encode()) if continuation is not None else None
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._first = -1
        self._end = 0
        self._bytes = 0
        self.splits = 0

    def open_start(self) -> int | None:
        return self._first if self._first >= 0 else None

    def feed(self, line: bytes, start: int, end: int, out: list[Record]) -> None:
        if self._first < 0:
            if line:
                self._begin(line, start, end)
            return
        if self._start_re is not None:
            begins = self._start_re.match(line) is not None
        else:
            begins = self._cont_re.match(line) is None  # type: ignore[union-attr]
        if begins:
            self._emit(out)
            if line:
                self._begin(line, start, end)
            return
        if len(self._lines) >= self.max_lines or self._bytes + len(line) + 1 > self.max_bytes:
            self.splits += 1
            self._emit(out)
            self._begin(line, start, end)
            return
        self._lines.append(line)
        self._end = end
        self._bytes += len(line) + 1

    def flush(self, out: list[Record]) -> None:
        self._emit(out)

    def reset(self) -> None:
        self._lines = []
        self._first = -1
        self._bytes = 0

    def _begin(self, line: bytes, start: int, end: int) -> None:
        self._lines = [line]
        self._first = start
        self._end = end
        self._bytes = len(line)

    def _emit(self, out: list[Record]) -> None:
        if self._first < 0:
            return
        lines = self._lines
        out.append((lines[0] if len(lines) == 1 else b"\n".join(lines), self._first, self._end, len(lines)))
        self._lines = []
        self._first = -1
