"""The GSM modem transport: AT commands over a serial port (pyserial opens and configures it, asyncio reads
and writes it), PDU mode sending (what the modem reports by itself goes to `reports`), reset and reopen when
the modem stops answering. Whatever the modem sends ends at most the session with it (reopened with backoff):
bad lines and reports are logged once per session, unsolicited codes beyond a bound are dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import serial

from asterisk_sendsms.app.transport import TransportHealth, TransportSink
from asterisk_sendsms.config import ModemSettings
from asterisk_sendsms.core.encoding import Coding, EncodedMessage, Segment
from asterisk_sendsms.core.errors import PermanentSubmitError, TransientSubmitError
from asterisk_sendsms.core.model import OutboundMessage
from asterisk_sendsms.edge.modem.gate import PriorityGate
from asterisk_sendsms.edge.modem.reports import ModemError, ModemReports, ModemSilent, small_number
from asterisk_sendsms.wire.modem.at import (
    CNMI_REPORTS,
    CTRL_Z,
    ESC,
    AtParser,
    Initialisation,
    InitRefused,
    Prompt,
    Response,
    Unsolicited,
    cms_code,
    explain,
)
from asterisk_sendsms.wire.modem.pdu import ModemPduError, encode_submit

__all__ = ["ModemTransport"]

log = logging.getLogger(__name__)

# Unsolicited codes waiting to be handled; a modem announcing more than this is babbling.
MAX_UNSOLICITED = 256
SEND_TIMEOUT_FACTOR = 6  # the network answers the PDU; a weak signal makes that slow
PROBE_ATTEMPTS = 3
SIGNAL_INTERVAL = 60.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
# +CMS ERROR codes after which the same message will never go through (3GPP 27.005 3.2.5, 24.011 E.2)
PERMANENT_CMS = {1, 8, 10, 21, 27, 28, 29, 30, 50, 96, 304, 305}


class ModemTransport:
    kind = "modem"
    capacity = 1  # one SMS at a time per modem

    def __init__(self, name: str, settings: ModemSettings) -> None:
        self.name = name
        self._settings = settings
        self.expects_receipts = settings.receipts
        self._parser = AtParser()
        self._serial: serial.Serial | None = None
        self._gate = PriorityGate()
        self._response: asyncio.Future[Response] | None = None
        self._prompt: asyncio.Future[None] | None = None
        self._unsolicited: asyncio.Queue[Unsolicited] = asyncio.Queue(MAX_UNSOLICITED)
        # Kinds of bad input already logged in this session: each is logged once.
        self._complained: set[str] = set()
        self._reports = ModemReports(name, lambda: self._parser, self.command, self._complain)
        # What initialisation found the modem lacks, logged once for the transport (not at every reopen).
        self._told: set[str] = set()
        self._broken = asyncio.Event()
        self._ready = False
        self._signal = ""
        self.state = "opening"

    # ------------------------------------------------------------ Transport protocol

    @property
    def ready(self) -> bool:
        return self._ready and not self._broken.is_set()

    def health(self) -> TransportHealth:
        detail = self._settings.device + (f", signal {self._signal}" if self._signal else "")
        return TransportHealth(self.name, self.kind, self.ready, self.state, detail)

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        """Status reports come from the network, not from our process: nothing to do."""

    async def run(self, sink: TransportSink) -> None:
        backoff = BACKOFF_INITIAL
        reported: str | None = None
        while True:
            try:
                problem = await self._session(sink)
            except Exception as exc:
                # The boundary of one session: a bug it hits ends the session, not the transport (nor the daemon).
                log.exception("modem %s: unexpected error; reopening", self.name)
                problem = f"internal error: {type(exc).__name__}"
            if self._ready:
                backoff, reported = BACKOFF_INITIAL, None
            self._ready = False
            self.state = problem
            if problem != reported:
                log.warning("modem %s on %s: %s; reopening in %.0fs", self.name, self._settings.device, problem,
                            backoff)
                reported = problem
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        if not self._ready:
            raise TransientSubmitError(f"modem {self.name} is not ready ({self.state})", "MODEM_NOT_READY")
        reference = int.from_bytes(message.sms_id.encode()[:2], "big") & 0xFF
        if self._parser.text_mode:
            if encoded.coding is not Coding.GSM7 or encoded.part_count > 1:
                raise PermanentSubmitError(f"modem {self.name} has only text mode: it cannot send long or Unicode "
                                           "texts", "TEXT_MODE")
            # Text mode's TP-VP is the one AT+CSMP set at initialisation; a ValidityPeriod still ends here.
            text = (f'AT+CMGS="{message.recipient}"', message.text.encode("latin-1", "replace"))
            return [await self._send(message, lambda _validity: text)]
        ids: list[str] = []
        for number, segment in enumerate(encoded.segments, 1):
            part = (reference, encoded.part_count, number) if encoded.part_count > 1 else None
            ids.append(await self._send(message, partial(self._submit_pdu, message.recipient, encoded.coding,
                                                         segment, part)))
        return ids

    # ------------------------------------------------------------ the serial session

    async def _session(self, sink: TransportSink) -> str:
        loop = asyncio.get_running_loop()
        try:
            self._serial = serial.Serial(self._settings.device, self._settings.baud, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError) as exc:
            return f"cannot open: {exc}"
        fd = self._serial.fileno()
        self._parser = AtParser()
        self._broken.clear()
        self._complained.clear()
        while not self._unsolicited.empty():  # what the last session's modem said is not this one's business
            self._unsolicited.get_nowait()
        loop.add_reader(fd, self._readable, fd)
        try:
            async with asyncio.TaskGroup() as group:
                handler = group.create_task(self._reports.handle(self._unsolicited, sink))
                try:
                    await self._initialise()
                except ModemError as exc:
                    handler.cancel()
                    return exc.message
                self._ready = True
                self.state = "ready"
                log.info("modem %s on %s ready", self.name, self._settings.device)
                signal = group.create_task(self._watch_signal())
                await self._broken.wait()
                handler.cancel()
                signal.cancel()
                return "the modem stopped answering; reset"
        finally:
            self._ready = False
            loop.remove_reader(fd)
            self._fail_waiting()
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.dtr = False  # hang the modem's side up before reopening
                self._serial.close()
            self._serial = None

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("modem %s: read failed: %s", self.name, exc)
            self._broken.set()
            asyncio.get_running_loop().remove_reader(fd)
            return
        if not data:
            self._broken.set()
            asyncio.get_running_loop().remove_reader(fd)
            return
        discarded = self._parser.discarded
        try:
            events = self._parser.feed(data)
        except Exception:
            log.exception("modem %s: unexpected error reading the modem; reset", self.name)
            self._broken.set()
            asyncio.get_running_loop().remove_reader(fd)
            return
        if self._parser.discarded != discarded:
            self._complain("lines", "lines too long (or too many for one answer) dropped")
        for event in events:
            if isinstance(event, Response) and self._response is not None and not self._response.done():
                self._response.set_result(event)
            elif isinstance(event, Prompt) and self._prompt is not None and not self._prompt.done():
                self._prompt.set_result(None)
            elif isinstance(event, Unsolicited):
                try:
                    self._unsolicited.put_nowait(event)
                except asyncio.QueueFull:
                    self._complain("flood", f"more than {MAX_UNSOLICITED} unsolicited codes waiting; dropping")

    def _complain(self, kind: str, text: str) -> None:
        """Log bad input from the modem, once per kind and session (no message text goes in `text`)."""
        if kind not in self._complained:
            self._complained.add(kind)
            log.warning("modem %s: %s", self.name, text)

    async def _write(self, data: bytes) -> None:
        """Write all of `data`, waiting (without holding up the event loop) while the port takes none."""
        assert self._serial is not None
        fd = self._serial.fileno()
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        deadline = loop.time() + self._settings.timeout
        while view:
            try:
                view = view[os.write(fd, view):]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                self._broken.set()
                raise ModemSilent(f"write failed: {exc.strerror or exc}") from None
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _settle, writable)
            try:
                await asyncio.wait_for(writable, max(0.0, deadline - loop.time()))
            except TimeoutError:
                self._broken.set()
                raise ModemSilent("the serial port does not take data") from None
            finally:
                loop.remove_writer(fd)

    def _fail_waiting(self) -> None:
        for future in (self._response, self._prompt):
            if future is not None and not future.done():
                future.set_exception(ModemSilent("the modem connection was reset"))
                future.exception()  # whoever waited for it has given up already; it is not an error to log

    async def _wait(self, future: asyncio.Future[Response] | asyncio.Future[None], seconds: float, what: str) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(future), seconds)
        except TimeoutError:
            self._parser.abandon()
            self._broken.set()
            raise ModemSilent(f"no answer to {what} within {seconds:g}s") from None

    async def command(self, line: str, seconds: float | None = None) -> Response:
        async with self._gate.turn():
            if self._serial is None or self._broken.is_set():
                raise ModemSilent("the modem is not open")
            self._response = asyncio.get_running_loop().create_future()
            await self._write(self._parser.command(line))
            await self._wait(self._response, seconds or self._settings.timeout, line)
            return self._response.result()

    async def _watch_signal(self) -> None:
        """AT+CSQ now and then, for the status page: <rssi> 0-31 is -113 to -51 dBm, 99 unknown."""
        while True:
            try:
                value = (await self.command("AT+CSQ")).value("+CSQ:") or ""
            except ModemSilent:
                return  # the session is being reset
            rssi = value.split(",")[0].strip()
            if rssi.isascii() and rssi.isdigit() and int(rssi) <= 31:
                self._signal = f"{rssi}/31 ({-113 + 2 * int(rssi)} dBm)"
            elif rssi:
                self._signal = "unknown"
            await asyncio.sleep(SIGNAL_INTERVAL)

    async def _initialise(self) -> None:
        # A modem left waiting for a PDU after a `>` prompt (we gave up on it) takes all that follows as the
        # PDU: ESC ends that wait, and is nothing to a modem at its command line.
        await self._write(ESC)
        for attempt in range(PROBE_ATTEMPTS):
            try:
                await self.command("AT", min(2.0, self._settings.timeout))
                break
            except ModemSilent:
                self._broken.clear()
                if attempt == PROBE_ATTEMPTS - 1:
                    raise
        setup = Initialisation(self._settings.pin, self._settings.smsc, self._settings.receipts)
        line = setup.start()
        while line is not None:
            response = await self.command(line)
            try:
                line = setup.answer(response)
            except InitRefused as exc:
                raise ModemError(str(exc)) from None
            # Before the next command: in text mode a +CMT or +CDS that AT+CNMI lets through reads differently.
            self._parser.text_mode = setup.text_mode
        self.expects_receipts = setup.receipts
        for note in setup.notes:
            self._tell(logging.INFO, f"modem {self.name}: {note}")
        if setup.text_mode:
            self._tell(logging.WARNING, f"modem {self.name} has no PDU mode: text mode sends one-part GSM texts only")
        if setup.reportless:
            self._tell(logging.WARNING, f"modem {self.name} gives no status reports (it refused {CNMI_REPORTS}): "
                                        "its messages are not tracked to delivery")

    def _tell(self, level: int, text: str) -> None:
        if text not in self._told:
            self._told.add(text)
            log.log(level, "%s", text)

    def _submit_pdu(self, recipient: str, coding: Coding, segment: Segment, part: tuple[int, int, int] | None,
                    validity: float | None) -> tuple[str, bytes]:
        try:
            pdu = encode_submit(recipient, coding, segment, part=part, smsc=self._settings.smsc,
                                status_report=self.expects_receipts, validity=validity)
        except ModemPduError as exc:
            raise PermanentSubmitError(exc.message, "PDU") from None
        return f"AT+CMGS={pdu.tpdu_length}", pdu.hex.encode("ascii")

    async def _send(self, message: OutboundMessage, build: Callable[[float | None], tuple[str, bytes]]) -> str:
        """AT+CMGS, the `>` prompt, the PDU (or text) and Ctrl-Z; returns the part's id for its report. Waiting
        submits go by the message's class (a caller's before a campaign's), the modem's own commands first.
        `build` makes the command and its body from the validity left (seconds) when the part's turn comes."""
        recipient = message.recipient
        async with self._gate.turn(message.order):
            if self._serial is None or self._broken.is_set():
                # Not on a session being reset: a prompt answered there would leave the modem waiting for a
                # PDU that never comes.
                raise TransientSubmitError("the modem is not open", "MODEM_NOT_READY")
            command, body = build(_validity_left(message))
            loop = asyncio.get_running_loop()
            self._prompt = loop.create_future()
            self._response = loop.create_future()
            try:
                await self._write(self._parser.command(command))
                waiters: set[asyncio.Future[Any]] = {self._prompt, self._response}
                await asyncio.wait(waiters, timeout=self._settings.timeout, return_when=asyncio.FIRST_COMPLETED)
                if self._response.done() and not self._prompt.done():  # refused before the prompt
                    return self._sent(self._response.result(), recipient)
                if not self._prompt.done():
                    self._parser.abandon()
                    self._broken.set()
                    raise ModemSilent(f"no '>' prompt after AT+CMGS within {self._settings.timeout:g}s")
                self._prompt.result()
                await self._write(body + CTRL_Z)
                await self._wait(self._response, self._settings.timeout * SEND_TIMEOUT_FACTOR, "the PDU")
            except ModemSilent as exc:
                raise TransientSubmitError(f"modem {self.name}: {exc.message}", "MODEM_SILENT") from None
            return self._sent(self._response.result(), recipient)

    def _sent(self, response: Response, recipient: str) -> str:
        if response.ok:
            reference = (response.value("+CMGS:") or "").split(",")[0].strip()
            if not small_number(reference):
                # Sent (the modem said OK), but its status report cannot be matched: it expires unreported.
                self._complain("+CMGS:", "an AT+CMGS answer without a message reference; its report will not match")
                reference = "?"
            return f"{reference}:{recipient}"
        code = cms_code(response.final)
        text = f"modem {self.name}: {explain(response.final)}"
        if code in PERMANENT_CMS:
            raise PermanentSubmitError(text, f"CMS_{code}")
        raise TransientSubmitError(text, f"CMS_{code}" if code is not None else "MODEM_ERROR")


def _validity_left(message: OutboundMessage) -> float | None:
    """What is left of a message's ValidityPeriod as its part leaves (it may have waited its turn long), for
    TP-VP; None for a message without one, which keeps the PDU without TP-VP (the SMSC's own validity)."""
    if not message.smsc_validity:
        return None
    left = message.expires_at - time.time()
    if left <= 0:
        # The dispatcher sees the time is up and expires it here, as it does for SMPP.
        raise TransientSubmitError("its validity period ended while it waited to be sent", "EXPIRED")
    return left


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
