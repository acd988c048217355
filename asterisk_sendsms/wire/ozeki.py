"""The Ozeki HTTP API protocol, without I/O: form decoding with Ozeki's leniencies (case-insensitive names,
the `DelivaryReportURL` spelling, `+` in numbers), the `OzApi_CommandResult_*` XML reply, and the result code
of each kind of error (`OZEKI_CODES`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote

from asterisk_sendsms.core.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    ForbiddenAddress,
    ForbiddenUser,
    InvalidParameter,
    MessageNotFound,
    NoRoute,
    NotCancellable,
    ParseError,
    SmsGatewayError,
    UnknownCommand,
    by_kind,
)
from asterisk_sendsms.core.timetable import parse_send_at
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Priority, parse_priority

__all__ = ["OZEKI_CODES", "CallParams", "SendSmsParams", "call_params", "command_result", "form_encode",
           "merge_params", "ozeki_code", "parse_form", "send_sms_params"]

XSD = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SUCCESS_MESSAGE = "Command successfully executed"
MAX_FIELDS = 64
_COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# Characters XML 1.0 cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF): an error message that
# quotes the caller's input must still make a well-formed reply.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))  # as libxml2 escapes text


def parse_form(data: bytes | str, charset: str = "utf-8") -> dict[str, str]:
    """Decode `application/x-www-form-urlencoded` data into lower-cased names. A name given twice with
    different values is refused: guessing which one the caller meant could send the wrong text."""
    # What parse_qsl(keep_blank_values=True, errors="strict") decodes, at a third of its cost: only the
    # values that carry '+' or '%' need work.
    try:
        text = data.decode(charset) if isinstance(data, bytes) else data
        fields = text.split("&")
        if len(fields) > MAX_FIELDS:
            raise ParseError(f"more than {MAX_FIELDS} parameters")
        pairs = []
        for field in fields:
            if field:
                name, _, value = field.partition("=")
                pairs.append((_form_unquote(name, charset), _form_unquote(value, charset)))
    except (UnicodeDecodeError, LookupError):
        raise ParseError(f"the request is not valid {charset} text") from None
    return merge_params(pairs)


# What quote_plus leaves as it is, and what it writes for each other ASCII character.
_FORM_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")
_FORM_ESCAPES = {code: "+" if code == 0x20 else f"%{code:02X}" for code in range(128)
                 if not _FORM_PLAIN.fullmatch(chr(code))}


def _form_quote(text: str) -> str:
    # Most names and values need nothing; other ASCII text is one C call; quote_plus, a loop over octets in
    # Python, is left for the rest.
    if _FORM_PLAIN.fullmatch(text):
        return text
    return text.translate(_FORM_ESCAPES) if text.isascii() else quote_plus(text)


def form_encode(fields: Mapping[str, str]) -> bytes:
    """The bytes urlencode writes for `fields`, at about half its cost: every notification is one."""
    return "&".join(f"{_form_quote(name)}={_form_quote(value)}" for name, value in fields.items()).encode("ascii")


def _form_unquote(value: str, charset: str) -> str:
    if "+" in value:
        value = value.replace("+", " ")
    return unquote(value, encoding=charset, errors="strict") if "%" in value else value


def merge_params(*sources: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source in sources:
        for name, value in (source.items() if isinstance(source, Mapping) else source):
            key = name.lower()
            if key in merged and merged[key] != value:
                shown = name if len(name) <= 64 else name[:64] + "…"  # it may be as long as a request
                raise ParseError(f"parameter '{shown}' is given twice with different values")
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
    priority: Priority = DEFAULT_PRIORITY
    validity_period: float | None = None
    send_at: float | None = None


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
    priority = parse_priority(params["priority"]) if params.get("priority") else DEFAULT_PRIORITY
    validity = parse_validity_period(params["validityperiod"]) if params.get("validityperiod") else None
    send_at = parse_send_at(params["sendat"]) if params.get("sendat") else None
    return SendSmsParams(
        username=params.get("username"), password=params.get("password"),
        sender=_number(params.get("sender")) or None, recipient=recipient, message=message,
        delivery_report_url=report_url, priority=priority, validity_period=validity, send_at=send_at)


# The SMPP relative validity_period this gateway writes holds days in two digits; SMSCs keep messages a week or
# less anyway.
MAX_VALIDITY_PERIOD = 7 * 86400
_ISO_DURATION = re.compile(r"P(?:([0-9]+)D)?(?:T(?=[0-9])(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+)S)?)?", re.IGNORECASE)


def parse_validity_period(text: str, parameter: str = "ValidityPeriod", command: str = "SendSms") -> float:
    """Seconds (`300`) or an ISO 8601 duration of days, hours, minutes and seconds (`PT5M`, `P1DT12H`), from
    1 s to 7 days; Ozeki code 302 naming `parameter` otherwise."""
    value = text.strip()
    seconds: int | None = None
    if value.isascii() and value.isdigit() and len(value) <= 9:
        seconds = int(value)
    elif (match := _ISO_DURATION.fullmatch(value)) and value.upper() != "P" and len(value) <= 32:
        days, hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds is None:
        raise InvalidParameter(parameter, command, "expected seconds or an ISO 8601 duration such as PT5M")
    if not 1 <= seconds <= MAX_VALIDITY_PERIOD:
        raise InvalidParameter(parameter, command, f"expected 1 second to {MAX_VALIDITY_PERIOD // 86400} days")
    return float(seconds)


def command_result(command: str | None, code: int, message: str, **values: str) -> bytes:
    """The reply document, exactly as Ozeki writes it: declaration, both namespace declarations, Code,
    Message and, on success, the command's values (SmsId, CallId). Written as text (the same bytes lxml
    serialises, a tenth of the time: every accepted message gets one)."""
    name = "OzApi_CommandResult"
    if command and _COMMAND_NAME.fullmatch(command):
        name += "_" + command
    fields = "".join(f"<{element}>{_xml_text(value)}</{element}>" for element, value in values.items())
    return (f'<?xml version="1.0"?>\n<{name} xmlns:xsd="{XSD}" xmlns:xsi="{XSI}"><Code>{code}</Code>'
            f"<Message>{_xml_text(message)}</Message>{fields}</{name}>").encode()


def _xml_text(value: str) -> str:
    text = _NOT_XML.sub("\ufffd", value)
    for raw, escaped in _XML_ESCAPES:
        if raw in text:
            text = text.replace(raw, escaped)
    return text


# Ozeki's result code for each kind of error (its documented 3xx codes; 404 and 501 for a message or a route not
# found); a kind not listed answers as its nearest listed ancestor, and 500 if none is.
OZEKI_CODES: dict[type[SmsGatewayError], int] = {
    ParseError: 300, UnknownCommand: 301, InvalidParameter: 302, NotCancellable: 303, AuthenticationRequired: 304,
    AuthenticationFailed: 305, ForbiddenUser: 306, ForbiddenAddress: 307, MessageNotFound: 404, NoRoute: 501,
}


def ozeki_code(error: SmsGatewayError) -> int:
    return by_kind(OZEKI_CODES, error, 500)
