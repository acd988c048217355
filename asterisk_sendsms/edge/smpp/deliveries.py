"""What an SMSC delivers on a link (deliver_sm): receipts and incoming SMS, each stored before it is
acknowledged, asked for again if it cannot be stored, refused if it cannot be read; how many one connection may
have in the store at once."""

from __future__ import annotations

import logging
import time

from asterisk_sendsms.app.transport import TransportSink
from asterisk_sendsms.core.errors import SmsGatewayError
from asterisk_sendsms.core.model import IncomingPart, Receipt
from asterisk_sendsms.edge.smpp.link import Link
from asterisk_sendsms.wire.smpp.pdu import Pdu, Status
from asterisk_sendsms.wire.smpp.receipts import Delivery, IdForm, decode_mo, delivery, parse_receipt, receipt_fields

__all__ = ["MAX_DELIVERIES", "store_delivery"]

log = logging.getLogger(__name__)

# Deliveries of one connection being stored at once; beyond it the connection is not read until some are
# (acknowledged): an SMSC flooding deliver_sm cannot make us hold an unbounded number of them.
MAX_DELIVERIES = 1024


async def store_delivery(name: str, form: IdForm, sink: TransportSink | None, link: Link, pdu: Pdu) -> None:
    """Store what arrived, then acknowledge; if it cannot be stored, ask the SMSC to send it again."""
    status = Status.ESME_ROK
    kind = delivery(pdu)
    try:
        if kind in (Delivery.RECEIPT, Delivery.INTERMEDIATE):
            parsed = parse_receipt(pdu, form, intermediate=kind is Delivery.INTERMEDIATE)
            if parsed is None:
                # Named, not quoted: a receipt quotes the message, and a broken one may be all text.
                if link.complain("receipt"):
                    log.warning("SMPP %s: a receipt without id or state (fields %s); acknowledged and dropped",
                                name, ", ".join(receipt_fields(pdu)) or "none")
            elif sink is not None:
                await sink.on_receipt(Receipt(name, parsed.key, parsed.outcome, parsed.error_code))
        elif kind is Delivery.MESSAGE:
            if sink is not None:
                mo = decode_mo(pdu)
                await sink.on_incoming(IncomingPart(
                    name, _address(pdu, "source"), _address(pdu, "dest"), mo.text, time.time(),
                    mo.reference, mo.total, mo.sequence))
        else:
            if kind is Delivery.RESERVED:
                status = Status.ESME_RINVESMCLASS
            if link.complain(kind.value):
                log.warning("SMPP %s: a %s with esm_class 0x%02X (%s); %s", name,
                            pdu.command.name.lower(), pdu.number("esm_class"), kind.value,
                            "refused" if status else "acknowledged, nothing to record")
    except SmsGatewayError as exc:
        log.error("SMPP %s: %s not stored (%s); asking the SMSC to send it again", name,
                  "incoming SMS" if kind is Delivery.MESSAGE else "receipt", exc.message)
        status = Status.ESME_RX_T_APPN
    except Exception:
        # A PDU we cannot make sense of must not take the connection (and every message on it) down; sent
        # again it would fail again, so it is refused for good.
        log.exception("SMPP %s: cannot process a %s; refused", name, pdu.command.name.lower())
        status = Status.ESME_RX_P_APPN
    finally:
        link.storing -= 1
        if link.storing == MAX_DELIVERIES // 2:
            link.hold("storing", False)
    if link.bound:
        link.send(link.session.respond(pdu, status, message_id=""))


def _address(pdu: Pdu, which: str) -> str:
    """An address as we write numbers: '+' for international (TON 1)."""
    value = pdu.text("source_addr" if which == "source" else "destination_addr")
    ton = pdu.number("source_addr_ton" if which == "source" else "dest_addr_ton")
    return f"+{value}" if ton == 1 and value and not value.startswith("+") else value
