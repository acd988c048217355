"""The Ozeki HTTP API protocol, without I/O: form decoding with Ozeki's leniencies (case-insensitive names,
the `DelivaryReportURL` spelling, `+` in numbers) and the `OzApi_CommandResult_*` XML reply."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from lxml import etree

from .errors import InvalidParameter, ParseError

__all__ = ["CallParams", "SendSmsParams", "call_params", "command_result", "merge_params", "parse_form",
           "send_sms_params"]

XSD = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SUCCESS_MESSAGE = "Command successfully executed"
MAX_FIELDS = 64
_COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# Characters XML 1.0 cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF): an error message that
# quotes the caller's input must still make a well-formed reply.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def parse_form(data: bytes | str, charset: str = "utf-8") -> dict[str, str]:
    """Decode `application/x-www-form-urlencoded` data into lower-cased names. A name given twice with
    different values is refused: guessing which one the caller meant could send the wrong text."""
    try:
        text = data.decode(charset) if isinstance(data, bytes) else data
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict",
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, LookupError):
        raise ParseError(f"the request is not valid {charset} text") from None
    except ValueError:
        raise ParseError(f"more than {MAX_FIELDS} parameters") from None
    return merge_params(pairs)


def merge_params(*sources: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source in sources:
        for name, value in (source.items() if isinstance(source, Mapping) else source):
            key = name.lower()
            if key in merged and merged[key] != value:
                raise ParseError(f"parameter '{name}' is given twice with different values")
            merged[key] = value
    return merged


@dataclass(frozen=True, slots=True)
class CallParams:
    username: str | None
    password: str | None
    dialed: str
    url: str
    caller_id: str | None


def call_params(params: Mapping[str, str]) -> CallParams:
    dialed = (params.get("dialed") or "").strip()
    if not dialed:
        raise InvalidParameter("Dialed", "Call")
    url = (params.get("url") or "").strip()
    if not url:
        raise InvalidParameter("Url", "Call")
    return CallParams(params.get("username"), params.get("password"), _number(dialed) or dialed, url,
                      _number(params.get("callerid")) or None)


@dataclass(frozen=True, slots=True)
class SendSmsParams:
    username: str | None
    password: str | None
    sender: str | None
    recipient: str
    message: str
    delivery_report_url: str | None


def _number(value: str | None) -> str | None:
    # An unencoded '+' arrives as a space after form decoding; in a number it can only have been a '+'.
    if value is not None and value.startswith(" ") and value[1:2].isdigit():
        return "+" + value[1:]
    return value


def send_sms_params(params: Mapping[str, str]) -> SendSmsParams:
    recipient = _number(params.get("recipient"))
    if not recipient or not recipient.strip():
        raise InvalidParameter("Recipient")
    message = params.get("message")
    if message is None or message == "":
        raise InvalidParameter("Message", reason="the message text is empty")
    report_url = params.get("deliveryreporturl") or params.get("delivaryreporturl") or None
    return SendSmsParams(
        username=params.get("username"), password=params.get("password"),
        sender=_number(params.get("sender")) or None, recipient=recipient, message=message,
        delivery_report_url=report_url)


def command_result(command: str | None, code: int, message: str, **values: str) -> bytes:
    """The reply document, exactly as Ozeki writes it: declaration, both namespace declarations, Code,
    Message and, on success, the command's values (SmsId, CallId)."""
    name = "OzApi_CommandResult"
    if command and _COMMAND_NAME.fullmatch(command):
        name += "_" + command
    root = etree.Element(name, nsmap={"xsd": XSD, "xsi": XSI})
    etree.SubElement(root, "Code").text = str(code)
    etree.SubElement(root, "Message").text = _NOT_XML.sub("\ufffd", message)
    for element, value in values.items():
        etree.SubElement(root, element).text = _NOT_XML.sub("\ufffd", value)
    return b'<?xml version="1.0"?>\n' + etree.tostring(root, encoding="utf-8")
