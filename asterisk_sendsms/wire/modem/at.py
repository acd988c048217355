"""The AT conversation without I/O: command lines out; bytes in, events out (a command's final result with its
lines, the `>` prompt of AT+CMGS with or without its space, unsolicited result codes with their PDU line), with
or without echo; and the initialisation, the commands a modem is set up with and what its answers decide. The
receive buffer is scanned once (each byte looked at once however it is cut), and what a modem may babble is
bounded: a line longer than MAX_BUFFER is dropped whole, a response keeps at most MAX_LINES lines; what is
dropped is counted in `discarded`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["AtParser", "InitRefused", "Initialisation", "Prompt", "Response", "Unsolicited", "cms_code", "explain"]

CTRL_Z = b"\x1a"
ESC = b"\x1b"  # ends the wait for a PDU after the prompt, sending nothing
MAX_BUFFER = 8 * 1024  # far longer than any line a modem sends us (a PDU is 352 hex digits at most)
MAX_LINES = 64  # lines of one command's response (AT+CMGR: two)
FINAL_OK = ("OK",)
FINAL_ERRORS = ("ERROR", "+CME ERROR:", "+CMS ERROR:", "NO CARRIER")
# What the common +CME/+CMS ERROR codes mean, for the log (3GPP 27.007 9.2, 27.005 3.2.5).
ERROR_TEXT = {
    10: "SIM not inserted", 11: "SIM PIN required", 12: "SIM PUK required", 13: "SIM failure",
    16: "incorrect password", 30: "no network service", 300: "ME failure", 302: "operation not allowed",
    304: "invalid PDU mode parameter", 310: "SIM not inserted", 311: "SIM PIN required", 313: "SIM failure",
    330: "SMSC address unknown", 331: "no network service", 332: "network timeout", 500: "unknown error",
}
# Unsolicited codes; those in WITH_PDU are followed by a PDU line.
UNSOLICITED = ("+CDS:", "+CDSI:", "+CMTI:", "+CMT:", "RING", "+CLIP:", "^RSSI:", "^BOOT:")
WITH_PDU = ("+CDS:", "+CMT:")  # in text mode +CDS carries its fields on its own line
# Spaces before a line are nothing (its text is stripped): the one some modems send after the prompt's `>` may
# come after the prompt was taken.
_CONTENT = re.compile(rb"[^\r\n ]")
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


def explain(final: str) -> str:
    code = cms_code(final)
    return f"{final} ({ERROR_TEXT[code]})" if code in ERROR_TEXT else final


class InitRefused(Exception):
    """The modem refused what it must accept, or its SIM is not ready: the session cannot go on."""


# The initialisation's steps in order; a step that does not apply (no SMSC configured, no status reports
# wanted, PDU mode) passes to the next.
_STEPS = ("echo", "errors", "sim", "pin", "pdu", "text", "charset", "smsc", "reports", "no_reports",
          "text_params", "done")
# step -> (the step after OK, the step after a refusal: None, the refusal ends the session)
_FLOW: dict[str, tuple[str, str | None]] = {
    "echo": ("errors", None),
    "errors": ("sim", "sim"),  # extended error codes only make refusals clearer in the log
    "sim": ("pdu", None),  # "pin" when the SIM asks for one
    "pin": ("pdu", None),
    "pdu": ("smsc", "text"),  # a modem without PDU mode sends one-part GSM texts in text mode
    "text": ("charset", None),
    "charset": ("smsc", "smsc"),  # GSM is the usual text-mode character set anyway
    "smsc": ("reports", None),
    "reports": ("text_params", "no_reports"),  # a modem that routes no status reports gives none
    "no_reports": ("text_params", None),
    "text_params": ("done", None),
}
# What a refusal of an optional step means (logged once).
_OPTIONAL = {"errors": "its refusals will not say why", "charset": "text mode keeps its own character set"}
# AT+CNMI=<mode>,<mt>,<bm>,<ds>,<bfr>: new SMS stored and announced (+CMTI); ds=1 routes status reports straight
# to us (+CDS).
CNMI_REPORTS = "AT+CNMI=2,1,0,1,0"
CNMI_NO_REPORTS = "AT+CNMI=2,1,0,0,0"
# AT+CSMP's first octet in text mode: SMS-SUBMIT with a relative validity period (0x11), and TP-SRR (0x20).
SUBMIT_FIRST_OCTET = 0x11
STATUS_REPORT_REQUEST = 0x20


@dataclass
class Initialisation:
    """What sets a modem up once it answers `AT`, without I/O: `start()` gives the first command, `answer()`
    takes the modem's answer to the last one and gives the next (None: done) or raises InitRefused. What it
    found out is left in `text_mode`, `receipts` and `notes`."""

    pin: str | None = None
    smsc: str | None = None
    receipts: bool = True  # asked for; False once the modem turns out to route no status reports
    text_mode: bool = False
    reportless: bool = False  # status reports wanted, but the modem refused to route them
    notes: list[str] = field(default_factory=list)  # optional features the modem refused
    _step: str = field(default="echo", init=False)

    def start(self) -> str | None:
        return self._enter("echo")

    def answer(self, response: Response) -> str | None:
        after_ok, after_refusal = _FLOW[self._step]
        if not response.ok:
            if after_refusal is None:
                raise InitRefused(f"{response.command} refused: {explain(response.final)}")
            if self._step in _OPTIONAL:
                self.notes.append(f"{response.command} refused ({response.final}): {_OPTIONAL[self._step]}")
            return self._enter(after_refusal)
        if self._step == "sim":
            after_ok = self._sim((response.value("+CPIN:") or "").strip('"'))
        elif self._step == "text":
            self.text_mode = True
        elif self._step == "no_reports" and self.receipts:
            self.receipts, self.reportless = False, True
        return self._enter(after_ok)

    def _sim(self, state: str) -> str:
        if state == "READY":
            return "pdu"
        if state == "SIM PIN":
            if not self.pin:
                raise InitRefused("the SIM asks for a PIN: set pin= in the modem URL")
            return "pin"
        raise InitRefused(f"the SIM is not ready: +CPIN: {state}")

    def _enter(self, step: str) -> str | None:
        while step != "done":
            command = self._command(step)
            if command is not None:
                self._step = step
                return command
            step = _STEPS[_STEPS.index(step) + 1]
        self._step = step
        return None

    def _command(self, step: str) -> str | None:
        """The step's command line; None when it does not apply."""
        match step:
            case "echo":
                return "ATE0"
            case "errors":
                return "AT+CMEE=1"
            case "sim":
                return "AT+CPIN?"
            case "pin":
                return f'AT+CPIN="{self.pin}"'
            case "pdu":
                return "AT+CMGF=0"
            case "text":
                return "AT+CMGF=1"
            case "charset":
                return 'AT+CSCS="GSM"'
            case "smsc":
                return f'AT+CSCA="{self.smsc}"' if self.smsc else None
            case "reports":
                return CNMI_REPORTS if self.receipts else None
            case "no_reports":
                return CNMI_NO_REPORTS
            case "text_params":
                if not self.text_mode:
                    return None
                first = SUBMIT_FIRST_OCTET | (STATUS_REPORT_REQUEST if self.receipts else 0)
                return f"AT+CSMP={first},167,0,0"
        raise AssertionError(f"no initialisation step {step!r}")


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
            if self.pending is not None and self.pending.startswith("AT+CMGS=") and buffer.startswith(b">") \
                    and not self._dropping:
                del buffer[:1]
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
