"""The daemon's HTTP face (aiohttp): the Ozeki `/api` endpoint, the JSON message API and health; served on
TCP for applications and on a Unix socket for the local operator's CLI."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Protocol

from aiohttp import web

from .auth import OPERATOR, Authenticator
from .calls import CallService
from .config import StatusConfig, UserConfig
from .errors import (
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
from .metrics import Metrics
from .model import MessageView
from .ozeki import SUCCESS_MESSAGE, call_params, command_result, merge_params, parse_form, send_sms_params
from .service import Accepted, SmsService
from .status_page import PAGE_SIZE, Listing, render_status_page
from .transports import TransportHealth

__all__ = ["HandOver", "OzekiEndpoint", "build_app"]

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
            except (binascii.Error, UnicodeDecodeError):
                raise ParseError("malformed Basic authorization header") from None
        return await auth.authenticate(username, password, client)
    return identify


async def operator_identify(client: str, authorization: str, params: dict[str, str]) -> UserConfig:
    return OPERATOR  # the control socket's file permissions are its authentication


class Sender(Protocol):
    """What `SendSms` needs: the service, or in an HTTP front worker its link to the daemon."""

    async def send(self, user: UserConfig, recipient: str, text: str, sender: str | None = None,
                   callback_url: str | None = None) -> Accepted: ...


class HandOver(Exception):
    """Raised while answering a request that another process answers: an HTTP front worker gives the
    connection to the daemon."""


class _BodyTooLarge(ParseError):
    http_status = 413


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
                                           send.delivery_report_url)
        log.debug("accepted %s for %s (%d parts)", accepted.sms_id, send.recipient, accepted.part_count)
        return {"SmsId": accepted.sms_id}


async def _request_params(request: web.Request) -> dict[str, str]:
    query = parse_form(request.rel_url.raw_query_string)
    if request.method != "POST" or not request.can_read_body:
        return query
    try:
        if request.content_type == "multipart/form-data":
            form = await request.post()
            return merge_params(query, {k: v for k, v in form.items() if isinstance(v, str)})
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _BodyTooLarge(f"the request body is larger than {request.client_max_size} bytes") from None
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


def _message_json(message: MessageView, detail: bool = True) -> dict[str, Any]:
    """A message as JSON; a list's entries (`detail` False) leave out parts and history, which a list does not
    read (GET /api/messages/ID has them), rather than show them empty."""
    data = asdict(message)
    data["coding"] = message.coding.value
    data["state"] = message.state.value
    if detail:
        data["history"] = [{"at": h.at, "state": h.state.value, "detail": h.detail} for h in message.history]
    else:
        del data["parts"], data["history"]
    return data


def build_app(ozeki: OzekiEndpoint, service: SmsService, health: HealthSource, max_body: int,
              metrics: Metrics | None = None, status: StatusConfig | None = None) -> web.Application:
    routes = web.RouteTableDef()
    identify = ozeki.identify
    show_text = (status or StatusConfig()).show_text

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
        status, reply = await ozeki.answer(request.method, lambda: _request_params(request),
                                           request.headers.get("Authorization", ""), _client(request))
        return web.Response(body=reply, status=status, content_type=XML_TYPE, charset="utf-8")

    def json_error(exc: SmsGatewayError) -> web.Response:
        return web.json_response({"code": exc.ozeki_code, "error": exc.message}, status=exc.http_status)

    @routes.post("/api/messages")
    async def json_send(request: web.Request) -> web.Response:
        try:
            try:
                body = json.loads(await request.read() or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise ParseError("the body is not JSON") from None
            if not isinstance(body, dict) or not all(isinstance(v, str | None) for v in body.values()):
                raise ParseError("the body must be a JSON object of strings")
            user = await query_user(request)
            accepted = await service.send(user, body.get("recipient") or "", body.get("text") or "",
                                          body.get("sender"), body.get("delivery_report_url"))
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
                                           since, limit)
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
            while True:
                await response.write((json.dumps(await queue.get()) + "\n").encode())

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

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        """200 when the store answers and every transport is ready (for a load balancer in front of nodes)."""
        transports = [asdict(h) for h in health()]
        store_problem = await service.store_problem()
        ready = store_problem is None and all(t["ready"] for t in transports)
        store = {"ready": store_problem is None, "state": store_problem or "ok"}
        return web.json_response({"status": "ok" if ready else "degraded", "store": store, "transports": transports},
                                 status=200 if ready else 503)

    @routes.get("/healthz/{transport}")
    async def transport_health(request: web.Request) -> web.Response:
        """One transport, for a check per SMSC connection or modem."""
        name = request.match_info["transport"]
        found = next((h for h in health() if h.name == name), None)
        if found is None:
            return web.json_response({"error": f"no transport named {name!r}"}, status=404)
        return web.json_response(asdict(found), status=200 if found.ready else 503)

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

    app = web.Application(client_max_size=max_body, middlewares=[unexpected_errors])
    app.add_routes(routes)
    return app
