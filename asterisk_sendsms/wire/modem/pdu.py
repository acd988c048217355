"""GSM 03.40 PDUs without I/O: SMS-SUBMIT built from the core's encoded segments (7-bit packing with the
UDH fill bits, UCS-2, concatenation, status report request, validity period), SMS-STATUS-REPORT and
SMS-DELIVER decoded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from asterisk_sendsms.core.encoding import Coding, Segment, concat_udh, decode_gsm7, pack_septets, unpack_septets
from asterisk_sendsms.core.errors import SmsGatewayError
from asterisk_sendsms.core.model import PartOutcome

__all__ = ["Deliver", "ModemPduError", "StatusReport", "SubmitPdu", "decode_pdu", "encode_submit"]

TOA_INTERNATIONAL = 0x91
TOA_UNKNOWN = 0x81
TOA_ALPHANUMERIC = 0xD0
# An SMSC address (12 octets at most) and the longest TPDU (an SMS-DELIVER: 164 octets): anything longer is
# not one PDU.
MAX_PDU_OCTETS = 12 + 164


class ModemPduError(SmsGatewayError):
    """A PDU we cannot read."""


@dataclass(frozen=True, slots=True)
class SubmitPdu:
    hex: str  # what follows AT+CMGS=<tpdu_length>, SMSC part included
    tpdu_length: int  # octets after the SMSC part, as AT+CMGS wants


def _semi_octets(digits: str) -> bytes:
    padded = digits + ("F" if len(digits) % 2 else "")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))


def _read_semi_octets(data: bytes) -> str:
    return "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data).rstrip("F")


def _address(number: str) -> tuple[int, bytes]:
    international = number.startswith("+")
    digits = number.lstrip("+")
    if not digits.isdigit():
        raise ModemPduError(f"{number!r} is not a number a modem can send to")
    return len(digits), bytes((TOA_INTERNATIONAL if international else TOA_UNKNOWN,)) + _semi_octets(digits)


def _smsc(number: str | None) -> bytes:
    if not number:
        return b"\x00"  # the SIM's SMSC
    _, address = _address(number)
    return bytes((len(address),)) + address


def validity_octet(seconds: float) -> int:
    """TP-VP in relative format (GSM 03.40 9.2.3.12.1): 0-143 (n+1)*5 minutes, 144-167 12 hours + (n-143)*30
    minutes, 168-196 n-166 days, 197-255 n-192 weeks. Rounded up to the next step, 5 minutes at least (nothing
    is shorter), 63 weeks at most: the steps grow to a week, and rounding down could cut a period to half."""
    minutes = max(5.0, seconds / 60)
    if minutes <= 12 * 60:
        return int(-(-minutes // 5)) - 1
    if minutes <= 24 * 60:
        return 143 + int(-(-(minutes - 12 * 60) // 30))
    days = minutes / (24 * 60)
    if days <= 30:
        return 166 + int(-(-days // 1))
    return min(255, 192 + int(-(-days // 7)))


def encode_submit(recipient: str, coding: Coding, segment: Segment, *, part: tuple[int, int, int] | None = None,
                  smsc: str | None = None, status_report: bool = True, validity: float | None = None) -> SubmitPdu:
    """`part` is (reference, total, sequence) for a concatenated message."""
    udh = concat_udh(*part) if part else b""
    first = 0x01 | (0x20 if status_report else 0) | (0x40 if udh else 0) | (0x10 if validity is not None else 0)
    digits, address = _address(recipient)
    tpdu = bytearray((first, 0x00, digits)) + address
    tpdu += bytes((0x00, 0x00 if coding is Coding.GSM7 else 0x08))
    if validity is not None:
        tpdu.append(validity_octet(validity))
    if coding is Coding.GSM7:
        # The septets start on a septet boundary after the header: fill bits pad the header to it.
        header_bits = len(udh) * 8
        fill = (7 - header_bits % 7) % 7
        septets = (header_bits + fill) // 7 + len(segment.payload)
        tpdu.append(septets)
        tpdu += udh + pack_septets(segment.payload, fill)
    else:
        tpdu.append(len(udh) + len(segment.payload))
        tpdu += udh + segment.payload
    return SubmitPdu((_smsc(smsc) + bytes(tpdu)).hex().upper(), len(tpdu))


@dataclass(frozen=True, slots=True)
class StatusReport:
    reference: int  # TP-MR of the submit it reports on
    recipient: str
    status: int  # TP-ST
    discharged: datetime | None

    @property
    def outcome(self) -> PartOutcome:
        if self.status <= 0x1F:
            return PartOutcome.DELIVERED
        if self.status <= 0x3F:
            return PartOutcome.ENROUTE  # the SMSC is still trying
        if self.status == 0x46:
            return PartOutcome.EXPIRED
        if self.status in (0x41, 0x43, 0x45):
            return PartOutcome.REJECTED
        return PartOutcome.UNDELIVERED


@dataclass(frozen=True, slots=True)
class Deliver:
    sender: str
    text: str
    timestamp: datetime | None
    reference: int = 0
    total: int = 1
    sequence: int = 1


def _read_address(data: bytes, position: int) -> tuple[str, int]:
    digits, toa = data[position], data[position + 1]
    size = (digits + 1) // 2
    raw = data[position + 2:position + 2 + size]
    if len(raw) < size:
        raise ModemPduError("address runs past the PDU")
    if toa & 0x70 == 0x50:  # alphanumeric: GSM 7-bit packed
        text = decode_gsm7(unpack_septets(raw, digits * 4 // 7))
        return text, position + 2 + size
    number = _read_semi_octets(raw)
    return ("+" if toa & 0x70 == 0x10 else "") + number, position + 2 + size


def _timestamp(data: bytes) -> datetime | None:
    try:
        fields = [int(_read_semi_octets(bytes((b,)))[:2].ljust(2, "0")) for b in data[:6]]
        zone = data[6]
        quarters = int(f"{zone & 0x07:X}{zone >> 4:X}") * (-1 if zone & 0x08 else 1)
        return datetime(2000 + fields[0], fields[1], fields[2], fields[3], fields[4], fields[5],
                        tzinfo=timezone(timedelta(minutes=15 * quarters))).astimezone(UTC)
    except ValueError:
        return None


def _user_data(data: bytes, position: int, dcs: int, udhi: bool) -> tuple[str, tuple[int, int, int]]:
    length = data[position]
    body = data[position + 1:]
    header = b""
    concat = (0, 1, 1)
    if udhi and body:
        header = body[:1 + body[0]]
        offset = 1
        while offset + 2 <= len(header):
            element, size = header[offset], header[offset + 1]
            value = header[offset + 2:offset + 2 + size]
            if element == 0x00 and size == 3:
                concat = (value[0], value[1], value[2])
            elif element == 0x08 and size == 4:
                concat = (int.from_bytes(value[:2], "big"), value[2], value[3])
            offset += 2 + size
    alphabet = (dcs >> 2) & 0x03 if dcs & 0xC0 == 0 else 0
    if alphabet == 0:
        header_bits = len(header) * 8
        fill = (7 - header_bits % 7) % 7
        count = length - (header_bits + fill) // 7
        text = decode_gsm7(unpack_septets(body[len(header):], max(count, 0), fill))
    elif alphabet == 2:
        text = body[len(header):length].decode("utf-16-be", errors="replace")
    else:
        text = body[len(header):length].decode("latin-1")
    if not 1 <= concat[2] <= concat[1]:
        concat = (0, 1, 1)
    return text, concat


def decode_pdu(hex_pdu: str) -> StatusReport | Deliver:
    """A PDU as +CDS/+CMGR/+CMT give it (SMSC part included)."""
    if len(hex_pdu) > 2 * MAX_PDU_OCTETS + 2:
        raise ModemPduError(f"a PDU of {len(hex_pdu) // 2} octets: longer than any SMS")
    try:
        data = bytes.fromhex(hex_pdu.strip())
        position = 1 + data[0]  # skip the SMSC
        first = data[position]
        kind = first & 0x03
        if kind == 0x02:
            reference = data[position + 1]
            recipient, position = _read_address(data, position + 2)
            discharged = _timestamp(data[position + 7:position + 14])
            return StatusReport(reference, recipient, data[position + 14], discharged)
        if kind == 0x00:
            sender, position = _read_address(data, position + 1)
            if not sender:
                raise ModemPduError("an SMS-DELIVER without a sender")
            dcs = data[position + 1]
            timestamp = _timestamp(data[position + 2:position + 9])
            text, (reference, total, sequence) = _user_data(data, position + 9, dcs, bool(first & 0x40))
            return Deliver(sender, text, timestamp, reference, total, sequence)
    except (IndexError, ValueError) as exc:
        raise ModemPduError(f"unreadable PDU: {exc}") from None
    raise ModemPduError(f"PDU type {first & 0x03} is neither SMS-DELIVER nor SMS-STATUS-REPORT")
