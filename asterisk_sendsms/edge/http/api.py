"""The daemon's HTTP app (aiohttp): the Ozeki `/api` route (answered by `endpoint`), the JSON message and
opt-out API, the event stream, the operator's views (`status_routes`), and the runner with the fast lane's
limits; served on TCP for applications and on a Unix socket for the local operator's CLI."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from asterisk_sendsms.app.auth import OPERATOR
from asterisk_sendsms.app.service import SmsService
from asterisk_sendsms.config import HttpConfig, StatusConfig, UserConfig
from asterisk_sendsms.core.errors import (
    ForbiddenUser,
    InvalidParameter,
    ParseError,
    ServiceUnavailable,
    SmsGatewayError,
)
from asterisk_sendsms.core.model import MessageView
from asterisk_sendsms.core.timetable import parse_send_at
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, parse_priority
from asterisk_sendsms.edge.http.endpoint import XML_TYPE, OzekiEndpoint, client_of, read_body, request_params, respond
from asterisk_sendsms.edge.http.status_routes import HealthSource, add_status_routes
from asterisk_sendsms.edge.http.statuses import http_status
from asterisk_sendsms.ops.metrics import Metrics
from asterisk_sendsms.wire.http1 import LINGER, MAX_HEADER_BYTES, MAX_HEADERS, max_request_line
from asterisk_sendsms.wire.ozeki import (
    command_result,
    ozeki_code,
    parse_form,
    parse_validity_period,
)

__all__ = ["build_app", "make_runner"]

log = logging.getLogger(__name__)


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
        return await identify(client_of(request), request.headers.get("Authorization", ""),
                              parse_form(request.rel_url.raw_query_string) if params is None else params)

    async def admin_user(request: web.Request) -> UserConfig:
        user = await query_user(request)
        if not user.admin:
            raise ForbiddenUser(f"Forbidden user: {user.name} is not an admin (admin = true)")
        return user

    @routes.route("*", "/api")
    async def ozeki_api(request: web.Request) -> web.Response:
        status, reply = await ozeki.answer(request.method, lambda: request_params(request, body_timeout),
                                           request.headers.get("Authorization", ""), client_of(request))
        return respond(web.Response(body=reply, status=status, content_type=XML_TYPE, charset="utf-8"))

    def json_error(exc: SmsGatewayError) -> web.Response:
        return respond(web.json_response({"code": ozeki_code(exc), "error": exc.message}, status=http_status(exc)))

    async def json_object(request: web.Request, command: str, fields: tuple[str, ...]) -> dict[str, str | None]:
        """The body's JSON object of strings; a field of `fields` of another type (a number for send_at) is
        named, other keys are not (a client's key never reaches the log)."""
        try:
            body = json.loads(await read_body(request, request.read, body_timeout) or b"{}")
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
            log.info("JSON send from %s refused: %d %s", client_of(request), ozeki_code(exc), exc.message)
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

    add_status_routes(routes, service, health, admin_user, metrics, show_text)

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
            return web.Response(body=command_result(None, ozeki_code(error), error.message), status=500,
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
