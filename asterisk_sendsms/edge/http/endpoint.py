"""The Ozeki `/api` endpoint apart from the HTTP server that carries it (the daemon's aiohttp app, or the fast
lane): who is asking (`Identify`), a request's parameters and body read within their time, and the commands
answered (SendSms, Call) as status and XML."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from asterisk_sendsms.app.auth import OPERATOR, Authenticator
from asterisk_sendsms.app.calls import CallService
from asterisk_sendsms.app.service import Accepted
from asterisk_sendsms.config import UserConfig
from asterisk_sendsms.core.errors import (
    InvalidParameter,
    ParseError,
    ServiceUnavailable,
    SmsGatewayError,
    UnknownCommand,
)
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Priority
from asterisk_sendsms.edge.http.statuses import HTTP_STATUSES, BodyTimeout, BodyTooLarge, http_status
from asterisk_sendsms.wire.ozeki import (
    SUCCESS_MESSAGE,
    call_params,
    command_result,
    merge_params,
    ozeki_code,
    parse_form,
    send_sms_params,
)

__all__ = ["XML_TYPE", "HandOver", "Identify", "OzekiEndpoint", "ReadParams", "Sender", "client_of",
           "operator_identify", "read_body", "request_params", "respond", "tcp_identify"]

log = logging.getLogger(__name__)

# Who is asking, from the client's address, its Authorization header and the parameters it sent: a user or an
# error.
Identify = Callable[[str, str, dict[str, str]], Awaitable[UserConfig]]
ReadParams = Callable[[], Awaitable[dict[str, str]]]

COMMANDS = {"sendsms": "SendSms", "call": "Call"}
XML_TYPE = "text/xml"


def client_of(request: web.Request) -> str:
    return request.remote or "local"


def tcp_identify(auth: Authenticator) -> Identify:
    async def identify(client: str, authorization: str, params: dict[str, str]) -> UserConfig:
        auth.check_client(client)
        username, password = params.get("username"), params.get("password")
        if authorization[:6].lower() == "basic ":
            try:
                username, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError, or text that is not ASCII
                raise ParseError("malformed Basic authorization header") from None
        return await auth.authenticate(username, password, client)
    return identify


async def operator_identify(client: str, authorization: str, params: dict[str, str]) -> UserConfig:
    return OPERATOR  # the control socket's file permissions are its authentication


class Sender(Protocol):
    """What `SendSms` needs: the service, or in an HTTP front worker its link to the daemon."""

    async def send(self, user: UserConfig, recipient: str, text: str, sender: str | None = None,
                   callback_url: str | None = None, priority: Priority = DEFAULT_PRIORITY,
                   validity_period: float | None = None, send_at: float | None = None) -> Accepted: ...


class HandOver(Exception):
    """Raised while answering a request that another process answers: an HTTP front worker gives the
    connection to the daemon."""


_Read = TypeVar("_Read")


async def read_body(request: web.BaseRequest, read: Callable[[], Awaitable[_Read]], within: float) -> _Read:
    """A request body, read within `within` seconds (a body trickled in never ends otherwise); every way
    reading it can fail is a ParseError: the client answered, if it is still there, and one line logged."""
    if request.content_length is not None and request.content_length > request.client_max_size:
        raise BodyTooLarge(f"the request body is larger than {request.client_max_size} bytes")
    try:
        async with asyncio.timeout(within):
            return await read()
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {within:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the request body is larger than {request.client_max_size} bytes") from None
    except (ConnectionError, ClientPayloadError, HttpProcessingError) as exc:
        raise ParseError(f"the request body could not be read ({type(exc).__name__}): the client went away "
                         "or framed it wrongly") from None


def respond(response: web.Response) -> web.Response:
    """A connection whose body timed out is closed: the rest of the body may never come."""
    if response.status == HTTP_STATUSES[BodyTimeout]:
        response.force_close()
    return response


class OzekiEndpoint:
    """The Ozeki `/api` commands apart from the HTTP server that carries them (aiohttp, or the fast lane):
    parameters in, status and XML reply out."""

    def __init__(self, sender: Sender, identify: Identify, calls: CallService | None = None) -> None:
        self.sender = sender
        self.identify = identify
        self._calls = calls

    async def answer(self, method: str, read_params: ReadParams, authorization: str, client: str
                     ) -> tuple[int, bytes]:
        command: str | None = None
        try:
            if method not in ("GET", "POST"):
                raise ParseError(f"method {method} is not supported; use GET or POST")
            params = await read_params()
            raw_command = params.get("command")
            if not raw_command:
                raise InvalidParameter("command", "(none)")
            command = COMMANDS.get(raw_command.lower())
            if command is None:
                command = raw_command
                raise UnknownCommand(raw_command)
            user = await self.identify(client, authorization, params)
            values = await self._run(command, user, params)
        except HandOver:
            raise
        except SmsGatewayError as exc:
            code = ozeki_code(exc)
            log.info("%s from %s refused: %d %s", command or "request", client, code, exc.message)
            return http_status(exc), command_result(command, code, exc.message)
        except Exception:
            log.exception("unexpected error serving %s /api from %s", method, client)
            error = ServiceUnavailable("internal error; the message was not accepted")
            return http_status(error), command_result(command, ozeki_code(error), error.message)
        return 200, command_result(command, 200, SUCCESS_MESSAGE, **values)

    async def _run(self, command: str, user: UserConfig, params: dict[str, str]) -> dict[str, str]:
        """Run an Ozeki command; returns the reply's values."""
        if command == "Call":
            if self._calls is None:
                raise UnknownCommand("Call")
            call = call_params(params)
            call_id = await self._calls.call(user, call.dialed, call.url, call.caller_id)
            log.info("call %s to %s originated for %s", call_id, call.dialed, user.name)
            return {"CallId": call_id}
        send = send_sms_params(params)
        accepted = await self.sender.send(user, send.recipient, send.message, send.sender,
                                           send.delivery_report_url, send.priority, send.validity_period,
                                           send.send_at)
        log.debug("accepted %s for %s (%d parts)", accepted.sms_id, send.recipient, accepted.part_count)
        return {"SmsId": accepted.sms_id}


async def request_params(request: web.Request, body_timeout: float) -> dict[str, str]:
    query = parse_form(request.rel_url.raw_query_string)
    if request.method != "POST" or not request.can_read_body:
        return query
    if request.content_type == "multipart/form-data":
        form = await read_body(request, request.post, body_timeout)
        return merge_params(query, {k: v for k, v in form.items() if isinstance(v, str)})
    body = await read_body(request, request.read, body_timeout)
    return merge_params(query, parse_form(body, request.charset or "utf-8"))
