"""The HTTP port the use cases post and fetch through (delivery notifications, OzML scripts): the session they
drive, how one is opened, and the errors they tell apart. `edge/http/client.py` implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from asterisk_sendsms.app.urlpolicy import UrlPolicy

__all__ = ["HttpError", "HttpRefused", "HttpSession", "OpenHttp", "Response"]


class HttpError(Exception):
    """The request did not get a usable HTTP answer (connection, TLS, timeout, a malformed or oversized
    reply, or a target the URL policy refuses)."""


class HttpRefused(HttpError):
    """The URL policy refused the address the host resolves to: nothing was sent."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes  # empty when the caller did not ask for it


class HttpSession(Protocol):
    """Requests to URLs a user supplied, each going only where the session's `UrlPolicy` allows."""

    async def post_form(self, url: str, body: bytes) -> int:
        """POST `body` as a form; returns the answer's status (its body is dropped). Raises `HttpError`."""
        ...

    async def request(self, method: str, url: str, form: bytes | None = None, keep_body: bool = True,
                      max_body: int | None = None) -> Response:
        """One request (GET, or POST of a form), with the whole body of the answer when `keep_body`. Raises
        `HttpError` when there is no such answer."""
        ...

    async def close(self) -> None: ...


class OpenHttp(Protocol):
    """Opens a session: each request bounded by `timeout` seconds, up to `idle_per_host` kept-alive
    connections per host, answers' bodies up to `max_body` bytes."""

    def __call__(self, policy: UrlPolicy, timeout: float, *, idle_per_host: int = ..., max_body: int = ...
                 ) -> HttpSession: ...
