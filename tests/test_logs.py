"""Text from outside reaches a log line or the operator's terminal only escaped: one record stays one line,
and no control sequence, line separator or bidirectional override passes through."""

from __future__ import annotations

import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from asterisk_sendsms.ops.logs import JsonFormatter, TextFormatter, printable

FORGED = "Foo\r\n2026-12-03 08:00:00 INFO asterisk_sendsms: admin logged in\x1b[2J\x9b31m\u2028\u202e"


def _record(*args: object) -> logging.LogRecord:
    return logging.LogRecord("asterisk_sendsms.edge.http.api", logging.INFO, __file__, 1, "unknown command %r: %s",
                             args, None)


def test_a_forged_log_line_stays_inside_its_record() -> None:
    line = TextFormatter("%(levelname)s %(name)s: %(message)s").format(_record(FORGED, FORGED))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x9b" not in line
    assert "\u2028" not in line and "\u202e" not in line
    assert line.startswith("INFO asterisk_sendsms.edge.http.api: unknown command ")
    assert "\\r\\n2026-12-03" in line and "\\x1b[2J" in line


def test_json_lines_are_escaped_too() -> None:
    line = JsonFormatter().format(_record(FORGED, "x"))
    assert "\n" not in line and "\x9b" not in line and "\u2028" not in line
    assert "\\x1b[2J" in json.loads(line)["message"]


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", ("a\nb",), sys.exc_info())
    text = TextFormatter("%(message)s").format(record)
    assert text.startswith("failed: a\\nb\nTraceback")


@given(st.text())
def test_printable_is_one_line_of_harmless_characters(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                   "\u2066\u2067\u2068\u2069" for c in shown)
    if all(0x20 <= ord(c) < 0x7f and c != "\\" for c in text):
        assert shown == text
