"""OzML, the call-script language, without I/O: a hardened parser (no entities, no DTD, no network; size,
depth and element limits) into typed commands; errors name the line and the element."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from asterisk_sendsms.core.errors import SmsGatewayError

__all__ = [
    "BlindTransfer",
    "Command",
    "Delay",
    "GoTo",
    "Hangup",
    "OzmlError",
    "Play",
    "Record",
    "Reject",
    "SendDtmf",
    "SendSms",
    "Speak",
    "Unknown",
    "UserInput",
    "parse_ozml",
]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_ELEMENTS = 2000


class OzmlError(SmsGatewayError):
    """A script that cannot be run; the message names the line and element."""


@dataclass(frozen=True, slots=True)
class Speak:
    text: str
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Play:
    sound: str  # a sound path (no extension) or an http(s) URL of a WAV


@dataclass(frozen=True, slots=True)
class SendSms:
    recipient: str
    text: str
    sender: str | None = None
    report_url: str | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Delay:
    seconds: float


@dataclass(frozen=True, slots=True)
class UserInput:
    forward_url: str
    timeout: float = 5.0
    max_digits: int = 20
    terminator: str = "#"
    prompt: tuple[Command, ...] = field(default=())  # Speak/Play run while waiting for the first digit


@dataclass(frozen=True, slots=True)
class GoTo:
    url: str


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str = "busy"


@dataclass(frozen=True, slots=True)
class Record:
    forward_url: str | None
    max_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class SendDtmf:
    digits: str


@dataclass(frozen=True, slots=True)
class BlindTransfer:
    destination: str  # a dialplan extension, optionally "context,extension"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A command this interpreter does not know; reported by name when reached."""

    tag: str
    line: int


Command = (Speak | Play | SendSms | Hangup | Delay | UserInput | GoTo | Reject | Record | SendDtmf | BlindTransfer
           | Unknown)


def _line(element: etree._Element) -> int:
    line = getattr(element, "sourceline", None)
    return line if isinstance(line, int) else 0


def _where(element: etree._Element) -> str:
    return f"line {_line(element)}, <{element.tag}>"


def _attr(element: etree._Element, *names: str, default: str | None = None) -> str | None:
    """An attribute by any of its spellings, case-insensitively (Ozeki's documents vary)."""
    wanted = {n.lower() for n in names}
    for key, value in element.attrib.items():
        if str(key).lower() in wanted:
            return str(value)
    return default


def _number(element: etree._Element, names: tuple[str, ...], default: float, low: float, high: float,
            text: bool = False) -> float:
    """The attribute (or with `text`, failing that, the element's text) as a number within its range."""
    raw = _attr(element, *names)
    if (raw is None or raw.strip() == "") and text:
        raw = _text(element)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise OzmlError(f"{_where(element)}: {names[0]}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise OzmlError(f"{_where(element)}: {names[0]} must be from {low:g} to {high:g}")
    return value


def _text(element: etree._Element) -> str:
    return " ".join("".join(str(t) for t in element.itertext()).split())


def _required(element: etree._Element, value: str | None, what: str) -> str:
    if not value:
        raise OzmlError(f"{_where(element)}: {what} is missing")
    return value


def _command(element: etree._Element, depth: int) -> Command:
    tag = str(element.tag)
    name = tag.lower()
    if name == "speak":
        return Speak(_required(element, _text(element), "the text to speak"), _attr(element, "Voice", "Language"))
    if name == "play":
        return Play(_required(element, _attr(element, "Url", "File") or _text(element), "the sound to play"))
    if name == "sendsms":
        return SendSms(_required(element, _attr(element, "Recipient"), "Recipient"),
                       _required(element, _text(element), "the message text"),
                       _attr(element, "Sender"), _attr(element, "DeliveryReportURL", "DelivaryReportURL"))
    if name == "hangup":
        return Hangup()
    if name == "delay":
        return Delay(_number(element, ("Value", "Seconds"), 1, 0, 3600, text=True))
    if name == "userinput":
        prompt = tuple(_command(child, depth + 1) for child in element if isinstance(child.tag, str))
        if not all(isinstance(c, Speak | Play) for c in prompt):
            raise OzmlError(f"{_where(element)}: only <Speak> and <Play> may prompt for input")
        return UserInput(_required(element, _attr(element, "ForwardToUrl"), "ForwardToUrl"),
                         _number(element, ("Timeout",), 5.0, 0.5, 300),
                         int(_number(element, ("MaxDigits", "Length"), 20, 1, 64)),
                         _attr(element, "Terminator", default="#") or "#", prompt)
    if name == "goto":
        return GoTo(_required(element, _attr(element, "Url") or _text(element), "the URL"))
    if name == "reject":
        return Reject(_attr(element, "Reason", default="busy") or "busy")
    if name == "record":
        return Record(_attr(element, "ForwardToUrl", "FinishedUrl"), _number(element, ("MaxLength", "Length"),
                                                                            60.0, 1, 3600))
    if name == "senddtmf":
        digits = _required(element, _attr(element, "Digits") or _text(element), "the digits")
        if not all(c in "0123456789*#ABCDabcdw" for c in digits):
            raise OzmlError(f"{_where(element)}: {digits!r} holds characters that are not DTMF")
        return SendDtmf(digits)
    if name == "blindtransfer":
        return BlindTransfer(_required(element, _attr(element, "Dialed", "Destination") or _text(element),
                                       "the destination"))
    return Unknown(tag, _line(element))


def parse_ozml(document: bytes | str) -> tuple[Command, ...]:
    """Parse a `<Response>` into its commands, in order. Hostile input (entities, DTDs, external
    references, huge or deep documents, bad encodings) is refused with an `OzmlError`."""
    data = document.encode("utf-8") if isinstance(document, str) else document
    if len(data) > MAX_BYTES:
        raise OzmlError(f"the script is larger than {MAX_BYTES // 1024} KiB")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise OzmlError("document type declarations and entities are not allowed in OzML")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise OzmlError(f"line {exc.lineno}: not well-formed XML: {exc.msg}") from None
    except ValueError as exc:
        raise OzmlError(f"not readable XML: {exc}") from None
    if str(root.tag).lower() != "response":
        raise OzmlError(f"{_where(root)}: an OzML script is a <Response>")
    count = 0
    for element in root.iter():
        count += 1
        depth = sum(1 for _ in element.iterancestors())
        if count > MAX_ELEMENTS or depth > MAX_DEPTH:
            raise OzmlError(f"the script has more than {MAX_ELEMENTS} elements or nests deeper than {MAX_DEPTH}")
    return tuple(_command(child, 1) for child in root if isinstance(child.tag, str))
