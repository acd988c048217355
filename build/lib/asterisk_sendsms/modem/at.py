"""The AT conversation without I/O: command lines out; bytes in, events out (a command's final result with its
lines, the `> ` prompt of AT+CMGS, unsolicited result codes with their PDU line), with or without echo."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AtParser", "Prompt", "Response", "Unsolicited", "cms_code"]

CTRL_Z = b"\x1a"
MAX_BUFFER = 64 * 1024
FINAL_OK = ("OK",)
FINAL_ERRORS = ("ERROR", "+CME ERROR:", "+CMS ERROR:", "NO CARRIER")
# Unsolicited codes; those in WITH_PDU are followed by a PDU line.
UNSOLICITED = ("+CDS:", "+CDSI:", "+CMTI:", "+CMT:", "RING", "+CLIP:", "^RSSI:", "^BOOT:")
WITH_PDU = ("+CDS:", "+CMT:")  # in text mode +CDS carries its fields on its own line


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
    _buffer: bytearray = field(default_factory=bytearray)
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
        self._buffer += data
        if len(self._buffer) > MAX_BUFFER:
            del self._buffer[:-MAX_BUFFER]  # a modem babbling without line ends: keep only the tail
        events: list[Event] = []
        while True:
            if self.pending is not None and self.pending.startswith("AT+CMGS=") \
                    and self._buffer.lstrip(b"\r\n").startswith(b"> "):
                del self._buffer[:self._buffer.index(b"> ") + 2]
                events.append(Prompt())
                continue
            cut = min((i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0), default=-1)
            if cut < 0:
                return events
            line = self._buffer[:cut].decode("latin-1").strip()
            del self._buffer[:cut + 1]
            if line:
                event = self._line(line)
                if event is not None:
                    events.append(event)

    def _line(self, line: str) -> Event | None:
        if self._awaiting_pdu is not None:
            code, self._awaiting_pdu = self._awaiting_pdu, None
            return Unsolicited(code.split(":", 1)[0] + ":", code, line)
        if self.pending is not None and line == self.pending:
            return None  # the echo of our own command
        for code in UNSOLICITED:
            if line.startswith(code):
                if code == "+CMT:" or (code in WITH_PDU and not self.text_mode):
                    self._awaiting_pdu = line
                    return None
                return Unsolicited(code, line)
        if self.pending is None:
            return None  # noise between commands (a late answer, a banner)
        if line in FINAL_OK or line.startswith(FINAL_ERRORS):
            response = Response(self.pending, line in FINAL_OK, line, tuple(self._lines))
            self.pending, self._lines = None, []
            return response
        self._lines.append(line)
        return None
