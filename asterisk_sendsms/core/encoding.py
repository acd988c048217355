"""Message text encoding shared by every transport: GSM 03.38 (with its extension table) or UCS-2, and
segmentation into concatenated parts that never split an escape pair or a surrogate pair."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from asterisk_sendsms.core.errors import InvalidParameter

__all__ = [
    "Coding",
    "EncodedMessage",
    "Segment",
    "concat_udh",
    "decode_gsm7",
    "encode_message",
    "gsm7_septets",
    "pack_septets",
    "unpack_septets",
]

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
GSM_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D,
                 "]": 0x3E, "|": 0x40, "€": 0x65}

_BASIC_CODE = {ch: code for code, ch in enumerate(GSM_BASIC) if code != ESCAPE}
_BASIC_CHAR = dict(enumerate(GSM_BASIC))
_EXTENSION_CHAR = {code: ch for ch, code in GSM_EXTENSION.items()}


class _SeptetTable(dict[int, str]):
    """For `str.translate`: each GSM character becomes its septets (one code point each, all below 0x80);
    any other character becomes U+FFFF, so a text is GSM exactly when its translation is ASCII."""

    def __missing__(self, key: int) -> str:
        return "\uffff"


_SEPTETS = _SeptetTable({ord(ch): chr(code) for ch, code in _BASIC_CODE.items()})
_SEPTETS.update({ord(ch): chr(ESCAPE) + chr(code) for ch, code in GSM_EXTENSION.items()})

# One SMS carries 140 octets of user data. A concatenation UDH (8-bit reference) takes 6 of them.
USER_DATA_OCTETS = 140
CONCAT_UDH_OCTETS = 6
GSM7_SINGLE = 160
GSM7_PART = 153  # (140 - 6) * 8 // 7 septets, the fill bit included
UCS2_SINGLE = 70
UCS2_PART = 67  # (140 - 6) // 2 UTF-16 code units


class Coding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@dataclass(frozen=True, slots=True)
class Segment:
    """One part's text and its payload: GSM septets one per octet (unpacked), or UTF-16-BE octets."""

    text: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    coding: Coding
    segments: tuple[Segment, ...]

    @property
    def part_count(self) -> int:
        return len(self.segments)


def gsm7_septets(char: str) -> bytes | None:
    """The septets of one character in the GSM default alphabet, or None if it has none."""
    code = _BASIC_CODE.get(char)
    if code is not None:
        return bytes((code,))
    ext = GSM_EXTENSION.get(char)
    if ext is not None:
        return bytes((ESCAPE, ext))
    return None


def _gsm7_units(text: str) -> list[bytes]:
    """The septets of each character of a text known to be GSM."""
    return [_SEPTETS[ord(char)].encode("ascii") for char in text]


def _ucs2_units(text: str) -> list[bytes]:
    # A character outside the BMP is one unit of four octets (a surrogate pair) so it is never split.
    return [char.encode("utf-16-be") for char in text]


def _split(text: str, units: list[bytes], single: int, part: int, width: int,
           max_parts: int) -> tuple[Segment, ...]:
    total = sum(len(u) for u in units) // width
    limit = single if total <= single else part
    segments: list[Segment] = []
    start, used, payload = 0, 0, bytearray()
    for index, unit in enumerate(units):
        size = len(unit) // width
        if used + size > limit:
            segments.append(Segment(text[start:index], bytes(payload)))
            start, used, payload = index, 0, bytearray()
        payload += unit
        used += size
    segments.append(Segment(text[start:], bytes(payload)))
    if len(segments) > max_parts:
        raise InvalidParameter(
            "Message", reason=f"text needs {len(segments)} SMS parts, at most {max_parts} are allowed")
    return tuple(segments)


def encode_message(text: str, max_parts: int) -> EncodedMessage:
    """GSM 7-bit when every character has a septet code, UCS-2 otherwise; split into parts as needed."""
    if not text:
        raise InvalidParameter("Message", reason="the message text is empty")
    # Most texts fit one part: encoded whole at C speed (this runs at accept and again at dispatch).
    septets = text.translate(_SEPTETS)
    if septets.isascii():
        if len(septets) <= GSM7_SINGLE:
            return EncodedMessage(Coding.GSM7, (Segment(text, septets.encode("ascii")),))
        return EncodedMessage(Coding.GSM7, _split(text, _gsm7_units(text), GSM7_SINGLE, GSM7_PART, 1, max_parts))
    utf16 = text.encode("utf-16-be")
    if len(utf16) <= 2 * UCS2_SINGLE:
        return EncodedMessage(Coding.UCS2, (Segment(text, utf16),))
    return EncodedMessage(Coding.UCS2, _split(text, _ucs2_units(text), UCS2_SINGLE, UCS2_PART, 2, max_parts))


def decode_gsm7(septets: bytes) -> str:
    out: list[str] = []
    escaped = False
    for code in septets:
        if escaped:
            # An unknown escape shows the basic character, as 03.38 asks receivers to do.
            out.append(_EXTENSION_CHAR.get(code, _BASIC_CHAR[code & 0x7F]))
            escaped = False
        elif code == ESCAPE:
            escaped = True
        else:
            out.append(_BASIC_CHAR[code & 0x7F])
    return "".join(out)


def concat_udh(reference: int, total: int, sequence: int) -> bytes:
    """The 8-bit-reference concatenation UDH, length octet included; `sequence` counts from 1."""
    return bytes((0x05, 0x00, 0x03, reference & 0xFF, total, sequence))


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets into octets, LSB first, after `fill_bits` zero bits (the UDH padding in a PDU)."""
    acc, bits, out = 0, fill_bits, bytearray()
    for septet in septets:
        acc |= (septet & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(octets: bytes, count: int, fill_bits: int = 0) -> bytes:
    value = int.from_bytes(octets, "little") >> fill_bits
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))
