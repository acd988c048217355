"""The dispatcher: claims due messages from the store, hands each to a transport its route allows, records
the outcome (submitted, retry with backoff, failed), applies receipts and expires overdue messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TypeVar

from asterisk_sendsms.app.clock import SYSTEM_CLOCK, wait_event
from asterisk_sendsms.app.events import EventHub
from asterisk_sendsms.app.limits import NO_LIMITS, Limits
from asterisk_sendsms.app.notifier import Notifier
from asterisk_sendsms.app.optout import OptOuts
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.app.store import Store
from asterisk_sendsms.app.transport import Transport
from asterisk_sendsms.config import DispatchConfig, MessagesConfig
from asterisk_sendsms.core.clock import Clock
from asterisk_sendsms.core.encoding import encode_message
from asterisk_sendsms.core.errors import (
    PermanentSubmitError,
    ServiceUnavailable,
    SmsGatewayError,
    TransientSubmitError,
    log_level,
)
from asterisk_sendsms.core.lifecycle import UNSENT_EXPIRY, State
from asterisk_sendsms.core.model import IncomingPart, OutboundMessage, Receipt
from asterisk_sendsms.core.timetable import DailyWindow
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Priority

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPIRY_SWEEP_INTERVAL = 10.0
# No transport of the route is up: look again soon, without spending an attempt.
NOT_READY_DELAY = 2.0
# At start-up the first claim waits this long at most for every transport to connect (an SMPP bind, a modem's
# set-up), rather than putting the waiting messages back by NOT_READY_DELAY.
STARTUP_GRACE = 5.0
STORE_PIPELINE = 256
# Beyond that, room that only interactive messages may take: a pipeline full of claimed bulk messages (waiting
# for their transport's window and rate) must not keep a caller's message in the store until some leave.
INTERACTIVE_ROOM = 64
# Claims of messages waiting in a transport are renewed this often, as a share of the lease: two renewals may
# fail before one lapses.
LEASE_RENEWAL = 1 / 3
# An outcome the store could not take is written again, for this share of the lease, every 0.2 s to 5 s.
RECORD_PATIENCE = 0.8
RECORD_RETRY_INITIAL = 0.2
RECORD_RETRY_MAX = 5.0
# A message whose dispatch fails this often with an unexpected error (a bug) is parked as failed.
UNEXPECTED_FAILURES = 3
# Longest text the encoder may have to split again at dispatch (validated at accept).
_ANY_LENGTH = 255


class Dispatcher:
    def __init__(self, store: Store, transports: Mapping[str, Transport], router: Router,
                 dispatch: DispatchConfig, messages: MessagesConfig, notifier: Notifier, optouts: OptOuts,
                 incoming_url: str | None = None, events: EventHub | None = None,
                 clock: Clock = SYSTEM_CLOCK, bulk_hours: DailyWindow | None = None,
                 limits: Limits = NO_LIMITS) -> None:
        self._store = store
        self._transports = dict(transports)
        self._router = router
        self._config = dispatch
        self._messages = messages
        self._notifier = notifier
        self._optouts = optouts
        self._incoming_url = incoming_url
        self._events = events or EventHub()
        self._clock = clock
        self._bulk_hours = bulk_hours
        self._limits = limits
        self._wakeup = asyncio.Event()
        # Beyond the transports' windows, room for messages whose outcome is being committed: the store's
        # fsync must not hold a window slot.
        self._capacity = sum(t.capacity for t in self._transports.values()) + STORE_PIPELINE
        # A full pipeline is topped up once this many have left it: a claim for every message that leaves
        # would be a store transaction each.
        self._refill = STORE_PIPELINE // 4
        self._slot_freed = asyncio.Event()
        self._interactive_waiting = False
        self._stopping = False
        self._turns: dict[str, int] = {}
        # Per transport, the messages handed to it whose outcome is not recorded yet: sms_id -> (class, when).
        self._handed: dict[str, dict[str, tuple[Priority, float]]] = {name: {} for name in self._transports}
        self._unexpected: dict[str, int] = {}  # sms_id: dispatches that ended in an unexpected error

    def wake(self, priority: Priority = DEFAULT_PRIORITY) -> None:
        """Messages were accepted; `priority` is the most urgent class among them."""
        if priority is Priority.INTERACTIVE:
            self._interactive_waiting = True
            self._slot_freed.set()
        self._wakeup.set()

    async def run(self) -> None:
        released = await self._store.release_claims(self._clock.time())
        if released:
            log.info("%d messages claimed before a restart are queued again", released)
        for transport in self._transports.values():
            await transport.resume(await self._store.awaiting_receipts(transport.name))
        give_up = self._clock.monotonic() + STARTUP_GRACE
        # Transports tell whether they are ready, not when they become so: looked at every 20 ms, at start-up only.
        while not all(t.ready for t in self._transports.values()) and self._clock.monotonic() < give_up:
            await self._clock.sleep(0.02)
        async with asyncio.TaskGroup() as group:
            expiry = group.create_task(self._expiry_loop())
            leases = group.create_task(self._lease_loop())
            await self._claim_loop(group)
            expiry.cancel()  # the submits in flight finish before the group closes
            leases.cancel()

    def stop(self) -> None:
        """Claim nothing more; `run` returns once the submits in flight have their answers."""
        self._stopping = True
        self._wakeup.set()
        self._slot_freed.set()

    def stopping(self) -> bool:
        return self._stopping

    async def _claim_loop(self, group: asyncio.TaskGroup) -> None:
        pending: set[asyncio.Task[None]] = set()
        while not self._stopping:
            free = self._capacity - len(pending)
            up_to = self._classes_now()
            if free < self._refill:
                free += INTERACTIVE_ROOM
                up_to = Priority.INTERACTIVE
                if not self._interactive_waiting or free <= 0:
                    self._slot_freed.clear()
                    if not await wait_event(self._clock, self._slot_freed, self._config.poll_interval):
                        # Look for interactive messages anyway: one accepted by another node, or scheduled
                        # and come due, wakes nobody here.
                        self._interactive_waiting = True
                    continue
            self._wakeup.clear()
            self._interactive_waiting = False
            if self._stopping:
                break
            try:
                batch = await self._store.claim(free, self._clock.time(), self._config.lease, up_to, self._limits)
            except SmsGatewayError as exc:
                log.log(log_level(exc), "cannot claim messages: %s", exc)
                batch = []
            for message in batch:
                task = group.create_task(self._dispatch(message))
                pending.add(task)
                task.add_done_callback(partial(self._left, pending))
            if not batch:
                await wait_event(self._clock, self._wakeup, self._config.poll_interval)

    def waiting(self, transport: str) -> tuple[tuple[Priority, int, float], ...]:
        """What `transport` holds of ours (handed over, outcome not recorded yet), by class: (class, messages,
        when the longest-waiting was handed over)."""
        by_class: dict[Priority, tuple[int, float]] = {}
        for priority, since in self._handed.get(transport, {}).values():
            count, oldest = by_class.get(priority, (0, since))
            by_class[priority] = (count + 1, min(oldest, since))
        return tuple((priority, *by_class[priority]) for priority in Priority if priority in by_class)

    def _classes_now(self) -> Priority:
        """The least urgent class that may leave now: outside [policy] bulk_hours bulk waits (in the store: what
        a transport holds already goes)."""
        hours = self._bulk_hours
        return Priority.BULK if hours is None or hours.is_open(self._clock.time()) else Priority.NORMAL

    def _left(self, pending: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if self._capacity - len(pending) >= self._refill:
            self._slot_freed.set()

    async def _expiry_loop(self) -> None:
        while True:
            try:
                if await self._store.expire_overdue(self._clock.time()):
                    self._notifier.wake()
            except SmsGatewayError as exc:
                log.log(log_level(exc), "cannot expire overdue messages: %s", exc)
            await self._clock.sleep(EXPIRY_SWEEP_INTERVAL)

    async def _lease_loop(self) -> None:
        """Messages handed to a transport may wait there (for a window slot, the throughput, a slow modem) longer
        than the claim's lease: their claims are renewed, or the next claim would take them again and they would
        be sent twice."""
        while True:
            await self._clock.sleep(self._config.lease * LEASE_RENEWAL)
            held = [sms_id for handed in self._handed.values() for sms_id in handed]
            if not held:
                continue
            try:
                await self._store.renew_claims(held, self._clock.time() + self._config.lease)
            except SmsGatewayError as exc:
                log.log(log_level(exc), "cannot renew the claims of %d messages waiting for their transport: %s",
                        len(held), exc)

    def _pick(self, recipient: str) -> tuple[Transport | None, bool]:
        """A ready transport of the recipient's route (the first, or the next in turn for round-robin), and
        whether the route exists at all."""
        route = self._router.route_for(recipient)
        candidates = [self._transports[n] for n in route.transports if n in self._transports] if route else []
        ready = [t for t in candidates if t.ready]
        if not ready or route is None:
            return None, bool(candidates)
        if route.balance == "round-robin":
            turn = self._turns[route.prefix] = self._turns.get(route.prefix, -1) + 1
            return ready[turn % len(ready)], True
        return ready[0], True

    def _backoff(self, attempts: int) -> float:
        return float(min(self._config.retry_max, self._config.retry_initial * 2 ** max(attempts - 1, 0)))

    async def _dispatch(self, message: OutboundMessage) -> None:
        try:
            await self._submit(message)
        except SmsGatewayError as exc:
            # Recording the outcome failed; the claim's lease runs out and the message is tried again.
            log.log(log_level(exc), "message %s: outcome not recorded, will retry after the lease: %s", message.sms_id,
                    exc)
        except Exception as exc:
            # A bug must not stop every other message: this one waits for its lease like above, and a message
            # that keeps failing so is parked as failed with the reason instead of being claimed forever.
            failures = self._unexpected[message.sms_id] = self._unexpected.get(message.sms_id, 0) + 1
            log.exception("message %s: unexpected error while dispatching (%d of %d before it is parked)",
                          message.sms_id, failures, UNEXPECTED_FAILURES)
            if failures >= UNEXPECTED_FAILURES:
                await self._park(message, exc)
        else:
            if self._unexpected:
                self._unexpected.pop(message.sms_id, None)

    async def _park(self, message: OutboundMessage, error: Exception) -> None:
        del self._unexpected[message.sms_id]
        reason = f"the gateway failed on this message {UNEXPECTED_FAILURES} times ({type(error).__name__})"
        try:
            await self._store.finish(message.sms_id, State.FAILED, "INTERNAL_ERROR", reason, self._clock.time())
        except SmsGatewayError as exc:
            log.log(log_level(exc), "message %s: not parked as failed: %s", message.sms_id, exc)
            return
        self._notifier.wake()
        self._events.publish("failed", message.sms_id, error=reason)

    async def _submit(self, message: OutboundMessage) -> None:
        now = self._clock.time()
        transport, routed = self._pick(message.recipient)
        if transport is None:
            if not routed:
                await self._store.finish(message.sms_id, State.FAILED, "NO_ROUTE",
                                         f"no transport is configured for {message.recipient}", now)
                self._notifier.wake()
            else:
                await self._store.retry_later(message.sms_id, now + NOT_READY_DELAY, "NO_TRANSPORT_READY",
                                              "no transport of the route is ready", now, attempted=False)
            return
        # Its claim is renewed from here until its outcome is recorded: waiting for the transport, or for a store
        # that is down, may outlast the lease.
        handed = self._handed[transport.name]
        handed[message.sms_id] = (message.priority, now)
        try:
            await self._submit_on(transport, message)
        finally:
            del handed[message.sms_id]

    async def _submit_on(self, transport: Transport, message: OutboundMessage) -> None:
        attempt = message.previous_attempts + 1
        encoded = encode_message(message.text, _ANY_LENGTH)
        try:
            smsc_ids = await transport.submit(message, encoded)
        except TransientSubmitError as exc:
            now = self._clock.time()
            if now >= message.expires_at:  # e.g. it waited for the transport past its ValidityPeriod
                await self._record(partial(self._store.finish, message.sms_id, State.EXPIRED, *UNSENT_EXPIRY, now,
                                           transport.name, attempted=True))
                self._notifier.wake()
                self._events.publish("expired", message.sms_id, error=UNSENT_EXPIRY[1])
            elif attempt >= self._config.max_attempts:
                await self._record(partial(self._store.finish, message.sms_id, State.FAILED,
                                           exc.code or "RETRIES_EXHAUSTED",
                                           f"gave up after {attempt} attempts: {exc.message}", now, transport.name,
                                           attempted=True))
                self._notifier.wake()
                self._events.publish("failed", message.sms_id, error=exc.message)
            else:
                await self._store.retry_later(message.sms_id, now + self._backoff(attempt), exc.code,
                                              exc.message, now, attempted=True)
                self._events.publish("retry", message.sms_id, error=exc.message, attempt=attempt)
            return
        except PermanentSubmitError as exc:
            await self._record(partial(self._store.finish, message.sms_id, State.REJECTED, exc.code, exc.message,
                                       self._clock.time(), transport.name, attempted=True))
            self._notifier.wake()
            self._events.publish("rejected", message.sms_id, error=f"{exc.code} {exc.message}".strip())
            return
        now = self._clock.time()
        deadline = now + self._messages.receipt_timeout if transport.expects_receipts else None
        result = await self._record(partial(self._store.mark_submitted, message.sms_id, transport.name, smsc_ids,
                                            now, deadline))
        self._events.publish("submitted", message.sms_id, transport=transport.name, smsc_ids=smsc_ids)
        if result.final_state is not None:
            self._notifier.wake()
            self._events.publish(result.final_state.value, message.sms_id)

    async def _record(self, write: Callable[[], Awaitable[T]]) -> T:
        """Record what the SMSC said about a message. It has gone out (or been refused for good): if the store
        is down, keep trying while the claim's lease lasts, for once it passes the message is sent again."""
        give_up = self._clock.monotonic() + self._config.lease * RECORD_PATIENCE
        delay = RECORD_RETRY_INITIAL
        while True:
            try:
                return await write()
            except ServiceUnavailable:
                if self._stopping or self._clock.monotonic() + delay >= give_up:
                    raise
            await self._clock.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX)

    async def on_incoming(self, part: IncomingPart) -> None:
        incoming_id = await self._store.store_incoming(part, self._incoming_url)
        if incoming_id is not None:
            log.info("incoming SMS %s from %s to %s via %s", incoming_id, part.sender, part.recipient, part.transport)
            if self._incoming_url:
                self._notifier.wake()
            try:
                await self._optouts.heard(part)
            except SmsGatewayError as exc:
                # The SMS is stored: raised to the transport, it would be refused and sent again by the SMSC.
                log.log(log_level(exc), "incoming SMS %s: its keyword could not be applied to the opt-out list: %s",
                        incoming_id, exc)

    async def on_receipt(self, receipt: Receipt) -> None:
        receipt_time = self._clock.time()
        result = await self._store.apply_receipt(receipt, receipt_time)
        if not result.matched:
            log.debug("receipt for unknown SMSC id %s on %s kept for its submit", receipt.smsc_id,
                      receipt.transport)
        elif result.final_state is not None:
            self._notifier.wake()
            latency = receipt_time - result.submitted_at if result.submitted_at is not None else None
            self._events.publish(result.final_state.value, result.sms_id or "", error=receipt.error_code,
                                 receipt_latency=latency)
