"""Unit tests of the GSM 03.38 / UCS-2 encoder and segmenter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_sendsms.core.encoding import (
    GSM_BASIC,
    GSM_EXTENSION,
    Coding,
    concat_udh,
    decode_gsm7,
    encode_message,
    pack_septets,
    unpack_septets,
)
from asterisk_sendsms.core.errors import InvalidParameter


def gsm_text(message_segments: tuple[object, ...]) -> str:
    return "".join(s.text for s in message_segments)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "coding", "sizes"), [
    ("a" * 160, Coding.GSM7, [160]),
    ("a" * 161, Coding.GSM7, [153, 8]),
    ("a" * 306, Coding.GSM7, [153, 153]),
    ("a" * 307, Coding.GSM7, [153, 153, 1]),
    ("€" * 80, Coding.GSM7, [160]),  # extension characters count two septets
    ("ж" * 70, Coding.UCS2, [140]),
    ("ж" * 71, Coding.UCS2, [134, 8]),
    ("ж" * 134, Coding.UCS2, [134, 134]),
])
def test_boundary_lengths(text: str, coding: Coding, sizes: list[int]) -> None:
    encoded = encode_message(text, 10)
    assert encoded.coding is coding
    assert [len(s.payload) for s in encoded.segments] == sizes


def test_escape_pair_is_never_split() -> None:
    # 81 euro signs = 162 septets: 76 fit a 153-septet part (152), the 77th would split its escape.
    encoded = encode_message("€" * 81, 10)
    assert [len(s.payload) for s in encoded.segments] == [152, 10]
    assert all(not s.payload.endswith(b"\x1b") for s in encoded.segments)
    assert [s.text for s in encoded.segments] == ["€" * 76, "€" * 5]


def test_surrogate_pair_is_never_split() -> None:
    encoded = encode_message("😀" * 35, 10)
    assert encoded.coding is Coding.UCS2 and encoded.part_count == 1  # 70 UTF-16 units
    encoded = encode_message("😀" * 40, 10)  # 80 units: 33 emoji (66 units) fit a 67-unit part
    assert [len(s.text) for s in encoded.segments] == [33, 7]
    for segment in encoded.segments:
        assert segment.payload.decode("utf-16-be") == segment.text


def test_one_non_gsm_character_makes_the_whole_message_ucs2() -> None:
    assert encode_message("Hello world", 1).coding is Coding.GSM7
    assert encode_message("Hello wörld", 1).coding is Coding.GSM7  # ö is in the default alphabet
    assert encode_message("Hello wőrld", 1).coding is Coding.UCS2  # ő is not


def test_too_many_parts_and_empty_text_are_invalid_parameters() -> None:
    with pytest.raises(InvalidParameter, match="needs 3 SMS parts, at most 2"):
        encode_message("a" * 307, 2)
    with pytest.raises(InvalidParameter, match="'Message'"):
        encode_message("", 2)


def test_septet_packing_known_vector() -> None:
    septets = encode_message("hellohello", 1).segments[0].payload
    assert pack_septets(septets).hex().upper() == "E8329BFD4697D9EC37"
    assert unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10) == septets


def test_concat_udh() -> None:
    assert concat_udh(0x1A2, 3, 1) == bytes.fromhex("050003A20301")


gsm_chars = st.sampled_from(sorted(set(GSM_BASIC.replace("\x1b", "")) | set(GSM_EXTENSION)))


@given(st.text(gsm_chars, min_size=1, max_size=1200))
def test_gsm_round_trip(text: str) -> None:
    encoded = encode_message(text, 255)
    assert encoded.coding is Coding.GSM7
    assert "".join(s.text for s in encoded.segments) == text
    assert decode_gsm7(b"".join(s.payload for s in encoded.segments)) == text
    limit = 160 if encoded.part_count == 1 else 153
    for segment in encoded.segments:
        assert 0 < len(segment.payload) <= limit
        assert decode_gsm7(segment.payload) == segment.text


@given(st.text(min_size=1, max_size=700).filter(lambda t: any(ord(c) > 0xFF for c in t)))
def test_ucs2_round_trip(text: str) -> None:
    encoded = encode_message(text, 255)
    if encoded.coding is Coding.UCS2:
        assert "".join(s.payload.decode("utf-16-be", "surrogatepass") for s in encoded.segments) == text
        limit = 140 if encoded.part_count == 1 else 134
        assert all(0 < len(s.payload) <= limit for s in encoded.segments)


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    assert unpack_septets(pack_septets(septets, fill), len(septets), fill) == septets
