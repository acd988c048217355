"""Receipts and incoming messages without I/O: the `id: sub: dlvrd: submit date: done date: stat: err: text:`
receipt text in any capitalisation, the receipt TLVs, the SMSC id forms that must meet (hex vs decimal,
leading zeros, case), and the text and concatenation of incoming SMS."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, StrEnum

from asterisk_sendsms.core.encoding import decode_gsm7
from asterisk_sendsms.core.model import PartOutcome
from asterisk_sendsms.wire.smpp.pdu import Command, Pdu, Tlv

__all__ = ["Delivery", "IdForm", "MoText", "ParsedReceipt", "canonical_id", "decode_mo", "delivery", "parse_receipt",
           "receipt_fields"]

_FIELD = re.compile(r"(?i)\b(id|sub|dlvrd|submit date|done date|stat|err|text):")
# The receipt text's `stat:` (SMPP 3.4 Appendix B), short and spelled out
_STATES = {
    "DELIVRD": PartOutcome.DELIVERED, "DELIVERED": PartOutcome.DELIVERED, "EXPIRED": PartOutcome.EXPIRED,
    "DELETED": PartOutcome.DELETED, "UNDELIV": PartOutcome.UNDELIVERED, "UNDELIVERABLE": PartOutcome.UNDELIVERED,
    "ACCEPTD": PartOutcome.ACCEPTED, "ACCEPTED": PartOutcome.ACCEPTED, "UNKNOWN": PartOutcome.UNKNOWN,
    "REJECTD": PartOutcome.REJECTED, "REJECTED": PartOutcome.REJECTED, "ENROUTE": PartOutcome.ENROUTE,
}
# message_state TLV values (SMPP 3.4, 5.2.28)
_TLV_STATES = {1: PartOutcome.ENROUTE, 2: PartOutcome.DELIVERED, 3: PartOutcome.EXPIRED, 4: PartOutcome.DELETED,
               5: PartOutcome.UNDELIVERED, 6: PartOutcome.ACCEPTED, 7: PartOutcome.UNKNOWN, 8: PartOutcome.REJECTED}


class Delivery(Enum):
    """What a deliver_sm or data_sm is, by the message type in its esm_class (bits 5-2, SMPP 3.4 5.2.12)."""

    MESSAGE = "message"  # an SMS from a phone: stored and notified as incoming
    RECEIPT = "receipt"  # about a message we sent: final or intermediate as its state says
    INTERMEDIATE = "intermediate delivery notification"  # about a message we sent, never final
    CONVERSATION_ABORT = "conversation abort"  # Korean CDMA: nothing of ours to record
    RESERVED = "reserved message type"  # no meaning in SMPP 3.4: refused with ESME_RINVESMCLASS


_MESSAGE_TYPES = {
    0x00: Delivery.MESSAGE,
    0x04: Delivery.RECEIPT,  # SMSC delivery receipt
    # SME delivery acknowledgement: the handset's own word that it has the message. We never ask for one
    # (registered_delivery asks the SMSC only); one that names a message and a state is applied as a receipt.
    0x08: Delivery.RECEIPT,
    0x10: Delivery.MESSAGE,  # SME manual/user acknowledgement: the user's answer, text and all
    0x18: Delivery.CONVERSATION_ABORT,
    0x20: Delivery.INTERMEDIATE,
}
_LEADING_ZEROS = re.compile(r"^[0\s]+")  # \s: what str.strip() removes, so that the result is stable
MAX_ID = 64  # submit_sm_resp.message_id is a C-Octet String of 65 octets at most


class IdForm(StrEnum):
    """How an SMSC writes the id of `submit_sm_resp` against the id in its receipt text."""

    SAME = "same"  # the same base (case and leading zeros may still differ)
    HEX_DEC = "hex-dec"  # hex in submit_sm_resp, decimal in the receipt text
    DEC_HEX = "dec-hex"  # decimal in submit_sm_resp, hex in the receipt text


def canonical_id(raw: str, base: int | None = None) -> str:
    """One spelling per id: case and leading zeros removed; with `base`, converted to decimal."""
    text = raw.strip().lower()
    if base is not None:
        try:
            return str(int(text, base))
        except ValueError:
            pass  # not a number in that base after all: keep it as text
    stripped = _LEADING_ZEROS.sub("", text)  # "0 7" and "07" are one id
    return stripped or ("0" if text else "")


def submit_key(message_id: str, form: IdForm) -> str:
    return canonical_id(message_id, 16 if form is IdForm.HEX_DEC else 10 if form is IdForm.DEC_HEX else None)


def receipt_key(text_id: str, form: IdForm) -> str:
    return canonical_id(text_id, 16 if form is IdForm.DEC_HEX else 10 if form is IdForm.HEX_DEC else None)


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    key: str  # comparable with submit_key() of the part's id
    outcome: PartOutcome
    error_code: str
    fields: dict[str, str]


def delivery(pdu: Pdu) -> Delivery:
    kind = _MESSAGE_TYPES.get(pdu.number("esm_class") & 0x3C, Delivery.RESERVED)
    if kind is Delivery.MESSAGE and pdu.command is Command.DATA_SM and Tlv.RECEIPTED_MESSAGE_ID in pdu.tlvs:
        return Delivery.RECEIPT  # a data_sm receipt may say so by its TLVs alone
    return kind


def _text_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    pieces = _FIELD.split(text)  # [before, name, value, name, value, ...]
    for raw_name, value in zip(pieces[1::2], pieces[2::2], strict=True):
        name = raw_name.lower()
        fields.setdefault(name, value if name == "text" else value.strip())
    return fields


def receipt_fields(pdu: Pdu) -> list[str]:
    """The names of what a receipt carries (its text fields, its receipt TLVs), to log instead of its text."""
    payload = pdu.tlvs.get(Tlv.MESSAGE_PAYLOAD) or pdu.octets("short_message")
    names = list(_text_fields(payload.decode("latin-1")))
    return names + [f"TLV 0x{tag:04X}" for tag in (Tlv.RECEIPTED_MESSAGE_ID, Tlv.MESSAGE_STATE) if tag in pdu.tlvs]


def parse_receipt(pdu: Pdu, form: IdForm, intermediate: bool = False) -> ParsedReceipt | None:
    """The receipt in a deliver_sm/data_sm, or None when it names no message id or no state. An
    `intermediate` notification is ENROUTE whatever state it names, and needs none."""
    payload = pdu.tlvs.get(Tlv.MESSAGE_PAYLOAD) or pdu.octets("short_message")
    fields = _text_fields(payload.decode("latin-1"))
    tlv_id = pdu.tlvs.get(Tlv.RECEIPTED_MESSAGE_ID, b"").split(b"\0", 1)[0].decode("latin-1")
    # The TLV carries the id as submit_sm_resp gave it; the text may use another base.
    if tlv_id:
        key = submit_key(tlv_id, form)
    elif fields.get("id"):
        key = receipt_key(fields["id"], form)
    else:
        return None
    if len(key) > MAX_ID:
        return None  # no SMSC gave such an id in a submit_sm_resp: it can match no part
    state = pdu.tlvs.get(Tlv.MESSAGE_STATE, b"")
    outcome = _TLV_STATES.get(state[0]) if len(state) == 1 else None
    if outcome is None:
        outcome = _STATES.get(fields.get("stat", "").upper())
    if intermediate:
        outcome = PartOutcome.ENROUTE
    elif outcome is None:
        return None
    error = fields.get("err", "")
    network = pdu.tlvs.get(Tlv.NETWORK_ERROR_CODE, b"")
    if len(network) == 3 and (network[1] or network[2]):
        error = f"{error} net:{network[0]}:{int.from_bytes(network[1:], 'big')}".strip()
    if outcome is PartOutcome.DELIVERED and error.strip("0") == "":
        error = ""
    return ParsedReceipt(key, outcome, error, fields)


@dataclass(frozen=True, slots=True)
class MoText:
    text: str
    reference: int = 0
    total: int = 1
    sequence: int = 1


def _decode(payload: bytes, data_coding: int) -> str:
    if data_coding == 8:
        return payload.decode("utf-16-be", errors="replace")
    if data_coding in (0, 1) and all(b < 0x80 for b in payload):
        # SMSC default alphabet: GSM 03.38 septets, one per octet
        return decode_gsm7(payload) if data_coding == 0 else payload.decode("ascii")
    return payload.decode("latin-1")


def decode_mo(pdu: Pdu) -> MoText:
    """The text of an incoming deliver_sm/data_sm, with its concatenation (UDH or SAR TLVs) if any."""
    payload = pdu.tlvs.get(Tlv.MESSAGE_PAYLOAD) or pdu.octets("short_message")
    reference, total, sequence = 0, 1, 1
    if pdu.number("esm_class") & 0x40 and payload:
        header, payload = payload[1:1 + payload[0]], payload[1 + payload[0]:]
        position = 0
        while position + 2 <= len(header):
            element, size = header[position], header[position + 1]
            value = header[position + 2:position + 2 + size]
            if len(value) < size:
                break  # the header claims more than it holds
            if element == 0x00 and size == 3:
                reference, total, sequence = value[0], value[1], value[2]
            elif element == 0x08 and size == 4:
                reference, total, sequence = int.from_bytes(value[:2], "big"), value[2], value[3]
            position += 2 + size
    elif 1 <= len(pdu.tlvs.get(Tlv.SAR_MSG_REF_NUM, b"")) <= 2:  # a longer one is not SMPP's (and not a number)
        reference = int.from_bytes(pdu.tlvs[Tlv.SAR_MSG_REF_NUM], "big")
        # An empty TLV (seen from fuzzing, never from an SMSC) counts as absent.
        total = (pdu.tlvs.get(Tlv.SAR_TOTAL_SEGMENTS) or b"\x01")[0]
        sequence = (pdu.tlvs.get(Tlv.SAR_SEGMENT_SEQNUM) or b"\x01")[0]
    if not 1 <= sequence <= total:
        reference, total, sequence = 0, 1, 1  # a header that makes no sense: take the part as a whole message
    return MoText(_decode(payload, pdu.number("data_coding")), reference, total, sequence)
