"""The operator's views over HTTP: the status page, Prometheus metrics (both for admin users) and the health
checks (readiness for a load balancer, details for admins), per gateway and per transport."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from asterisk_sendsms.app.service import SmsService
from asterisk_sendsms.app.transport import TransportHealth
from asterisk_sendsms.config import UserConfig
from asterisk_sendsms.core.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    InvalidParameter,
    MessageNotFound,
    SmsGatewayError,
)
from asterisk_sendsms.core.model import MessageView
from asterisk_sendsms.edge.http.statuses import http_status
from asterisk_sendsms.ops.metrics import Metrics
from asterisk_sendsms.ops.status_page import PAGE_SIZE, Listing, render_status_page

__all__ = ["HealthSource", "add_status_routes"]

HealthSource = Callable[[], list[TransportHealth]]
MAX_PAGE = 10_000  # the status page lists newest first; deeper than this, search instead


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


def add_status_routes(routes: web.RouteTableDef, service: SmsService, health: HealthSource,
                      admin_user: Callable[[web.Request], Awaitable[UserConfig]], metrics: Metrics | None,
                      show_text: bool) -> None:
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
            return web.Response(status=http_status(exc), text=exc.message)
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    @routes.get("/metrics")
    async def prometheus(request: web.Request) -> web.Response:
        """Prometheus metrics, for admin users (scrape with basic_auth)."""
        try:
            await admin_user(request)
            text = (metrics or Metrics()).render(await service.stats(time.time() - 3600), health())
        except SmsGatewayError as exc:
            return web.Response(status=http_status(exc), text=exc.message)
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
