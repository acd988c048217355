"""The one exception tree of asterisk-sendsms; each error knows its Ozeki code, HTTP status and AGI status.

    SmsGatewayError
    ├── RequestError                 the caller asked for something wrong
    │   ├── ParseError               300  request cannot be parsed
    │   ├── UnknownCommand           301  command not implemented
    │   ├── InvalidParameter         302  missing or invalid parameter
    │   ├── NotCancellable           303  the message is being submitted or is final (HTTP 409)
    │   ├── AuthenticationRequired   304
    │   ├── AuthenticationFailed     305
    │   ├── ForbiddenUser            306  user may not send (here)
    │   │   └── QuotaExceeded        306  the user's daily or monthly quota is used up
    │   │   └── RecipientOptedOut    306  the recipient texted STOP
    │   ├── ForbiddenAddress         307  client address not allowed
    │   ├── NoRoute                  501  no transport serves the recipient
    │   └── MessageNotFound          404  status of an unknown SmsId
    ├── ServiceUnavailable           500  store down, disk full: nothing was accepted
    ├── ConfigError                       the configuration is wrong (names the key)
    ├── IllegalTransition                 a lifecycle change the state table forbids
    └── TransportError                    a transport could not submit
        ├── TransientSubmitError          retry later (throttled, link down)
        └── PermanentSubmitError          the message can never go this way

Foreign exceptions (sqlite3, psycopg, aiohttp, OSError) are translated where they enter the package.
"""

from __future__ import annotations

import logging

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
    "log_level",
    "refusal",
]


class SmsGatewayError(Exception):
    """Base of every error this package raises on purpose."""

    ozeki_code: int = 500
    http_status: int = 500
    # What a dialplan sees in SMS_STATUS when this error stops a send.
    agi_status: str = "FAILED"
    # Set where the error arose if it was logged there (a store outage is logged once, not by every caller).
    logged: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def log_level(exc: SmsGatewayError, level: int = logging.ERROR) -> int:
    """The level for logging `exc` where it is handled: DEBUG if it was logged where it arose."""
    return logging.DEBUG if exc.logged else level


class RequestError(SmsGatewayError):
    http_status = 400


class ParseError(RequestError):
    ozeki_code = 300

    def __init__(self, detail: str) -> None:
        super().__init__(f"Parse error: {detail}")


class UnknownCommand(RequestError):
    ozeki_code = 301

    def __init__(self, command: str) -> None:
        shown = command if len(command) <= 64 else command[:64] + "…"
        super().__init__(f"Command '{shown}' is not implemented")
        self.command = command


class InvalidParameter(RequestError):
    ozeki_code = 302

    def __init__(self, name: str, command: str = "SendSms", reason: str = "") -> None:
        text = f"Missing or invalid parameter '{name}' for command '{command}'"
        super().__init__(f"{text}: {reason}" if reason else text)
        self.name = name
        self.reason = reason


class NotCancellable(RequestError):
    ozeki_code = 303  # Ozeki's "inappropriate command"
    http_status = 409


class AuthenticationRequired(RequestError):
    ozeki_code = 304
    http_status = 401

    def __init__(self, message: str = "Authentication required") -> None:
        super().__init__(message)


class AuthenticationFailed(RequestError):
    ozeki_code = 305
    http_status = 401

    def __init__(self, message: str = "Authentication failed") -> None:
        super().__init__(message)


class ForbiddenUser(RequestError):
    ozeki_code = 306
    http_status = 403


class QuotaExceeded(ForbiddenUser):
    pass


class RecipientOptedOut(ForbiddenUser):
    def __init__(self, recipient: str) -> None:
        super().__init__(f"recipient opted out: {recipient}")
        self.recipient = recipient


class ForbiddenAddress(RequestError):
    ozeki_code = 307
    http_status = 403


class NoRoute(RequestError):
    ozeki_code = 501
    http_status = 404

    def __init__(self, recipient: str) -> None:
        super().__init__(f"SMS destination not found: no route for recipient {recipient}")


class MessageNotFound(RequestError):
    ozeki_code = 404
    http_status = 404

    def __init__(self, sms_id: str) -> None:
        super().__init__(f"No message with SmsId {sms_id}")


def refusal(ozeki_code: int, http_status: int, message: str) -> RequestError:
    """A refusal decided in another process (the daemon, for an HTTP front worker), with its codes."""
    error = RequestError(message)
    error.ozeki_code, error.http_status = ozeki_code, http_status
    return error


class ServiceUnavailable(SmsGatewayError):
    ozeki_code = 500
    http_status = 503


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
