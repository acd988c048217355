"""The AT conversation without I/O: command lines out; bytes in, events out (a command's final result with its
lines, the `> ` prompt of AT+CMGS, unsolicited result codes with their PDU line), with or without echo. The
receive buffer is scanned once (each byte looked at once however it is cut), and what a modem may babble is
bounded: a line longer than MAX_BUFFER is dropped whole, a response keeps at most MAX_LINES lines; what is
dropped is counted in `discarded`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["AtParser", "Prompt", "Response", "Unsolicited", "cms_code"]

CTRL_Z = b"\x1a"
ESC = b"\x1b"  # ends the wait for a PDU after the prompt, sending nothing
MAX_BUFFER = 8 * 1024  # far longer than any line a modem sends us (a PDU is 352 hex digits at most)
MAX_LINES = 64  # lines of one command's response (AT+CMGR: two)
FINAL_OK = ("OK",)
FINAL_ERRORS = ("ERROR", "+CME ERROR:", "+CMS ERROR:", "NO CARRIER")
# Unsolicited codes; those in WITH_PDU are followed by a PDU line.
UNSOLICITED = ("+CDS:", "+CDSI:", "+CMTI:", "+CMT:", "RING", "+CLIP:", "^RSSI:", "^BOOT:")
WITH_PDU = ("+CDS:", "+CMT:")  # in text mode +CDS carries its fields on its own line
_CONTENT = re.compile(rb"[^\r\n]")
# Lines that are never the PDU a +CMT/+CDS announces.
_RESULT = re.compile("|".join(re.escape(code) for code in (*FINAL_OK, *FINAL_ERRORS, *UNSOLICITED, "+CMGS:")))


@dataclass(frozen=True, slots=True)
class Response:
    command: str
    ok: bool
    final: str  # OK, ERROR, +CME ERROR: n, +CMS ERROR: n
    lines: tuple[str, ...] = ()

    def value(self, prefix: str) -> str | None:
        """The text after `prefix` in the first line that has it (e.g. "+CMGS:")."""
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None


@dataclass(frozen=True, slots=True)
class Prompt:
    """The modem waits for the PDU (after AT+CMGS=n)."""


@dataclass(frozen=True, slots=True)
class Unsolicited:
    code: str  # e.g. "+CDS:"
    line: str
    pdu: str | None = None


Event = Response | Prompt | Unsolicited


def cms_code(final: str) -> int | None:
    for prefix in ("+CMS ERROR:", "+CME ERROR:"):
        if final.startswith(prefix):
            try:
                return int(final[len(prefix):].strip())
            except ValueError:
                return None
    return None


@dataclass
class AtParser:
    pending: str | None = None  # the command line awaiting its final result
    text_mode: bool = False  # AT+CMGF=1: +CDS is one line; +CMT is followed by the text
    discarded: int = 0  # lines dropped: too long, or too many for one response
    _buffer: bytearray = field(default_factory=bytearray)
    _scanned: int = 0  # how much of the buffer's partial line has been searched for its end already
    _dropping: bool = False  # within a line too long to keep: dropped up to its end
    _lines: list[str] = field(default_factory=list)
    _awaiting_pdu: str | None = None  # the unsolicited line whose PDU comes next

    def command(self, command: str) -> bytes:
        if self.pending is not None:
            raise RuntimeError(f"{command} sent while {self.pending} is unanswered")
        self.pending = command
        self._lines = []
        return command.encode("ascii") + b"\r"

    def abandon(self) -> None:
        """The command timed out: forget it (its late answer is dropped)."""
        self.pending = None
        self._lines = []

    def feed(self, data: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        while True:
            if not self._scanned:
                content = _CONTENT.search(buffer)  # line ends between lines go all at once
                if content is None:
                    buffer.clear()
                    return events
                if content.start():
                    del buffer[:content.start()]
            if self.pending is not None and self.pending.startswith("AT+CMGS=") and buffer.startswith(b"> ") \
                    and not self._dropping:
                del buffer[:2]
                self._scanned = 0
                events.append(Prompt())
                continue
            # memchr twice, the second only up to the first's find: each octet looked at once.
            cr = buffer.find(b"\r", self._scanned)
            lf = buffer.find(b"\n", self._scanned, cr if cr >= 0 else len(buffer))
            cut = lf if lf >= 0 else cr
            if cut < 0:
                self._scanned = len(buffer)
                if len(buffer) > MAX_BUFFER:
                    buffer.clear()
                    self._scanned = 0
                    if not self._dropping:
                        self._dropping = True
                        self.discarded += 1
                return events
            line = buffer[:cut].decode("latin-1").strip()
            del buffer[:cut + 1]
            self._scanned = 0
            if self._dropping:
                self._dropping = False  # the end of the line too long to keep
                continue
            if line:
                events.extend(self._line(line))

    def _line(self, line: str) -> list[Event]:
        if self._awaiting_pdu is not None:
            code, self._awaiting_pdu = self._awaiting_pdu, None
            if not _RESULT.match(line):
                return [Unsolicited(code.split(":", 1)[0] + ":", code, line)]
            # No PDU after all but a result or another code: it is read for what it is, not swallowed.
            return [Unsolicited(code.split(":", 1)[0] + ":", code), *self._line(line)]
        if self.pending is not None and line == self.pending:
            return []  # the echo of our own command
        for code in UNSOLICITED:
            if line.startswith(code):
                if code == "+CMT:" or (code in WITH_PDU and not self.text_mode):
                    self._awaiting_pdu = line
                    return []
                return [Unsolicited(code, line)]
        if self.pending is None:
            return []  # noise between commands (a late answer, a banner)
        if line in FINAL_OK or line.startswith(FINAL_ERRORS):
            response = Response(self.pending, line in FINAL_OK, line, tuple(self._lines))
            self.pending, self._lines = None, []
            return [response]
        if len(self._lines) < MAX_LINES:
            self._lines.append(line)
        else:
            self.discarded += 1
        return []
