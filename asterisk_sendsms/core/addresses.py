"""Recipient and sender addresses: which numbers and alphanumeric senders are valid, in one normal form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from asterisk_sendsms.core.encoding import gsm7_septets
from asterisk_sendsms.core.errors import InvalidParameter

__all__ = ["Address", "AddressKind", "kind_of", "parse_recipient", "parse_sender"]

# Separators people type in numbers; removed before validation.
_SEPARATORS = re.compile(r"[\s\-.()/]")
_NUMBER = re.compile(r"\+?[0-9]{3,20}")
_MAX_INTERNATIONAL_DIGITS = 15  # E.164
_MAX_ALPHANUMERIC = 11  # what fits an SMS originating address


class AddressKind(StrEnum):
    INTERNATIONAL = "international"  # +<country><number>
    NATIONAL = "national"  # digits as dialled in the country (short codes included)
    ALPHANUMERIC = "alphanumeric"  # a sender name


@dataclass(frozen=True, slots=True)
class Address:
    value: str
    kind: AddressKind


def _number(raw: str, parameter: str) -> Address | None:
    compact = _SEPARATORS.sub("", raw)
    if compact.startswith("00") and _NUMBER.fullmatch(compact[2:]):
        compact = "+" + compact[2:]
    if not _NUMBER.fullmatch(compact):
        return None
    if compact.startswith("+"):
        if len(compact) - 1 > _MAX_INTERNATIONAL_DIGITS:
            raise InvalidParameter(parameter, reason=f"{raw!r} has more than 15 digits")
        return Address(compact, AddressKind.INTERNATIONAL)
    return Address(compact, AddressKind.NATIONAL)


def parse_recipient(raw: str, parameter: str = "Recipient") -> Address:
    value = raw.strip()
    if not value:
        raise InvalidParameter(parameter, reason="the recipient is empty")
    address = _number(value, parameter)
    if address is None:
        raise InvalidParameter(parameter, reason=f"{raw!r} is not a phone number")
    return address


def parse_sender(raw: str, parameter: str = "Sender") -> Address:
    value = raw.strip()
    if not value:
        raise InvalidParameter(parameter, reason="the sender is empty")
    address = _number(value, parameter)
    if address is not None:
        return address
    if len(value) > _MAX_ALPHANUMERIC:
        raise InvalidParameter(parameter, reason=f"an alphanumeric sender has at most 11 characters: {raw!r}")
    if any(gsm7_septets(ch) is None or ch in "\r\n\x1b" for ch in value):
        raise InvalidParameter(parameter, reason=f"{raw!r} has characters a sender name cannot carry")
    return Address(value, AddressKind.ALPHANUMERIC)


def kind_of(normal: str) -> AddressKind:
    """The kind of an address in the normal form `parse_recipient` and `parse_sender` give (a stored message's
    recipient or sender): the parsers' own number pattern, without their clean-up and checks on every submit."""
    if _NUMBER.fullmatch(normal):
        return AddressKind.INTERNATIONAL if normal.startswith("+") else AddressKind.NATIONAL
    return AddressKind.ALPHANUMERIC
