"""Log output for the daemon: readable lines for a terminal, or one JSON object per line for journald and
log shippers (`--log-format json`); and `printable`, the one rule for showing text from outside (a log line,
the CLI's tables) on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["configure_logging", "printable"]

# Characters that would let text from a peer or a user forge a log line or drive the operator's terminal: C0
# and C1 controls (CR, LF, ESC, CSI), DEL, the Unicode line separators and the bidirectional overrides that
# make a terminal show text in another order than it is. Shown as Python escapes instead.
_UNPRINTABLE = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0))}
_UNPRINTABLE.update({code: f"\\u{code:04x}" for code in (0x2028, 0x2029, *range(0x202a, 0x202f),
                                                           *range(0x2066, 0x206a))})
_UNPRINTABLE.update({0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"})


def printable(text: str) -> str:
    """`text` on one line, every character that could act on a terminal or a log reader escaped."""
    return text.translate(_UNPRINTABLE)


class TextFormatter(logging.Formatter):
    """One log record, one line: the message is escaped (its arguments may come from anyone); a traceback
    follows on lines of its own, as Python writes it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": printable(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
