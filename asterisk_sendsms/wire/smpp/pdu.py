"""SMPP 3.4 PDUs without I/O: the few operations an ESME needs, encoded and decoded from a field table.
Decoding is strict about framing and lenient about field sizes real SMSCs exceed (a service_type of 8)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from asterisk_sendsms.core.errors import SmsGatewayError

__all__ = [
    "Command",
    "Pdu",
    "PduError",
    "Status",
    "Tlv",
    "decode_pdu",
    "encode_pdu",
    "frame_length",
    "relative_time",
    "status_name",
]

HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")
MAX_PDU = 64 * 1024  # far above any real PDU; a larger length means a broken stream
RESPONSE_BIT = 0x80000000


class Command(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103

    @property
    def is_response(self) -> bool:
        return bool(self & RESPONSE_BIT)

    @property
    def response(self) -> Command:
        return _RESPONSES[self]


# Looked up, not constructed: calling an enum class costs more than decoding the rest of a submit_sm_resp.
_COMMANDS = {command.value: command for command in Command}
_RESPONSES = {command: _COMMANDS[command | RESPONSE_BIT] for command in Command}


class Status(IntEnum):
    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVESMCLASS = 0x43
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


class PduError(SmsGatewayError):
    """Bytes that are not a valid PDU; `status` is the SMPP error that tells the sender what was wrong."""

    def __init__(self, message: str, status: int = Status.ESME_RINVCMDLEN) -> None:
        super().__init__(message)
        self.status = status


def relative_time(seconds: int) -> str:
    """SMPP's relative time format (3.4, 7.1.1.2), YYMMDDhhmmsstnnR, for `seconds` from now (under 100 days)."""
    days, rest = divmod(max(0, seconds), 86400)
    return f"0000{min(days, 99):02d}{rest // 3600:02d}{rest % 3600 // 60:02d}{rest % 60:02d}000R"


def status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return f"ESME_0x{code:08X}"


class Tlv(IntEnum):
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    RECEIPTED_MESSAGE_ID = 0x001E
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


# Field kinds: ("c", max) a NUL-terminated string, ("1",) one octet, ("sm",) sm_length + short_message.
_SM_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("service_type", "c", 6), ("source_addr_ton", "1", 0), ("source_addr_npi", "1", 0),
    ("source_addr", "c", 21), ("dest_addr_ton", "1", 0), ("dest_addr_npi", "1", 0),
    ("destination_addr", "c", 21), ("esm_class", "1", 0), ("protocol_id", "1", 0), ("priority_flag", "1", 0),
    ("schedule_delivery_time", "c", 17), ("validity_period", "c", 17), ("registered_delivery", "1", 0),
    ("replace_if_present_flag", "1", 0), ("data_coding", "1", 0), ("sm_default_msg_id", "1", 0),
    ("short_message", "sm", 254),
)
_BIND_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("system_id", "c", 16), ("password", "c", 9), ("system_type", "c", 13), ("interface_version", "1", 0),
    ("addr_ton", "1", 0), ("addr_npi", "1", 0), ("address_range", "c", 41),
)
_DATA_SM_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("service_type", "c", 6), ("source_addr_ton", "1", 0), ("source_addr_npi", "1", 0),
    ("source_addr", "c", 65), ("dest_addr_ton", "1", 0), ("dest_addr_npi", "1", 0),
    ("destination_addr", "c", 65), ("esm_class", "1", 0), ("registered_delivery", "1", 0), ("data_coding", "1", 0),
)
_RESP_ID: tuple[tuple[str, str, int], ...] = (("message_id", "c", 65),)
_BIND_RESP: tuple[tuple[str, str, int], ...] = (("system_id", "c", 16),)

BODY: dict[Command, tuple[tuple[str, str, int], ...]] = {
    Command.BIND_RECEIVER: _BIND_FIELDS, Command.BIND_TRANSMITTER: _BIND_FIELDS,
    Command.BIND_TRANSCEIVER: _BIND_FIELDS, Command.BIND_RECEIVER_RESP: _BIND_RESP,
    Command.BIND_TRANSMITTER_RESP: _BIND_RESP, Command.BIND_TRANSCEIVER_RESP: _BIND_RESP,
    Command.SUBMIT_SM: _SM_FIELDS, Command.DELIVER_SM: _SM_FIELDS, Command.DATA_SM: _DATA_SM_FIELDS,
    Command.SUBMIT_SM_RESP: _RESP_ID, Command.DELIVER_SM_RESP: _RESP_ID, Command.DATA_SM_RESP: _RESP_ID,
}
# Readers accept strings longer than the specification's limit (smscsim sends an 8-octet service_type);
# they stop at this bound so a missing NUL cannot swallow the PDU.
_LENIENT_CSTRING = 256


@dataclass
class Pdu:
    command: Command
    sequence: int = 0
    status: int = 0
    params: dict[str, int | str | bytes] = field(default_factory=dict)
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def text(self, name: str) -> str:
        value = self.params.get(name, "")
        return value if isinstance(value, str) else ""

    def number(self, name: str) -> int:
        value = self.params.get(name, 0)
        return value if isinstance(value, int) else 0

    def octets(self, name: str) -> bytes:
        value = self.params.get(name, b"")
        return value if isinstance(value, bytes) else b""


def encode_pdu(pdu: Pdu) -> bytes:
    body = bytearray()
    fields = () if (pdu.command.is_response and pdu.status and pdu.command is not Command.GENERIC_NACK) \
        else BODY.get(pdu.command, ())
    for name, kind, limit in fields:
        value = pdu.params.get(name)
        if kind == "c":
            text = (value if isinstance(value, str) else "").encode("ascii")
            if len(text) > limit - 1:  # the limit counts the NUL
                raise PduError(f"{pdu.command.name}.{name} is longer than {limit - 1} characters")
            body += text + b"\0"
        elif kind == "1":
            body.append(int(value or 0) & 0xFF)
        else:
            octets = value if isinstance(value, bytes) else b""
            if len(octets) > limit:
                raise PduError(f"short_message of {len(octets)} octets; use message_payload")
            body.append(len(octets))
            body += octets
    for tag, value in pdu.tlvs.items():
        body += struct.pack(">HH", tag, len(value)) + value
    return HEADER.pack(HEADER.size + len(body), pdu.command, pdu.status, pdu.sequence) + bytes(body)


def frame_length(buffer: bytes | bytearray) -> int | None:
    """The length of the PDU at the start of `buffer`, None while fewer than 4 octets are there."""
    if len(buffer) < 4:
        return None
    length = int.from_bytes(buffer[:4], "big")
    if not HEADER.size <= length <= MAX_PDU:
        raise PduError(f"PDU length {length} outside {HEADER.size}..{MAX_PDU}")
    return length


def decode_pdu(data: bytes) -> Pdu:
    """One PDU, framed by `frame_length`. A request must carry all its mandatory fields; a response may stop
    short (error responses, and some SMSCs' others, carry no body)."""
    length, command_id, status, sequence = HEADER.unpack_from(data)
    if length != len(data):
        raise PduError(f"PDU length {length} does not match its {len(data)} octets")
    command = _COMMANDS.get(command_id)
    if command is None:
        raise PduError(f"unknown command_id 0x{command_id:08X}", Status.ESME_RINVCMDID)
    pdu = Pdu(command, sequence, status)
    position = HEADER.size
    end_of_body = len(data)
    for name, kind, _ in BODY.get(command, ()):
        if position >= end_of_body:
            if command_id & RESPONSE_BIT:
                break
            raise PduError(f"{command.name} ends before its {name}")
        if kind == "c":
            end = data.find(b"\0", position, position + _LENIENT_CSTRING)
            if end < 0:
                raise PduError(f"{command.name}.{name} has no terminating NUL", Status.ESME_RINVPARLEN)
            pdu.params[name] = data[position:end].decode("latin-1")
            position = end + 1
        elif kind == "1":
            pdu.params[name] = data[position]
            position += 1
        else:
            size = data[position]
            if position + 1 + size > end_of_body:
                raise PduError(f"{command.name}.short_message runs past the PDU", Status.ESME_RINVMSGLEN)
            pdu.params[name] = bytes(data[position + 1:position + 1 + size])
            position += 1 + size
    while position < end_of_body:
        if position + 4 > end_of_body:
            raise PduError(f"{command.name}: a truncated TLV header", Status.ESME_RINVOPTPARSTREAM)
        tag, size = _TLV_HEADER.unpack_from(data, position)
        if position + 4 + size > end_of_body:
            raise PduError(f"{command.name}: TLV 0x{tag:04X} runs past the PDU", Status.ESME_RINVOPTPARSTREAM)
        pdu.tlvs[tag] = bytes(data[position + 4:position + 4 + size])
        position += 4 + size
    return pdu
