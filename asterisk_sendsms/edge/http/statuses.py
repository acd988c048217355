"""How the HTTP edges answer the gateway's errors: each kind's HTTP status (the domain's errors carry none), and
the HTTP server's own errors about a request body."""

from __future__ import annotations

from asterisk_sendsms.core.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    ForbiddenAddress,
    ForbiddenUser,
    MessageNotFound,
    NoRoute,
    NotCancellable,
    ParseError,
    RequestError,
    ServiceUnavailable,
    SmsGatewayError,
    by_kind,
)

__all__ = ["HTTP_STATUSES", "BodyTimeout", "BodyTooLarge", "http_status"]


class BodyTooLarge(ParseError):
    """The request body is larger than the server takes."""


class BodyTimeout(ParseError):
    """The request body did not arrive in time; the connection is closed after the answer (the rest may never
    come)."""


# A kind not listed answers as its nearest listed ancestor, and 500 if none is.
HTTP_STATUSES: dict[type[SmsGatewayError], int] = {
    RequestError: 400, BodyTooLarge: 413, BodyTimeout: 408, AuthenticationRequired: 401, AuthenticationFailed: 401,
    ForbiddenUser: 403, ForbiddenAddress: 403, NoRoute: 404, MessageNotFound: 404, NotCancellable: 409,
    ServiceUnavailable: 503,
}


def http_status(error: SmsGatewayError) -> int:
    return by_kind(HTTP_STATUSES, error, 500)
