"""Peer-supplied text made safe to put in a log line: control and line-breaking characters escaped, length
bounded, so a recipient or a channel id holding CR/LF cannot forge log lines."""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0/C1 controls, DEL, and the Unicode line and paragraph separators some log viewers break lines at.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, limit: int = 200) -> str:
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_escape, text)
