"""The one exception tree of asterisk-sendsms, in the domain's terms only: what each edge answers for an error
(an Ozeki code in wire/ozeki.py, an HTTP status in edge/http/statuses.py, SMS_STATUS in the call flow) is mapped
there, by kind.

    SmsGatewayError
    ├── RequestError                 the caller asked for something wrong
    │   ├── ParseError               request cannot be parsed
    │   ├── UnknownCommand           command not implemented
    │   ├── InvalidParameter         missing or invalid parameter
    │   ├── NotCancellable           the message is being submitted or is final
    │   ├── AuthenticationRequired
    │   ├── AuthenticationFailed
    │   ├── ForbiddenUser            user may not send (here)
    │   │   └── QuotaExceeded        the user's daily or monthly quota is used up
    │   │   └── RecipientOptedOut    the recipient texted STOP
    │   ├── ForbiddenAddress         client address not allowed
    │   ├── NoRoute                  no transport serves the recipient
    │   └── MessageNotFound          status of an unknown SmsId
    ├── ServiceUnavailable           store down, disk full: nothing was accepted
    ├── ConfigError                  the configuration is wrong (names the key)
    ├── IllegalTransition            a lifecycle change the state table forbids
    └── TransportError               a transport could not submit
        ├── TransientSubmitError     retry later (throttled, link down)
        └── PermanentSubmitError     the message can never go this way

Foreign exceptions (sqlite3, psycopg, aiohttp, OSError) are translated where they enter the package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "AuthenticationFailed",
    "AuthenticationRequired",
    "ConfigError",
    "ForbiddenAddress",
    "ForbiddenUser",
    "IllegalTransition",
    "InvalidParameter",
    "MessageNotFound",
    "NoRoute",
    "NotCancellable",
    "ParseError",
    "PermanentSubmitError",
    "QuotaExceeded",
    "RecipientOptedOut",
    "RequestError",
    "ServiceUnavailable",
    "SmsGatewayError",
    "TransientSubmitError",
    "TransportError",
    "UnknownCommand",
    "by_kind",
    "log_level",
    "rebuild",
]


class SmsGatewayError(Exception):
    """Base of every error this package raises on purpose."""

    # Set where the error arose if it was logged there (a store outage is logged once, not by every caller).
    logged: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_Said = TypeVar("_Said")


def by_kind(table: Mapping[type[SmsGatewayError], _Said], error: SmsGatewayError, default: _Said) -> _Said:
    """What an edge's `table` says for `error`: the entry of its kind's nearest listed ancestor, else `default`."""
    return next((table[kind] for kind in type(error).__mro__ if kind in table), default)


def log_level(exc: SmsGatewayError, level: int = logging.ERROR) -> int:
    """The level for logging `exc` where it is handled: DEBUG if it was logged where it arose."""
    return logging.DEBUG if exc.logged else level


class RequestError(SmsGatewayError):
    """The caller asked for something wrong; nothing was accepted."""


class ParseError(RequestError):
    """The request cannot be read."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Parse error: {detail}")


class UnknownCommand(RequestError):
    """No such command."""

    def __init__(self, command: str) -> None:
        shown = command if len(command) <= 64 else command[:64] + "…"
        super().__init__(f"Command '{shown}' is not implemented")
        self.command = command


class InvalidParameter(RequestError):
    """A parameter is missing or its value is not valid; the message names it."""

    def __init__(self, name: str, command: str = "SendSms", reason: str = "") -> None:
        text = f"Missing or invalid parameter '{name}' for command '{command}'"
        super().__init__(f"{text}: {reason}" if reason else text)
        self.name = name
        self.reason = reason


class NotCancellable(RequestError):
    """The message is being submitted or is final: too late to cancel it."""


class AuthenticationRequired(RequestError):
    """No credentials came with the request."""

    def __init__(self, message: str = "Authentication required") -> None:
        super().__init__(message)


class AuthenticationFailed(RequestError):
    """The credentials are wrong."""

    def __init__(self, message: str = "Authentication failed") -> None:
        super().__init__(message)


class ForbiddenUser(RequestError):
    """The user may not do this (here, now, to this recipient)."""


class QuotaExceeded(ForbiddenUser):
    pass


class RecipientOptedOut(ForbiddenUser):
    def __init__(self, recipient: str) -> None:
        super().__init__(f"recipient opted out: {recipient}")
        self.recipient = recipient


class ForbiddenAddress(RequestError):
    """The client's address may not use the API."""


class NoRoute(RequestError):
    """No transport serves the recipient."""

    def __init__(self, recipient: str) -> None:
        super().__init__(f"SMS destination not found: no route for recipient {recipient}")


class MessageNotFound(RequestError):
    """No message has that id (for this user)."""

    def __init__(self, sms_id: str) -> None:
        super().__init__(f"No message with SmsId {sms_id}")


class ServiceUnavailable(SmsGatewayError):
    """The gateway cannot take messages now (store down, disk full): nothing was accepted."""


class ConfigError(SmsGatewayError):
    """A configuration value is wrong; the message names the key."""


class IllegalTransition(SmsGatewayError):
    def __init__(self, sms_id: str, current: str, target: str) -> None:
        super().__init__(f"message {sms_id}: illegal transition {current} -> {target}")


class TransportError(SmsGatewayError):
    """Raised by a transport's submit; `code` is the transport's own error name (e.g. ESME_RTHROTTLED)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class TransientSubmitError(TransportError):
    pass


class PermanentSubmitError(TransportError):
    pass


def rebuild(kind: str, message: str) -> SmsGatewayError:
    """A refusal decided in another process of this gateway (the daemon, for an HTTP front worker), sent as its
    kind's name and its message: the same kind here, so that each edge answers it as its own. It carries the
    message only (no edge reads more). A name this version does not know is a RequestError."""
    found = _REFUSALS.get(kind, RequestError)
    error = found.__new__(found)
    SmsGatewayError.__init__(error, message)
    return error


# The kinds a message can be refused with at accept, by name: what crosses the link to an HTTP front worker.
_REFUSALS: dict[str, type[SmsGatewayError]] = {kind.__name__: kind for kind in (
    RequestError, ParseError, UnknownCommand, InvalidParameter, NotCancellable, AuthenticationRequired,
    AuthenticationFailed, ForbiddenUser, QuotaExceeded, RecipientOptedOut, ForbiddenAddress, NoRoute,
    MessageNotFound, ServiceUnavailable)}
