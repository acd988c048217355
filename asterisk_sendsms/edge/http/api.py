"""The daemon's HTTP face (aiohttp): the Ozeki `/api` endpoint, the JSON message API and health; served on
TCP for applications and on a Unix socket for the local operator's CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from asterisk_sendsms.app.auth import OPERATOR, Authenticator
from asterisk_sendsms.app.calls import CallService
from asterisk_sendsms.app.service import Accepted, SmsService
from asterisk_sendsms.app.transport import TransportHealth
from asterisk_sendsms.config import HttpConfig, StatusConfig, UserConfig
from asterisk_sendsms.core.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    ForbiddenUser,
    InvalidParameter,
    MessageNotFound,
    ParseError,
    ServiceUnavailable,
    SmsGatewayError,
    UnknownCommand,
)
from asterisk_sendsms.core.model import MessageView
from asterisk_sendsms.core.timetable import parse_send_at
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Priority, parse_priority
from asterisk_sendsms.ops.metrics import Metrics
from asterisk_sendsms.ops.status_page import PAGE_SIZE, Listing, render_status_page
from asterisk_sendsms.wire.http1 import LINGER, MAX_HEADER_BYTES, MAX_HEADERS, max_request_line
from asterisk_sendsms.wire.ozeki import (
    SUCCESS_MESSAGE,
    call_params,
    command_result,
    merge_params,
    parse_form,
    parse_validity_period,
    send_sms_params,
)

__all__ = ["HandOver", "OzekiEndpoint", "build_app", "make_runner"]

log = logging.getLogger(__name__)

# Who is asking, from the client's address, its Authorization header and the parameters it sent: a user or an
# error.
Identify = Callable[[str, str, dict[str, str]], Awaitable[UserConfig]]
HealthSource = Callable[[], list[TransportHealth]]
ReadParams = Callable[[], Awaitable[dict[str, str]]]

COMMANDS = {"sendsms": "SendSms", "call": "Call"}
XML_TYPE = "text/xml"
MAX_PAGE = 10_000  # the status page lists newest first; deeper than this, search instead


def _client(request: web.Request) -> str:
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


class _BodyTooLarge(ParseError):
    http_status = 413


class _BodyTimeout(ParseError):
    http_status = 408


_Read = TypeVar("_Read")


async def _read_body(request: web.BaseRequest, read: Callable[[], Awaitable[_Read]], within: float) -> _Read:
    """A request body, read within `within` seconds (a body trickled in never ends otherwise); every way
    reading it can fail is a ParseError: the client answered, if it is still there, and one line logged."""
    if request.content_length is not None and request.content_length > request.client_max_size:
        raise _BodyTooLarge(f"the request body is larger than {request.client_max_size} bytes")
    try:
        async with asyncio.timeout(within):
            return await read()
    except TimeoutError:
        raise _BodyTimeout(f"the request body did not arrive within {within:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise _BodyTooLarge(f"the request body is larger than {request.client_max_size} bytes") from None
    except (ConnectionError, ClientPayloadError, HttpProcessingError) as exc:
        raise ParseError(f"the request body could not be read ({type(exc).__name__}): the client went away "
                         "or framed it wrongly") from None


def _respond(response: web.Response) -> web.Response:
    """A connection whose body timed out is closed: the rest of the body may never come."""
    if response.status == _BodyTimeout.http_status:
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
            log.info("%s from %s refused: %d %s", command or "request", client, exc.ozeki_code, exc.message)
            return exc.http_status, command_result(command, exc.ozeki_code, exc.message)
        except Exception:
            log.exception("unexpected error serving %s /api from %s", method, client)
            error = ServiceUnavailable("internal error; the message was not accepted")
            return error.http_status, command_result(command, error.ozeki_code, error.message)
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


async def _request_params(request: web.Request, body_timeout: float) -> dict[str, str]:
    query = parse_form(request.rel_url.raw_query_string)
    if request.method != "POST" or not request.can_read_body:
        return query
    if request.content_type == "multipart/form-data":
        form = await _read_body(request, request.post, body_timeout)
        return merge_params(query, {k: v for k, v in form.items() if isinstance(v, str)})
    body = await _read_body(request, request.read, body_timeout)
    return merge_params(query, parse_form(body, request.charset or "utf-8"))


def _listing(request: web.Request) -> Listing:
    query = request.rel_url.query
    page = query.get("page", "1")
    if not page.isdigit() or not 1 <= int(page) <= MAX_PAGE:
        raise InvalidParameter("page", "Status", f"a page number from 1 to {MAX_PAGE}")
    return Listing(" ".join(query.get("q", "").split())[:100], query.get("state", ""), int(page))


async def _listed(service: SmsService, user: UserConfig, listing: Listing) -> list[MessageView]:
    """The messages of one page of the status page: the one an SmsId names, or those of a recipient prefix."""
    try:
        uuid.UUID(listing.search)
    except ValueError:
        recipient = listing.search.replace(" ", "") or None
        return await service.messages(user, listing.state or None, recipient, None, PAGE_SIZE,
                                      (listing.page - 1) * PAGE_SIZE)
    try:
        found = await service.status(user, listing.search, detail=False)
    except MessageNotFound:
        return []
    return [found] if listing.page == 1 and listing.state in ("", found.state.value) else []


# The fields of a JSON send (POST /api/messages); each a string or null.
_MESSAGE_FIELDS = ("recipient", "text", "sender", "delivery_report_url", "priority", "validity_period", "send_at")
_OPTOUT_FIELDS = ("number", "sender")


def _message_json(message: MessageView, detail: bool = True) -> dict[str, Any]:
    """A message as JSON; a list's entries (`detail` False) leave out parts and history, which a list does not
    read (GET /api/messages/ID has them), rather than show them empty."""
    data = asdict(message)
    data["coding"] = message.coding.value
    data["state"] = message.state.value
    data["priority"] = message.priority.value
    if detail:
        data["history"] = [{"at": h.at, "state": h.state.value, "detail": h.detail} for h in message.history]
    else:
        del data["parts"], data["history"]
    return data


def build_app(ozeki: OzekiEndpoint, service: SmsService, health: HealthSource, http: HttpConfig,
              metrics: Metrics | None = None, status: StatusConfig | None = None) -> web.Application:
    routes = web.RouteTableDef()
    identify = ozeki.identify
    show_text = (status or StatusConfig()).show_text
    body_timeout = http.body_timeout

    async def query_user(request: web.Request, params: dict[str, str] | None = None) -> UserConfig:
        """The user a JSON/status request authenticates as (Basic auth or Username/Password parameters of
        `params`, by default the query's)."""
        return await identify(_client(request), request.headers.get("Authorization", ""),
                              parse_form(request.rel_url.raw_query_string) if params is None else params)

    async def admin_user(request: web.Request) -> UserConfig:
        user = await query_user(request)
        if not user.admin:
            raise ForbiddenUser(f"Forbidden user: {user.name} is not an admin (admin = true)")
        return user

    @routes.route("*", "/api")
    async def ozeki_api(request: web.Request) -> web.Response:
        status, reply = await ozeki.answer(request.method, lambda: _request_params(request, body_timeout),
                                           request.headers.get("Authorization", ""), _client(request))
        return _respond(web.Response(body=reply, status=status, content_type=XML_TYPE, charset="utf-8"))

    def json_error(exc: SmsGatewayError) -> web.Response:
        return _respond(web.json_response({"code": exc.ozeki_code, "error": exc.message}, status=exc.http_status))

    async def json_object(request: web.Request, command: str, fields: tuple[str, ...]) -> dict[str, str | None]:
        """The body's JSON object of strings; a field of `fields` of another type (a number for send_at) is
        named, other keys are not (a client's key never reaches the log)."""
        try:
            body = json.loads(await _read_body(request, request.read, body_timeout) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ParseError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise ParseError("the body must be a JSON object of strings")
        for name in fields:
            if not isinstance(body.get(name), str | None):
                raise InvalidParameter(name, command, "expected a string (or null)")
        if not all(isinstance(v, str | None) for v in body.values()):
            raise ParseError("the body must be a JSON object of strings")
        return body

    @routes.post("/api/messages")
    async def json_send(request: web.Request) -> web.Response:
        try:
            body = await json_object(request, "messages", _MESSAGE_FIELDS)
            user = await query_user(request)
            priority, validity, send_at = body.get("priority"), body.get("validity_period"), body.get("send_at")
            accepted = await service.send(user, body.get("recipient") or "", body.get("text") or "",
                                          body.get("sender"), body.get("delivery_report_url"),
                                          parse_priority(priority, "priority", "messages") if priority
                                          else DEFAULT_PRIORITY,
                                          parse_validity_period(validity, "validity_period", "messages")
                                          if validity else None,
                                          parse_send_at(send_at, "send_at", "messages") if send_at else None)
        except SmsGatewayError as exc:
            log.info("JSON send from %s refused: %d %s", _client(request), exc.ozeki_code, exc.message)
            return json_error(exc)
        return web.json_response({"sms_id": accepted.sms_id, "parts": accepted.part_count}, status=201)

    @routes.get("/api/messages")
    async def json_list(request: web.Request) -> web.Response:
        try:
            params = parse_form(request.rel_url.raw_query_string)
            user = await query_user(request, params)
            try:
                since = float(params["since"]) if params.get("since") else None
                limit = int(params.get("limit") or 50)
            except ValueError:
                raise InvalidParameter("since/limit", "Messages", "numbers expected") from None
            found = await service.messages(user, params.get("state") or None, params.get("recipient") or None,
                                           since, limit, priority=params.get("priority") or None)
        except SmsGatewayError as exc:
            return json_error(exc)
        return web.json_response([_message_json(m, detail=False) for m in found])

    @routes.get("/api/messages/{sms_id}")
    async def json_status(request: web.Request) -> web.Response:
        try:
            user = await query_user(request)
            message = await service.status(user, request.match_info["sms_id"])
        except SmsGatewayError as exc:
            return json_error(exc)
        return web.json_response(_message_json(message))

    @routes.delete("/api/messages/{sms_id}")
    async def json_cancel(request: web.Request) -> web.Response:
        try:
            user = await query_user(request)
            message = await service.cancel(user, request.match_info["sms_id"])
        except SmsGatewayError as exc:
            return json_error(exc)
        log.info("message %s cancelled by %s", message.sms_id, user.name)
        return web.json_response(_message_json(message))

    @routes.get("/api/optouts")
    async def optout_list(request: web.Request) -> web.Response:
        """The opt-out list, newest first (admins only); `number` looks one number up."""
        try:
            await admin_user(request)
            query = request.rel_url.query
            limit = query.get("limit", "1000")
            if not (limit.isascii() and limit.isdigit()):
                raise InvalidParameter("limit", "OptOuts", "a whole number")
            found = await service.optouts.listed(query.get("number") or None, int(limit))
        except SmsGatewayError as exc:
            return json_error(exc)
        return web.json_response([{"number": o.number, "sender": o.scope or None, "created_at": o.created_at,
                                   "source": o.source} for o in found])

    @routes.post("/api/optouts")
    async def optout_add(request: web.Request) -> web.Response:
        """Put `number` on the opt-out list for `sender` (absent: every sender); 201, or 200 if it was there."""
        try:
            user = await admin_user(request)
            body = await json_object(request, "optouts", _OPTOUT_FIELDS)
            added = await service.optouts.add(body.get("number") or "", body.get("sender"),
                                              "cli" if user is OPERATOR else "api")
        except SmsGatewayError as exc:
            return json_error(exc)
        return web.json_response({"added": added}, status=201 if added else 200)

    @routes.delete("/api/optouts")
    async def optout_remove(request: web.Request) -> web.Response:
        """Take `number` (a query parameter) off the list for `sender` (absent: every sender)."""
        try:
            await admin_user(request)
            query = request.rel_url.query
            removed = await service.optouts.remove(query.get("number", ""), query.get("sender"))
        except SmsGatewayError as exc:
            return json_error(exc)
        return web.json_response({"removed": removed})

    @routes.get("/api/events")
    async def event_stream(request: web.Request) -> web.StreamResponse:
        """Live events, one JSON object per line, until the client leaves (admins only)."""
        try:
            await admin_user(request)
        except SmsGatewayError as exc:
            return json_error(exc)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        await response.prepare(request)
        async with service.events.subscribe() as queue:
            log.info("an event follower connected")
            try:
                while True:
                    await response.write((json.dumps(await queue.get()) + "\n").encode())
            except ConnectionError:  # the follower left: the way this stream ends
                log.info("an event follower left")
        return response

    @routes.get("/status")
    async def status_page(request: web.Request) -> web.Response:
        try:
            user = await admin_user(request)
            now = time.time()
            listing = _listing(request)
            messages = [await service.status(user, m.sms_id) for m in await _listed(service, user, listing)]
            page = render_status_page(health(), await service.stats(now - 3600), messages,
                                      await service.pending_callbacks(PAGE_SIZE), listing, show_text, now)
        except (AuthenticationRequired, AuthenticationFailed) as exc:
            return web.Response(status=401, text=exc.message,
                                headers={"WWW-Authenticate": 'Basic realm="asterisk-sendsms", charset="UTF-8"'})
        except SmsGatewayError as exc:
            return web.Response(status=exc.http_status, text=exc.message)
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    @routes.get("/metrics")
    async def prometheus(request: web.Request) -> web.Response:
        """Prometheus metrics, for admin users (scrape with basic_auth)."""
        try:
            await admin_user(request)
            text = (metrics or Metrics()).render(await service.stats(time.time() - 3600), health())
        except SmsGatewayError as exc:
            return web.Response(status=exc.http_status, text=exc.message)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def shows_details(request: web.Request) -> bool:
        """Whether a health check may see states and details (SMSC addresses, error texts): admins only. A load
        balancer, without credentials, needs no more than readiness."""
        if "Authorization" not in request.headers and not request.rel_url.raw_query_string:
            return False
        try:
            await admin_user(request)
        except SmsGatewayError:
            return False
        return True

    def transport_view(found: TransportHealth, details: bool) -> dict[str, Any]:
        return asdict(found) if details else {"name": found.name, "ready": found.ready}

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        """200 when the store answers and every transport is ready (for a load balancer in front of nodes)."""
        details = await shows_details(request)
        found = health()
        store_problem = await service.store_problem()
        ready = store_problem is None and all(h.ready for h in found)
        store: dict[str, Any] = {"ready": store_problem is None}
        if details:
            store["state"] = store_problem or "ok"
        return web.json_response({"status": "ok" if ready else "degraded", "store": store,
                                  "transports": [transport_view(h, details) for h in found]},
                                 status=200 if ready else 503, headers={"Cache-Control": "no-store"})

    @routes.get("/healthz/{transport}")
    async def transport_health(request: web.Request) -> web.Response:
        """One transport, for a check per SMSC connection or modem."""
        name = request.match_info["transport"]
        found = next((h for h in health() if h.name == name), None)
        if found is None:
            return web.json_response({"error": "no such transport"}, status=404)
        return web.json_response(transport_view(found, await shows_details(request)),
                                 status=200 if found.ready else 503, headers={"Cache-Control": "no-store"})

    @web.middleware
    async def unexpected_errors(request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            error = ServiceUnavailable("internal error; the message was not accepted")
            return web.Response(body=command_result(None, error.ozeki_code, error.message), status=500,
                                content_type=XML_TYPE, charset="utf-8")

    app = web.Application(client_max_size=http.max_body_bytes, middlewares=[unexpected_errors])
    app.add_routes(routes)
    return app


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """aiohttp's own log lines for the API's connections. A request it cannot parse is bad input: one INFO line
    naming the kind of error, never its text (which quotes the request line, passwords and message texts
    included). A client gone in the middle of a request is no error of ours."""

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc_info, tuple):
            error = exc_info[1]
        if isinstance(error, HttpProcessingError):
            self.logger.info("malformed HTTP request refused: %d %s", error.code, type(error).__name__)
        elif isinstance(error, ConnectionError | ClientPayloadError):
            self.logger.debug("a client left in the middle of a request: %s", type(error).__name__)
        else:
            self.logger.log(level, msg, *args, exc_info=exc_info, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


def make_runner(app: web.Application, http: HttpConfig, shutdown_timeout: float) -> web.AppRunner:
    """The aiohttp runner for the API's TCP socket, with the fast lane's limits for the connections it hands
    over: the same request line, few and short headers, the idle timeout (aiohttp's own default is an hour), and
    the lane's LINGER for a body it does not read (aiohttp's default 10 s, for a client that may never stop)."""
    return web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout,
                         max_line_size=max_request_line(http.max_body_bytes), max_headers=MAX_HEADERS,
                         max_field_size=MAX_HEADER_BYTES, keepalive_timeout=http.idle_timeout, lingering_time=LINGER,
                         logger=_ServerLog(logging.getLogger("aiohttp.server"), {}))
