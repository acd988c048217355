"""The SMPP codec and receipt parser against the recorded SMSC exchanges and against smpplib's encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import smpplib.command
from hypothesis import given
from hypothesis import strategies as st

from asterisk_sendsms.core.model import PartOutcome
from asterisk_sendsms.wire.smpp.pdu import (
    Command,
    Pdu,
    PduError,
    Tlv,
    decode_pdu,
    encode_pdu,
    frame_length,
    relative_time,
)
from asterisk_sendsms.wire.smpp.receipts import (
    Delivery,
    IdForm,
    MoText,
    canonical_id,
    decode_mo,
    delivery,
    parse_receipt,
    receipt_key,
    submit_key,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "smpp"


def recorded(name: str) -> list[bytes]:
    lines = (FIXTURES / name).read_text().splitlines()
    hex_lines = [line.strip() for line in lines if line.startswith("   ")]
    return [bytes.fromhex(line) for line in hex_lines if not line.startswith("text")]


@pytest.mark.parametrize("name", ["smscsim-receipt.txt", "smppsim-receipt.txt"])
def test_every_recorded_pdu_decodes_and_round_trips(name: str) -> None:
    for raw in recorded(name):
        pdu = decode_pdu(raw)
        if pdu.text("service_type") == "smscsim":
            continue  # 8 octets where SMPP allows 6: accepted on input, never written by us
        assert encode_pdu(pdu) == raw, pdu


def test_our_submit_is_the_recorded_one() -> None:
    submit = Pdu(Command.SUBMIT_SM, 2, params={
        "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "15550001111", "dest_addr_ton": 1,
        "dest_addr_npi": 1, "destination_addr": "15550002222", "registered_delivery": 1,
        "short_message": b"Your receipt: 12.50 EUR"})
    assert encode_pdu(submit) == recorded("smscsim-receipt.txt")[2]


@given(st.text(st.characters(codec="ascii", exclude_characters="\0"), max_size=20),
       st.binary(max_size=254), st.integers(0, 255), st.integers(0, 0x7FFFFFFF))
def test_submit_sm_matches_smpplib_byte_for_byte(address: str, message: bytes, coding: int, sequence: int) -> None:
    class Sequence:
        def next_sequence(self) -> int:
            return sequence
    params = {"source_addr": address[:20], "destination_addr": "36201234567", "esm_class": 0x40,
              "data_coding": coding, "registered_delivery": 1, "short_message": message}
    theirs = smpplib.command.SubmitSM("submit_sm", client=Sequence(), **params)
    theirs.sequence = sequence
    ours = Pdu(Command.SUBMIT_SM, sequence, params=dict(params))
    assert encode_pdu(ours) == theirs.generate()


@pytest.mark.parametrize(("name", "key", "form"), [
    ("smscsim-receipt.txt", "8674665223082153551", IdForm.SAME),
    ("smppsim-receipt.txt", "0", IdForm.SAME),
])
def test_recorded_receipts(name: str, key: str, form: IdForm) -> None:
    response, receipt_pdu = (decode_pdu(raw) for raw in recorded(name)[3:5])
    receipt = parse_receipt(receipt_pdu, form)
    assert receipt is not None
    assert receipt.key == submit_key(response.text("message_id"), form) == key
    assert receipt.outcome is PartOutcome.DELIVERED and receipt.error_code == ""
    assert receipt.fields["submit date"] == "2611250214"


def receipt(text: str, tlvs: dict[int, bytes] | None = None) -> Pdu:
    return Pdu(Command.DELIVER_SM, 1, params={"esm_class": 4, "short_message": text.encode()}, tlvs=tlvs or {})


@pytest.mark.parametrize(("text", "outcome", "error"), [
    ("id:1 sub:001 dlvrd:000 submit date:2611250214 done date:2611250215 stat:UNDELIV err:005 text:hi",
     PartOutcome.UNDELIVERED, "005"),
    ("ID:1 SUB:001 DLVRD:000 SUBMIT DATE:2611250214 DONE DATE:2611250215 STAT:EXPIRED ERR:000 TEXT:hi",
     PartOutcome.EXPIRED, "000"),
    ("id:1 stat:ENROUTE err:000", PartOutcome.ENROUTE, "000"),
    ("id:1 stat:ACCEPTD err:0", PartOutcome.ACCEPTED, "0"),
    ("id:1 stat:DELETED err:0", PartOutcome.DELETED, "0"),
    ("id:1 stat:UNKNOWN err:0", PartOutcome.UNKNOWN, "0"),
    ("id:1 stat:REJECTD err:0b", PartOutcome.REJECTED, "0b"),
])
def test_receipt_states(text: str, outcome: PartOutcome, error: str) -> None:
    parsed = parse_receipt(receipt(text), IdForm.SAME)
    assert parsed is not None and (parsed.outcome, parsed.error_code) == (outcome, error)


def test_tlvs_win_and_text_id_bases() -> None:
    text = "id:4660 sub:001 dlvrd:001 submit date:2611250214 done date:2611250215 stat:DELIVRD err:000 Text:x"
    # submit_sm_resp said 0x1234 = 4660: the TLV repeats the hex form, the text uses decimal.
    with_tlv = receipt(text, {Tlv.RECEIPTED_MESSAGE_ID: b"00001234\0", Tlv.MESSAGE_STATE: b"\x05"})
    parsed = parse_receipt(with_tlv, IdForm.HEX_DEC)
    assert parsed is not None and parsed.key == submit_key("00001234", IdForm.HEX_DEC) == "4660"
    assert parsed.outcome is PartOutcome.UNDELIVERED  # message_state 5 beats stat:DELIVRD
    text_only = parse_receipt(receipt(text), IdForm.HEX_DEC)
    assert text_only is not None and text_only.key == "4660"


# A deliver_sm as it is on the wire (58 octets, sequence 1), from 3620 to 1234, esm_class ESM, with the text
# "id:7 stat:DELIVRD": service_type, source ton/npi/addr, dest ton/npi/addr, esm_class, protocol_id, priority,
# schedule_delivery_time, validity_period, registered_delivery, replace_if_present, data_coding,
# sm_default_msg_id, sm_length, short_message.
DELIVER_SM = ("0000003a 00000005 00000000 00000001 00 0101 3336323000 0101 3132333400 {esm:02x} 00 00 00 00 00 00"
              " 00 00 11 69643a3720737461743a44454c49565244")
# The same with the text "id:7 text:" (49 octets): no state in it
DELIVER_SM_WITHOUT_STATE = ("00000031 00000005 00000000 00000001 00 0101 3336323000 0101 3132333400 {esm:02x} 00 00"
                            " 00 00 00 00 00 00 0a 69643a3720746578743a")


def literal_deliver_sm(esm_class: int, tlvs: str = "", template: str = DELIVER_SM) -> Pdu:
    raw = bytearray(bytes.fromhex(template.format(esm=esm_class) + tlvs))
    raw[0:4] = len(raw).to_bytes(4, "big")  # what the literal says, plus the TLVs
    return decode_pdu(bytes(raw))


@pytest.mark.parametrize(("esm_class", "kind"), [
    (0x00, Delivery.MESSAGE),
    (0x04, Delivery.RECEIPT),  # SMSC delivery receipt
    (0x08, Delivery.RECEIPT),  # SME delivery acknowledgement
    (0x10, Delivery.MESSAGE),  # SME manual/user acknowledgement: the user's answer
    (0x18, Delivery.CONVERSATION_ABORT),
    (0x20, Delivery.INTERMEDIATE),  # intermediate delivery notification
    (0x0C, Delivery.RESERVED), (0x14, Delivery.RESERVED), (0x24, Delivery.RESERVED), (0x3C, Delivery.RESERVED),
    (0x44, Delivery.RECEIPT),  # the GSM bits (7-6) and the mode bits (1-0) do not change the type
    (0xC7, Delivery.RECEIPT),
])
def test_esm_class_message_types(esm_class: int, kind: Delivery) -> None:
    pdu = literal_deliver_sm(esm_class)
    assert pdu.command is Command.DELIVER_SM and pdu.octets("short_message") == b"id:7 stat:DELIVRD"
    assert delivery(pdu) is kind


def test_an_intermediate_notification_is_never_final() -> None:
    notification = literal_deliver_sm(0x20, tlvs="0427 0001 02")  # message_state DELIVERED, in a 0x20
    parsed = parse_receipt(notification, IdForm.SAME, intermediate=True)
    assert parsed is not None and parsed.key == "7" and parsed.outcome is PartOutcome.ENROUTE
    without_state = literal_deliver_sm(0x20, template=DELIVER_SM_WITHOUT_STATE)
    assert without_state.octets("short_message") == b"id:7 text:"
    notified = parse_receipt(without_state, IdForm.SAME, intermediate=True)
    assert notified is not None and notified.outcome is PartOutcome.ENROUTE
    assert parse_receipt(without_state, IdForm.SAME) is None  # a receipt must name a state


@pytest.mark.parametrize(("state", "outcome"), [
    (1, PartOutcome.ENROUTE), (2, PartOutcome.DELIVERED), (3, PartOutcome.EXPIRED), (4, PartOutcome.DELETED),
    (5, PartOutcome.UNDELIVERED), (6, PartOutcome.ACCEPTED), (7, PartOutcome.UNKNOWN), (8, PartOutcome.REJECTED),
])
def test_message_state_tlv(state: int, outcome: PartOutcome) -> None:
    parsed = parse_receipt(literal_deliver_sm(0x04, tlvs=f"0427 0001 {state:02x}"), IdForm.SAME)
    assert parsed is not None and parsed.outcome is outcome
    assert parsed.outcome.final is (state != 1)  # Appendix B: every state but ENROUTE is final


def test_unusable_receipts() -> None:
    assert parse_receipt(receipt("stat:DELIVRD"), IdForm.SAME) is None
    assert parse_receipt(receipt("id:5 stat:SOMETHING"), IdForm.SAME) is None


@given(st.integers(0, 2**64))
def test_id_forms_meet(number: int) -> None:
    assert submit_key(f"{number:X}", IdForm.HEX_DEC) == receipt_key(str(number), IdForm.HEX_DEC)
    assert submit_key(f"{number:016x}", IdForm.HEX_DEC) == receipt_key(f"{number:020d}", IdForm.HEX_DEC)
    assert submit_key(str(number), IdForm.DEC_HEX) == receipt_key(f"{number:x}", IdForm.DEC_HEX)
    assert submit_key(f"{number:08X}", IdForm.SAME) == receipt_key(f"{number:x}", IdForm.SAME)


@given(st.text(max_size=30))
def test_canonical_id_is_idempotent(raw: str) -> None:
    once = canonical_id(raw)
    assert canonical_id(once) == once


@given(st.text(max_size=300))
def test_receipt_parser_never_crashes(text: str) -> None:
    parse_receipt(receipt(text.encode("utf-8", "replace").decode("latin-1")), IdForm.SAME)


@given(st.sampled_from(list(Command)), st.binary(max_size=300))
def test_decoder_never_crashes_on_garbage(command: Command, body: bytes) -> None:
    framed = (len(body) + 16).to_bytes(4, "big") + command.to_bytes(4, "big") + bytes(8) + body
    try:
        decode_pdu(framed)
    except PduError:
        pass


def test_framing_refuses_absurd_lengths() -> None:
    assert frame_length(b"\0\0") is None
    with pytest.raises(PduError):
        frame_length(b"\xff\xff\xff\xff")
    with pytest.raises(PduError):
        frame_length(b"\0\0\0\x01")


def test_incoming_text_and_concatenation() -> None:
    emoji = "😀".encode("utf-16-be")
    udh16 = Pdu(Command.DELIVER_SM, params={
        "esm_class": 0x40, "data_coding": 8, "short_message": bytes.fromhex("06080401020302") + emoji})
    assert decode_mo(udh16) == MoText("😀", 0x0102, 3, 2)
    sar = Pdu(Command.DELIVER_SM, params={"short_message": bytes([0x1B, 0x65])},
              tlvs={Tlv.SAR_MSG_REF_NUM: b"\x00\x07", Tlv.SAR_TOTAL_SEGMENTS: b"\x02", Tlv.SAR_SEGMENT_SEQNUM: b"\x01"})
    assert decode_mo(sar) == MoText("€", 7, 2, 1)
    nonsense = Pdu(Command.DELIVER_SM,
                   params={"esm_class": 0x40, "short_message": bytes.fromhex("050003010205") + b"x"})
    assert decode_mo(nonsense) == MoText("x")  # part 5 of 2: taken as a whole message


@pytest.mark.parametrize(("seconds", "text"), [
    (1, "000000000001000R"), (90, "000000000130000R"), (3661, "000000010101000R"), (7 * 86400, "000007000000000R"),
])
def test_relative_time(seconds: int, text: str) -> None:
    assert relative_time(seconds) == text and len(text) == 16  # a C-Octet String of 17 with its NUL
