"""A GSM modem emulator on a real pseudo-terminal: AT commands in PDU mode, echo on or off, SIM PIN, +CMS
errors, a modem that goes silent, status reports (+CDS) before or after the AT+CMGS result, incoming SMS
announced with +CMTI. Submitted PDUs are decoded by python-gsmmodem-new, independent of our encoder; their
TP-VPF and TP-VP are read here too (`tp_vpf`, `tp_vp`), and one whose fields do not add up is refused.
`profile` picks how the AT implementation answers where implementations differ (PROFILES). Commands are
checked as strictly as a modem does: a malformed or out-of-range one is answered ERROR.
Hostile modes, off by default: `hostile` lists misbehaviours (HOSTILE), each done once, in order, when a PDU is
submitted (binary garbage, an endless line, huge lines, junk unsolicited codes, malformed +CMGS/+CDS/+CMT,
silence mid-command); `hostile_done` records those done."""

from __future__ import annotations

import os
import re
import select
import threading
import time
import tty
from dataclasses import dataclass, field, replace
from typing import Any

from gsmmodem import pdu as reference

HOSTILE = frozenset({"binary_garbage", "endless_line", "huge_lines", "junk_urcs", "bad_cmgs", "bad_cds", "bad_cmt",
                     "silent_mid_command"})
# Broken PDUs after +CDS/+CMT: not hex, truncated, of another type, empty, oversized.
BROKEN_PDUS = ("ZZZZ", "00", "0006", "0006FF", "07911326040000F0", "00" + "FF" * 40, "00" * 2000)


@dataclass(frozen=True)
class Profile:
    extended_errors: bool = True  # takes AT+CMEE=n (else ERROR, and errors stay a bare ERROR)
    charsets: bool = True  # takes AT+CSCS="..."
    quoted_sim_state: bool = False  # +CPIN: "READY" rather than +CPIN: READY
    prompt: str = "> "  # after AT+CMGS
    status_reports: bool = True  # sends them at all (when asked for and routed)
    report_routing: bool = True  # takes AT+CNMI with ds=1 or 2 (else ERROR)


STANDARD = Profile()
# The second AT implementation of issue 18: takes AT+CNMI with ds=1 but never sends a status report.
SECOND = Profile(extended_errors=False, charsets=False, quoted_sim_state=True, prompt=">", status_reports=False)
PROFILES = {"standard": STANDARD, "second": SECOND, "second_no_ds": replace(SECOND, report_routing=False)}
CSCS = re.compile(r'AT\+CSCS="(GSM|IRA|UCS2|HEX|8859-1|PCCP437)"')
CNMI = re.compile(r"AT\+CNMI=([0-3]),([0-3]),([0-3]),([0-2]),([01])")
CSMP = re.compile(r"AT\+CSMP=(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
PIN = re.compile(r'AT\+CPIN=("?)([0-9]{4,8})\1')
PDU_LENGTH = re.compile(r"AT\+CMGS=([0-9]{1,3})")
TEXT_NUMBER = re.compile(r'AT\+CMGS="(\+?[0-9]{1,20})"')
READ = re.compile(r"AT\+CMGR=([0-9]{1,5})")
DELETE = re.compile(r"AT\+CMGD=([0-9]{1,5})")
SMSC = re.compile(r'AT\+CSCA="\+?[0-9]{3,20}"')


# TP-VPF, bits 4-3 of an SMS-SUBMIT's first octet (GSM 03.40 9.2.3.3), and the octets of TP-VP it announces.
VALIDITY_FORMATS = {0b00: ("none", 0), 0b10: ("relative", 1), 0b01: ("enhanced", 7), 0b11: ("absolute", 7)}


def submit_validity(tpdu: bytes) -> tuple[str, int | None] | None:
    """An SMS-SUBMIT's TP-VPF and its relative TP-VP (03.40 9.2.2.2: first octet, TP-MR, TP-DA, TP-PID, TP-DCS,
    TP-VP, TP-UDL, TP-UD); None when it is no SMS-SUBMIT or its fields do not add up to its length, as when a
    TP-VPF announces a TP-VP that is not there."""
    try:
        first, digits = tpdu[0], tpdu[2]
        dcs_at = 4 + (digits + 1) // 2  # after the first octet, TP-MR, TP-DA's length, type and semi-octets
        dcs = tpdu[dcs_at + 1]
        name, size = VALIDITY_FORMATS[(first >> 3) & 0x03]
        udl = tpdu[dcs_at + 2 + size]
    except IndexError:
        return None
    septets = (dcs & 0xC0 == 0 and dcs & 0x0C == 0) or dcs & 0xF4 == 0xF0  # GSM 7-bit (03.38 4)
    octets = -(-udl * 7 // 8) if septets else udl
    if first & 0x03 != 0x01 or digits > 20 or octets > 140 or len(tpdu) != dcs_at + 3 + size + octets:
        return None
    return name, tpdu[dcs_at + 2] if name == "relative" else None


def _address(number: str) -> str:
    digits = number.lstrip("+")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return f"{len(digits):02X}{'91' if number.startswith('+') else '81'}{swapped}"


TIMESTAMP = "62115201510340"  # 2026-11-25 10:15:30 +01:00


def status_report_pdu(reference_number: int, recipient: str, status: int) -> str:
    return f"00 06 {reference_number:02X} {_address(recipient)} {TIMESTAMP} {TIMESTAMP} {status:02X}".replace(" ", "")


def deliver_pdu(sender: str, text: str) -> str:
    septets = reference.encodeGsm7(text)
    packed = reference.packSeptets(septets)
    return f"00 04 {_address(sender)} 00 00 {TIMESTAMP} {len(septets):02X} {bytes(packed).hex().upper()}".replace(
        " ", "")


@dataclass
class FakeModem:
    profile: str = "standard"
    echo: bool = True
    pin: str | None = None
    cms_on_send: int | None = None  # answer every AT+CMGS PDU with this +CMS ERROR
    silent_after: int | None = None  # stop answering after this many commands...
    silent_for: float = 0.0  # ...for this long
    report_status: int | None = 0x00  # TP-ST of the status report, None for none
    report_delay: float = 0.1
    report_first: bool = False  # the +CDS arrives before the AT+CMGS result
    reports_stored: bool = False  # reports are stored and announced with +CDSI instead of +CDS
    pdu_mode: bool = True  # False: an old modem that knows only text mode (AT+CMGF=1)
    incoming: list[tuple[str, str]] = field(default_factory=list)  # (sender, text) announced after AT+CNMI
    incoming_direct: bool = False  # deliver them with +CMT (not stored) instead of +CMTI
    commands: list[str] = field(default_factory=list)
    submits: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[int, str] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)
    hostile: list[str] = field(default_factory=list)
    hostile_done: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._profile = PROFILES[self.profile]
        self._unlocked = self.pin is None
        self._extended_errors = False
        self._text_mode = False
        self._text_number: str | None = None
        self._pdu_length = 0
        self._report_routing = 0  # AT+CNMI's ds: 0, status reports are not routed to the terminal
        self._text_first_octet = 0x11  # AT+CSMP's first one: no status report request
        self._reference = 0
        self._silent_until = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:  # a status report still on its timer must not write to a closed descriptor
            os.close(self.master)
            os.close(self.slave)

    def _write(self, text: str) -> None:
        with self._lock:
            if not self._stop.is_set():
                os.write(self.master, text.encode("latin-1"))

    def _reply(self, *lines: str) -> None:
        self._write("".join(f"\r\n{line}\r\n" for line in lines))

    def _run(self) -> None:
        buffer = b""
        pdu_mode = False
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buffer += os.read(self.master, 4096)
            except OSError:
                time.sleep(0.05)  # no process has the terminal open right now
                continue
            while True:
                if pdu_mode:
                    if b"\x1b" in buffer.split(b"\x1a", 1)[0]:  # ESC: no PDU after all
                        buffer = buffer.split(b"\x1b", 1)[1]
                        pdu_mode = False
                        continue
                    if b"\x1a" not in buffer:
                        break
                    data, buffer = buffer.split(b"\x1a", 1)
                    pdu_mode = False
                    self._on_pdu(data.decode("latin-1").strip())
                    continue
                if b"\r" not in buffer:
                    break
                raw, buffer = buffer.split(b"\r", 1)
                line = raw.replace(b"\x1b", b"").decode("latin-1").strip()  # ESC is nothing at the command line
                if line:
                    pdu_mode = self._on_line(line)

    def _on_line(self, line: str) -> bool:
        """Answer a command; True when a PDU follows."""
        self.commands.append(line)
        if self.silent_after is not None and len(self.commands) == self.silent_after + 1:
            self._silent_until = time.monotonic() + self.silent_for
        if time.monotonic() < self._silent_until:
            return False
        if self.echo:
            self._write(line + "\r")
        upper = line.upper()
        profile = self._profile
        if upper in ("ATE0", "ATE1"):
            self.echo = upper == "ATE1"
            self._reply("OK")
        elif upper in ("AT+CMGF=0", "AT+CMGF=1"):
            if upper == "AT+CMGF=0" and not self.pdu_mode:
                self._reply("ERROR")
            else:
                self._text_mode = upper == "AT+CMGF=1"
                self._reply("OK")
        elif upper in ("AT+CMEE=0", "AT+CMEE=1", "AT+CMEE=2") and profile.extended_errors:
            self._extended_errors = upper != "AT+CMEE=0"
            self._reply("OK")
        elif profile.charsets and CSCS.fullmatch(upper):
            self._reply("OK")
        elif match := CSMP.fullmatch(upper):
            self._text_first_octet = int(match[1])
            self._reply("OK")
        elif upper == "AT" or SMSC.fullmatch(upper):
            self._reply("OK")
        elif upper == "AT+CSQ":
            self._reply("+CSQ: 20,99", "OK")
        elif upper == "AT+CPIN?":
            state = "READY" if self._unlocked else "SIM PIN"
            self._reply(f'+CPIN: "{state}"' if profile.quoted_sim_state else f"+CPIN: {state}", "OK")
        elif match := PIN.fullmatch(line):
            if match[2] == self.pin:
                self._unlocked = True
                self._reply("OK")
            else:
                self._reply("+CME ERROR: 16" if self._extended_errors else "ERROR")
        elif (match := CNMI.fullmatch(upper)) and (match[4] == "0" or profile.report_routing):
            self._report_routing = int(match[4])
            self._reply("OK")
            for index, (sender, text) in enumerate(self.incoming, 1):
                pdu = deliver_pdu(sender, text)
                if self.incoming_direct:
                    self._reply(f"+CMT: ,{len(pdu) // 2 - 1}\r\n{pdu}")
                    continue
                self.stored[index] = pdu
                self._reply(f'+CMTI: "SM",{index}')
            self.incoming = []
        elif match := (TEXT_NUMBER if self._text_mode else PDU_LENGTH).fullmatch(upper):
            if not self._unlocked:
                self._reply("+CMS ERROR: 311")
                return False
            if self._text_mode:
                self._text_number = match[1]
            else:
                self._pdu_length = int(match[1])
            self._write("\r\n" + profile.prompt)
            return True
        elif match := READ.fullmatch(upper):
            index = int(match[1])
            if index in self.stored:
                pdu = self.stored[index]
                self._reply(f"+CMGR: 0,,{len(pdu) // 2 - 1}\r\n{pdu}", "OK")
            else:
                self._reply("+CMS ERROR: 321")
        elif match := DELETE.fullmatch(upper):
            index = int(match[1])
            self.stored.pop(index, None)
            self.deleted.append(index)
            self._reply("OK")
        else:
            self._reply("ERROR")
        return False

    @property
    def _sends_reports(self) -> bool:
        return self._profile.status_reports and self._report_routing != 0

    def _on_text(self, text: str) -> None:
        number = self._text_number or ""
        self.submits.append({"number": number, "text": text})
        self._reference = (self._reference + 1) % 256
        self._reply(f"+CMGS: {self._reference}", "OK")
        if self.report_status is not None and self._sends_reports and self._text_first_octet & 0x20:
            report = (f'+CDS: 6,{self._reference},"{number.lstrip("+")}",{145 if number.startswith("+") else 129},'
                      f'"26/11/25,10:15:30+04","26/11/25,10:15:40+04",{self.report_status}')
            threading.Timer(self.report_delay, self._reply, (report,)).start()

    def _misbehave(self, kind: str) -> None:
        """Before the answer to a submit (which follows unless the modem falls silent)."""
        if kind == "binary_garbage":
            self._write(os.urandom(8192).replace(b"\r", b"").replace(b"\n", b"").decode("latin-1"))
            self._write("\r\n")
        elif kind == "endless_line":
            for _ in range(64):  # 2 MiB without a line end, then one
                self._write("A" * 32768)
            self._write("\r\n")
        elif kind == "huge_lines":
            for _ in range(8):
                self._reply("+CSQ: " + "9" * 200_000)
        elif kind == "junk_urcs":
            self._reply(*['+CMTI: "SM",\u00b2', "+CMTI: junk", '+CDSI: "SR",99999999999', "+CDS: 25", "RING",
                          "^BOOT:\u00ff\u00fe", "+CLIP: ", '+CMTI: "SM",', "+CDS: 7,x,,,", "+CSQ: \u00b2,99",
                          *["RING"] * 2000, *['+CMTI: "SM",9'] * 300])
        elif kind == "bad_cds":
            for broken in BROKEN_PDUS:
                self._reply(f"+CDS: {len(broken) // 2}", broken)
        elif kind == "bad_cmt":
            for broken in BROKEN_PDUS:
                self._reply(f"+CMT: ,{len(broken) // 2}", broken)
            self._reply("+CMT: ,24")  # and one whose PDU never comes: the next line is the OK of the submit
        elif kind == "silent_mid_command":
            self._silent_until = time.monotonic() + self.silent_for

    def _on_pdu(self, pdu_hex: str) -> None:
        if self._text_mode:
            self._on_text(pdu_hex)
            return
        try:
            data = bytes.fromhex(pdu_hex)
        except ValueError:
            data = b""
        tpdu = data[1 + data[0]:] if data else b""
        validity = submit_validity(tpdu) if len(tpdu) == self._pdu_length else None
        if validity is None:  # not hex, not as long as AT+CMGS said, or not a well-formed SMS-SUBMIT
            self._reply("+CMS ERROR: 304")
            return
        decoded = reference.decodeSmsPdu(pdu_hex)
        decoded["tp_vpf"], decoded["tp_vp"] = validity
        wants_report = bool(data[1 + data[0]] & 0x20)  # TP-SRR of the submit
        decoded["status_report"] = wants_report
        self.submits.append(decoded)
        kind = self.hostile.pop(0) if self.hostile else None  # "" is a submit that goes well
        if kind:
            self._misbehave(kind)
            self.hostile_done.append(kind)
        if time.monotonic() < self._silent_until:
            return
        if kind == "bad_cmgs":
            self._reply("+CMGS: \u00b2\u00b2", "OK")
            return
        if self.cms_on_send is not None:
            self._reply(f"+CMS ERROR: {self.cms_on_send}")
            return
        self._reference = (self._reference + 1) % 256
        number = self._reference
        report = None
        if self.report_status is not None and wants_report and self._sends_reports:
            pdu = status_report_pdu(number, str(decoded["number"]), self.report_status)
            report = f"+CDS: {len(pdu) // 2 - 1}\r\n{pdu}"
            if self.reports_stored:
                index = 100 + number
                self.stored[index] = pdu
                report = f'+CDSI: "SR",{index}'
        if report and self.report_first:
            self._reply(report)
            report = None
        self._reply(f"+CMGS: {number}", "OK")
        if report:
            threading.Timer(self.report_delay, self._reply, (report,)).start()
