"""`SmsService`: the one use case every entry point calls (HTTP, CLI, AGI, FastAGI, ARI, OzML): validate,
encode, route-check and durably accept a message; look a message up."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from asterisk_sendsms.app.auth import check_destination, check_priority
from asterisk_sendsms.app.callflow import Changed
from asterisk_sendsms.app.events import EventHub
from asterisk_sendsms.app.limits import Limits
from asterisk_sendsms.app.notifier import validate_callback_url
from asterisk_sendsms.app.optout import OptOuts
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.app.store import Store
from asterisk_sendsms.config import Config, UserConfig
from asterisk_sendsms.core.addresses import parse_recipient, parse_sender
from asterisk_sendsms.core.encoding import encode_message
from asterisk_sendsms.core.errors import InvalidParameter, MessageNotFound, NoRoute, RequestError, SmsGatewayError
from asterisk_sendsms.core.ids import new_sms_id
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import MessageView, NewMessage, PendingCallback
from asterisk_sendsms.core.timetable import check_send_at
from asterisk_sendsms.core.traffic import CALL_PRIORITY, DEFAULT_PRIORITY, Priority, parse_priority

STORE_CHECK_TIMEOUT = 2.0  # /healthz: a store slower than this counts as down

__all__ = ["Accepted", "ServiceBackend", "SmsService", "prepare_message"]

MAX_TEXT_CHARACTERS = 10_000


@dataclass(frozen=True, slots=True)
class Accepted:
    sms_id: str
    part_count: int


def prepare_message(config: Config, router: Router, user: UserConfig, recipient: str, text: str,
                    sender: str | None, callback_url: str | None, now: float,
                    priority: Priority = DEFAULT_PRIORITY, validity_period: float | None = None,
                    send_at: float | None = None) -> NewMessage:
    """The message `user` asks for, validated and encoded; raises a `RequestError`. Its validity counts from
    its SendAt."""
    to = parse_recipient(recipient)
    sender_value = sender.strip() if sender else ""
    sender_value = sender_value or user.default_sender or config.messages.default_sender or ""
    from_ = parse_sender(sender_value).value if sender_value else None
    if len(text) > MAX_TEXT_CHARACTERS:
        raise InvalidParameter("Message", reason=f"longer than {MAX_TEXT_CHARACTERS} characters")
    encoded = encode_message(text, config.messages.max_parts)
    url = validate_callback_url(callback_url, config.callbacks) if callback_url else None
    check_destination(user, to.value)
    check_priority(user, priority)
    if router.route_for(to.value) is None:
        raise NoRoute(to.value)
    leaves_at = check_send_at(send_at, now, config.policy.schedule_horizon) if send_at is not None else None
    return NewMessage(sms_id=new_sms_id(), username=user.name, sender=from_, recipient=to.value, text=text,
                      coding=encoded.coding, part_count=encoded.part_count, callback_url=url, created_at=now,
                      expires_at=(leaves_at or now) + (validity_period or config.messages.validity),
                      priority=priority, validity_period=validity_period, send_at=leaves_at)


class SmsService:
    def __init__(self, config: Config, store: Store, router: Router, on_accepted: Callable[[Priority], None],
                 on_cancelled: Callable[[], None], limits: Limits, optouts: OptOuts, events: EventHub | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._store = store
        self._router = router
        self._on_accepted = on_accepted
        self._on_cancelled = on_cancelled
        self.optouts = optouts
        self.events = events or EventHub()
        self._clock = clock
        self.limits = limits

    async def send(self, user: UserConfig, recipient: str, text: str, sender: str | None = None,
                   callback_url: str | None = None, priority: Priority = DEFAULT_PRIORITY,
                   validity_period: float | None = None, send_at: float | None = None) -> Accepted:
        """Validate and commit one message. Returns only after the commit; raises a `RequestError` (nothing
        stored) or `ServiceUnavailable` (nothing stored)."""
        message = prepare_message(self._config, self._router, user, recipient, text, sender, callback_url,
                                  self._clock(), priority, validity_period, send_at)
        [refusal] = await self.commit([message])
        if refusal is not None:
            raise refusal
        return Accepted(message.sms_id, message.part_count)

    async def commit(self, messages: Sequence[NewMessage]) -> list[RequestError | None]:
        """Durably accept validated messages (HTTP front workers validate, the daemon commits): None for each
        one committed, its refusal for each one not (its recipient opted out, its user's quota is used up: the
        store decides both in the transaction that commits). Raises `ServiceUnavailable` when none was."""
        refused: dict[str, RequestError] = {}
        if len(messages) == 1:
            try:
                await self._store.accept(messages[0], self.limits)
            except RequestError as refusal:
                refused[messages[0].sms_id] = refusal
        else:
            outcomes = await self._store.accept_many(messages, self.limits)
            refused.update((m.sms_id, outcome) for m, outcome in zip(messages, outcomes, strict=True) if outcome)
        accepted = [m for m in messages if m.sms_id not in refused]
        if accepted:
            self._on_accepted(min((m.priority for m in accepted), key=lambda p: p.rank))
        for message in accepted:
            self.events.publish("accepted", message.sms_id, recipient=message.recipient, user=message.username,
                                parts=message.part_count)
        return [refused.get(m.sms_id) for m in messages]

    async def cancel(self, user: UserConfig, sms_id: str) -> MessageView:
        """Withdraw a message not yet submitted; its notification says Cancelled."""
        message = await self._store.cancel(_canonical(sms_id, "Cancel"), None if user.admin else user.name,
                                           self._clock())
        self._on_cancelled()
        self.events.publish("cancelled", message.sms_id)
        return message

    async def messages(self, user: UserConfig, state: str | None, recipient: str | None, since: float | None,
                       limit: int, offset: int = 0, priority: str | None = None) -> list[MessageView]:
        """The user's messages (an admin's: everyone's), newest first, skipping `offset` of them."""
        try:
            wanted = State(state) if state else None
        except ValueError:
            raise InvalidParameter("state", "Messages", f"one of {', '.join(s.value for s in State)}") from None
        of_class = parse_priority(priority, "priority", "Messages") if priority else None
        if not 1 <= limit <= MAX_LIST:
            raise InvalidParameter("limit", "Messages", f"from 1 to {MAX_LIST}")
        if offset < 0:
            raise InvalidParameter("offset", "Messages", "0 or more")
        return await self._store.list_messages(None if user.admin else user.name, wanted, recipient, since, limit,
                                               offset, of_class)

    async def store_problem(self) -> str | None:
        """None when the store answers a trivial read within STORE_CHECK_TIMEOUT, else what is wrong."""
        try:
            await asyncio.wait_for(self._store.ping(), STORE_CHECK_TIMEOUT)
        except TimeoutError:
            return f"the message store did not answer within {STORE_CHECK_TIMEOUT:g}s"
        except SmsGatewayError as exc:
            return exc.message
        return None

    async def stats(self, since: float) -> dict[str, Any]:
        """The store's counts, and `limits`: each limited user's (name, max_rate, [(period, used, quota,
        resets at)])."""
        stats = await self._store.stats(since)
        now = self._clock()
        counters = {username: self.limits.quota_keys(username, now) for username in sorted(self.limits.users)}
        used = await self._store.quota_use([(username, key) for username, keys in counters.items()
                                            for key, _, _, _ in keys]) if any(counters.values()) else {}
        stats["limits"] = [(username, self.limits.rate(username),
                            [(period.value, used.get((username, key), 0), quota, resets)
                             for key, quota, period, resets in keys]) for username, keys in counters.items()]
        return stats

    async def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        return await self._store.pending_callbacks(limit)

    async def status(self, user: UserConfig, sms_id: str, detail: bool = True) -> MessageView:
        """A message as its sender (or an admin) may see it."""
        message = await self._store.get(_canonical(sms_id, "Status"), detail)
        if message is None or not (user.admin or message.username == user.name):
            raise MessageNotFound(sms_id)
        return message


MAX_LIST = 1000


def _canonical(sms_id: str, command: str) -> str:
    try:
        return str(uuid.UUID(sms_id))
    except ValueError:
        raise InvalidParameter("SmsId", command, "not a UUID") from None


class ServiceBackend:
    """The service as the call flow's `SmsBackend`, for entry points inside the daemon (FastAGI, ARI)."""

    def __init__(self, service: SmsService, user: UserConfig) -> None:
        self._service = service
        self._user = user

    async def send(self, recipient: str, text: str, sender: str | None, report_url: str | None) -> str:
        return (await self._service.send(self._user, recipient, text, sender, report_url, CALL_PRIORITY)).sms_id

    async def state(self, sms_id: str) -> tuple[State, str]:
        message = await self._service.status(self._user, sms_id, detail=False)
        return message.state, " ".join(filter(None, (message.error_code, message.error_text)))

    @asynccontextmanager
    async def watching(self, sms_id: str) -> AsyncIterator[Changed]:
        """Woken by the dispatcher's events of the message (a call learns its SMS was submitted at once, not at
        the next poll)."""
        async with self._service.events.watching(sms_id) as event:
            async def changed(within: float) -> None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), within)
                event.clear()
            yield changed
