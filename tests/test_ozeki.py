"""Unit tests of the Ozeki protocol core: form decoding and the XML reply."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote_plus, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from asterisk_sendsms.core.errors import InvalidParameter, ParseError
from asterisk_sendsms.wire.ozeki import (
    SUCCESS_MESSAGE,
    command_result,
    form_encode,
    merge_params,
    parse_form,
    send_sms_params,
)

from .conftest import SEED_QUERY


def test_seed_query_decodes() -> None:
    params = send_sms_params(parse_form(SEED_QUERY))
    assert params.username == "HTTP_User_1" and params.password == "qwe123"
    assert params.sender == "+0615546669" and params.recipient == "+0615546670"
    assert params.message == "Hello world"
    assert params.delivery_report_url == "http://yourapp.com/smsdelivered.php"


def test_names_are_case_insensitive_and_misspelling_accepted() -> None:
    params = send_sms_params(parse_form("RECIPIENT=%2B3620&mEsSaGe=hi&DelivaryReportURL=http%3A%2F%2Fa%2Fb"))
    assert params.recipient == "+3620" and params.message == "hi" and params.delivery_report_url == "http://a/b"


def test_unencoded_plus_in_numbers() -> None:
    params = send_sms_params(parse_form("Recipient=+3620&Sender=+3630&Message=1+%2B+1"))
    assert (params.recipient, params.sender, params.message) == ("+3620", "+3630", "1 + 1")


def test_utf8_and_charset() -> None:
    assert parse_form("Message=%C3%A1rv%C3%ADz")["message"] == "árvíz"
    assert parse_form(b"Message=%E1rv%EDz", "iso-8859-1")["message"] == "árvíz"
    with pytest.raises(ParseError):
        parse_form("Message=%E1rv%EDz")
    with pytest.raises(ParseError):
        parse_form(b"Message=\xff")


def test_conflicting_duplicates_are_refused() -> None:
    assert parse_form("a=1&A=1") == {"a": "1"}
    with pytest.raises(ParseError, match="'A' is given twice"):
        parse_form("a=1&A=2")


@pytest.mark.parametrize(("query", "name"), [("Message=hi", "Recipient"), ("Recipient=%2B3620&Message=", "Message"),
                                             ("Recipient=%20&Message=x", "Recipient")])
def test_missing_parameters(query: str, name: str) -> None:
    with pytest.raises(InvalidParameter, match=f"'{name}'"):
        send_sms_params(parse_form(query))


def test_reply_has_the_seed_shape() -> None:
    body = command_result("SendSms", 200, SUCCESS_MESSAGE, SmsId="6b5c6978-0cd6-4a58-86fc-3d1b279b9201")
    assert body.startswith(b'<?xml version="1.0"?>\n<OzApi_CommandResult_SendSms xmlns:xsd="http://www.w3.org/2001/'
                           b'XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">')
    root = etree.fromstring(body)
    assert [child.tag for child in root] == ["Code", "Message", "SmsId"]
    assert [child.text for child in root] == ["200", "Command successfully executed",
                                              "6b5c6978-0cd6-4a58-86fc-3d1b279b9201"]


def lxml_reply(name: str, code: int, message: str, **values: str) -> bytes:
    """The reply as lxml serialises it, the reference the text writer must match byte for byte."""
    not_xml = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    root = etree.Element(name, nsmap={"xsd": "http://www.w3.org/2001/XMLSchema",
                                      "xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    etree.SubElement(root, "Code").text = str(code)
    for element, value in {"Message": message, **values}.items():
        etree.SubElement(root, element).text = not_xml.sub("\ufffd", value)
    return b'<?xml version="1.0"?>\n' + etree.tostring(root, encoding="utf-8")


@given(st.text(), st.text(), st.sampled_from([200, 302, 305, 500]))
def test_reply_is_what_lxml_writes(message: str, value: str, code: int) -> None:
    assert command_result("SendSms", code, message, SmsId=value) == lxml_reply(
        "OzApi_CommandResult_SendSms", code, message, SmsId=value)
    assert command_result(None, code, message) == lxml_reply("OzApi_CommandResult", code, message)


def test_error_reply_has_no_sms_id_and_a_safe_element_name() -> None:
    root = etree.fromstring(command_result("<bad name>", 301, "Command '<bad name>' is not implemented"))
    assert root.tag == "OzApi_CommandResult"
    assert root.findtext("Code") == "301" and root.find("SmsId") is None
    assert root.findtext("Message") == "Command '<bad name>' is not implemented"


@given(st.lists(st.tuples(st.text(), st.text()), max_size=8), st.sampled_from(["&", "&&", "=&"]),
       st.booleans())
def test_form_decoding_is_what_parse_qsl_decodes(fields: list[tuple[str, str]], glue: str, raw: bool) -> None:
    query = glue.join(f"{n}={v}" if raw else f"{quote_plus(n)}={quote_plus(v)}" for n, v in fields)
    try:
        expected: dict[str, str] | str = merge_params(parse_qsl(query, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ParseError) as exc:
        expected = type(exc).__name__
    try:
        got: dict[str, str] | str = parse_form(query)
    except ParseError as exc:
        got = "UnicodeDecodeError" if "not valid" in exc.message else type(exc).__name__
    assert got == expected


@given(st.dictionaries(st.text(), st.text() | st.sampled_from(["SMSDeliveryReport", "+3620", "2026-12-01T10:00:00Z"])))
def test_form_encoding_is_what_urlencode_writes(fields: dict[str, str]) -> None:
    assert form_encode(fields) == urlencode(fields).encode()
