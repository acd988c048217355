"""The OzML parser: the seed's script, every command, and hostile documents refused without harm."""

from __future__ import annotations

import tracemalloc

import pytest

from asterisk_sendsms.wire.ozml import (
    BlindTransfer,
    Delay,
    GoTo,
    Hangup,
    OzmlError,
    Play,
    Record,
    Reject,
    SendDtmf,
    SendSms,
    Speak,
    Unknown,
    UserInput,
    parse_ozml,
)

SEED = ('<?xml version="1.0"?> <Response> <Speak>An SMS will be sent to +062554670.</Speak> '
        '<SendSms Recipient="+062554670">Hello! How are you?</SendSms> <Speak>The SMS has been sent.</Speak> '
        '<Hangup></Hangup> </Response>')


def test_the_seed_script() -> None:
    assert parse_ozml(SEED) == (Speak("An SMS will be sent to +062554670."),
                                SendSms("+062554670", "Hello! How are you?"), Speak("The SMS has been sent."),
                                Hangup())


def test_every_command() -> None:
    script = """<Response>
      <Play>custom/welcome</Play>
      <UserInput ForwardToUrl="http://app/dtmf" Timeout="8" MaxDigits="4" Terminator="*">
        <Speak Voice="en-us">Enter your PIN</Speak>
      </UserInput>
      <GoTo Url="http://app/next"/>
      <Delay Value="1.5"/>
      <Record ForwardToUrl="http://app/rec" MaxLength="30"/>
      <SendDTMF>12#</SendDTMF>
      <BlindTransfer>sales,100</BlindTransfer>
      <Reject Reason="busy"/>
      <SendSms Recipient="+3620" Sender="ACME" DeliveryReportURL="http://app/dlr">Hi</SendSms>
      <Dance/>
    </Response>"""
    assert parse_ozml(script) == (
        Play("custom/welcome"), UserInput("http://app/dtmf", 8.0, 4, "*", (Speak("Enter your PIN", "en-us"),)),
        GoTo("http://app/next"), Delay(1.5), Record("http://app/rec", 30.0), SendDtmf("12#"),
        BlindTransfer("sales,100"), Reject("busy"), SendSms("+3620", "Hi", "ACME", "http://app/dlr"),
        Unknown("Dance", 13))


@pytest.mark.parametrize(("script", "message"), [
    ("<Response><SendSms>no recipient</SendSms></Response>", "line 1, <SendSms>: Recipient is missing"),
    ("<Response>\n<Delay Value='soon'/></Response>", "line 2, <Delay>: Value='soon' is not a number"),
    ("<Response><UserInput ForwardToUrl='x'><Hangup/></UserInput></Response>", "only <Speak> and <Play>"),
    ("<Response><SendDTMF>12x</SendDTMF></Response>", "not DTMF"),
    ("<Script/>", "an OzML script is a <Response>"),
    ("<Response><Speak>unclosed</Response>", "not well-formed"),
])
def test_errors_name_line_and_element(script: str, message: str) -> None:
    with pytest.raises(OzmlError, match=message.replace("(", r"\(").replace("<", "<")):
        parse_ozml(script)


def test_xxe_reads_no_file(tmp_path: object) -> None:
    xxe = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<Response><Speak>&x;</Speak></Response>')
    with pytest.raises(OzmlError, match="document type declarations"):
        parse_ozml(xxe)
    network = '<Response xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="http://10.0.0.1/x"/></Response>'
    commands = parse_ozml(network)  # XInclude is never processed: an unknown element, nothing fetched
    assert len(commands) == 1 and isinstance(commands[0], Unknown)


def test_billion_laughs_and_huge_or_deep_input_stay_bounded() -> None:
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{i} "{"&lol{};".format(i - 1 if i > 1 else "") * 10}">' for i in range(1, 10))
              + ']><Response><Speak>&lol9;</Speak></Response>')
    tracemalloc.start()
    for document in (laughs, "<Response>" + "<Delay Value='1'/>" * 50000 + "</Response>",
                     "<Response>" + "<UserInput ForwardToUrl='x'>" * 40 + "</UserInput>" * 40 + "</Response>",
                     "<Response><Speak>" + "a" * 300_000 + "</Speak></Response>"):
        with pytest.raises(OzmlError):
            parse_ozml(document)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024 * 1024  # refused before anything was expanded or built


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(OzmlError):
        parse_ozml(b'<?xml version="1.0" encoding="utf-8"?><Response><Speak>\xff\xfe</Speak></Response>')
