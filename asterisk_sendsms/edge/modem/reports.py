"""What a GSM modem reports by itself (unsolicited result codes): status reports, in PDU or text mode, and
incoming SMS, delivered at once or stored on the SIM (read, handed to the store, then deleted); a report that
cannot be read is complained about once per session, never more."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from asterisk_sendsms.app.transport import TransportSink
from asterisk_sendsms.core.errors import SmsGatewayError
from asterisk_sendsms.core.model import IncomingPart, Receipt
from asterisk_sendsms.wire.modem.at import AtParser, Response, Unsolicited
from asterisk_sendsms.wire.modem.pdu import Deliver, StatusReport, decode_pdu

__all__ = ["ModemError", "ModemReports", "ModemSilent", "small_number"]

log = logging.getLogger(__name__)


class ModemError(SmsGatewayError):
    """The modem refused or did not answer."""


class ModemSilent(ModemError):
    pass


class ModemReports:
    """Handles a session's unsolicited codes for modem `name`: `command` runs an AT command on the session,
    `complain` logs a kind of bad input once, `parser` tells whether the modem is in text mode."""

    def __init__(self, name: str, parser: Callable[[], AtParser], command: Callable[[str], Awaitable[Response]],
                 complain: Callable[[str, str], None]) -> None:
        self.name = name
        self._parser_of = parser
        self._command = command
        self._complain = complain

    async def handle(self, unsolicited: asyncio.Queue[Unsolicited], sink: TransportSink) -> None:
        while True:
            event = await unsolicited.get()
            try:
                if event.code == "+CDS:" and event.pdu is None and self._parser_of().text_mode:
                    await self._on_text_report(sink, event.line)
                elif event.code in ("+CDS:", "+CMT:"):
                    if event.pdu is None:
                        raise ModemError("announced without its PDU")
                    await self._on_pdu(sink, event.pdu)
                elif event.code in ("+CMTI:", "+CDSI:"):
                    await self._read_stored(sink, event.line.split(",")[-1].strip())
            except SmsGatewayError as exc:
                # The code, not the line: a report's line may carry a number, a +CMT's the sender.
                self._complain(event.code, f"{event.code} not handled: {exc.message}")
            except Exception:
                log.exception("modem %s: unexpected error handling %s", self.name, event.code)

    async def _on_pdu(self, sink: TransportSink, pdu_hex: str) -> None:
        decoded = decode_pdu(pdu_hex)
        if isinstance(decoded, StatusReport):
            await sink.on_receipt(Receipt(self.name, f"{decoded.reference}:{decoded.recipient}", decoded.outcome,
                                          f"{decoded.status:02X}"))
        elif isinstance(decoded, Deliver):
            await sink.on_incoming(IncomingPart(self.name, decoded.sender, "", decoded.text, time.time(),
                                                decoded.reference, decoded.total, decoded.sequence))

    async def _on_text_report(self, sink: TransportSink, line: str) -> None:
        """+CDS: <fo>,<mr>,"<ra>",<tora>,"<scts>","<dt>",<st> (text mode)."""
        fields = [f.strip().strip('"') for f in line[len("+CDS:"):].split(",")]
        if len(fields) < 7 or not small_number(fields[1]) or not small_number(fields[-1]):
            raise ModemError("an unreadable status report")
        recipient = fields[2]
        if fields[3] == "145" and not recipient.startswith("+"):
            recipient = "+" + recipient
        report = StatusReport(int(fields[1]), recipient, int(fields[-1]), None)
        await sink.on_receipt(Receipt(self.name, f"{report.reference}:{report.recipient}", report.outcome,
                                      f"{report.status:02X}"))

    async def _read_stored(self, sink: TransportSink, index: str) -> None:
        if not (index.isascii() and index.isdigit() and len(index) <= 5):
            raise ModemError("a storage index that is not one")
        response = await self._command(f"AT+CMGR={index}")
        pdu_line = next((line for line in reversed(response.lines) if not line.startswith("+CMGR:")), None)
        if response.ok and pdu_line:
            await self._on_pdu(sink, pdu_line)  # stored first: only then is it deleted from the SIM
        await self._command(f"AT+CMGD={index}")


def small_number(text: str) -> bool:
    """0-255 in ASCII digits (`str.isdigit` takes '²', which `int` does not)."""
    return text.isascii() and text.isdigit() and int(text) <= 255
