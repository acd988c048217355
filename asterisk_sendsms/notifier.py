"""Delivery notifications: the callback URL policy, the Ozeki `SMSDeliveryReport` form, and the loop that
POSTs each one from the store's outbox until the receiver answers 2xx or the retry time runs out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from .config import CallbackConfig
from .errors import InvalidParameter, SmsGatewayError, log_level
from .http_client import HttpClient, HttpError
from .model import CallbackJob, IncomingView, MessageView
from .ozeki import form_encode
from .store import Store

__all__ = ["Notifier", "delivery_report_form", "incoming_form", "validate_callback_url"]

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
DONE_BATCH_DELAY = 0.05
_LEASE_MARGIN = 30.0


def validate_callback_url(url: str, policy: CallbackConfig, parameter: str = "DeliveryReportURL") -> str:
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidParameter(parameter, reason=f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise InvalidParameter(parameter, reason="the URL cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidParameter(parameter, reason="only http:// and https:// URLs with a host are supported")
    if policy.allowed_hosts and hostname.lower() not in policy.allowed_hosts:
        raise InvalidParameter(parameter, reason=f"host {hostname} is not in the callback allow-list")
    return url


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def delivery_report_form(message: MessageView) -> dict[str, str]:
    return {
        "NotificationName": "SMSDeliveryReport",
        "SmsId": message.sms_id,
        "Sender": message.sender or "",
        "Recipient": message.recipient,
        "DeliveryStatus": message.state.value.capitalize(),
        "DeliveryTime": _iso(message.updated_at),
        "ErrorCode": message.error_code,
        "ErrorMessage": message.error_text,
        "Parts": str(message.part_count),
    }


def incoming_form(message: IncomingView) -> dict[str, str]:
    return {
        "NotificationName": "IncomingSMS",
        "SmsId": message.sms_id,
        "Sender": message.sender,
        "Recipient": message.recipient,
        "Message": message.text,
        "ReceiveTime": _iso(message.received_at),
        "Transport": message.transport,
    }


class Notifier:
    def __init__(self, store: Store, policy: CallbackConfig, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(policy.concurrency)
        self._failing: set[str] = set()  # hosts already reported as failing (log once per outage)
        self._recovered: dict[str, float] = {}  # when a failing host answered again
        self._done: list[int] = []
        self._done_waiting = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    def _backoff(self, attempts: int) -> float:
        return float(min(self._policy.retry_max, self._policy.retry_initial * 2 ** max(attempts - 1, 0)))

    async def run(self) -> None:
        lease = self._policy.timeout + _LEASE_MARGIN
        client = HttpClient(self._policy.timeout, self._policy.concurrency)
        try:
            await self._serve(client, lease)
        finally:
            await client.close()

    async def _serve(self, client: HttpClient, lease: float) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._record_done())
            while True:
                self._wakeup.clear()
                try:
                    jobs = await self._store.claim_callbacks(self._policy.concurrency, self._clock(), lease)
                except SmsGatewayError as exc:
                    log.log(log_level(exc), "cannot read pending notifications: %s", exc)
                    jobs = []
                for job in jobs:
                    await self._slots.acquire()
                    group.create_task(self._deliver(client, job))
                if len(jobs) < self._policy.concurrency:
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), 1.0)
                    except TimeoutError:
                        pass

    async def _deliver(self, client: HttpClient, job: CallbackJob) -> None:
        try:
            form = self._form(job)
            if form is None:
                await self._store.callback_abandon(job.job_id, "message no longer in the store", self._clock())
                return
            host = urlsplit(job.url).hostname or job.url
            started = self._clock()
            error = await self._post(client, job.url, form)
            now = self._clock()
            if error is None:
                self._done.append(job.job_id)
                self._done_waiting.set()
                if host in self._failing:
                    self._failing.discard(host)
                    self._recovered[host] = now
                    log.info("delivery notifications to %s succeed again", host)
                return
            if now - job.created_at >= self._policy.give_up_after:
                await self._store.callback_abandon(job.job_id, error, now)
                log.warning("gave up notifying %s about %s after %d attempts: %s", host, job.sms_id,
                            job.attempts, error)
                return
            await self._store.callback_retry(job.job_id, now + self._backoff(job.attempts), error, now)
            # A post that began before the host recovered belongs to the outage already reported.
            if host not in self._failing and started >= self._recovered.get(host, started):
                self._failing.add(host)
                log.warning("delivery notification to %s failed (%s); retrying with backoff", host, error)
        except SmsGatewayError as exc:
            # The job's lease runs out and it is claimed again.
            log.log(log_level(exc), "notification %s for %s not recorded: %s", job.job_id, job.sms_id, exc)
        finally:
            self._slots.release()

    @staticmethod
    def _form(job: CallbackJob) -> dict[str, str] | None:
        if isinstance(job.subject, IncomingView):
            return incoming_form(job.subject)
        if isinstance(job.subject, MessageView):
            return delivery_report_form(job.subject)
        return None

    async def _record_done(self) -> None:
        """Successful posts are marked done in batches: one store write for many notifications. A crash
        before the write sends those again (at least once, as receivers of notifications expect)."""
        while True:
            await self._done_waiting.wait()
            await asyncio.sleep(DONE_BATCH_DELAY)
            self._done_waiting.clear()
            batch, self._done = self._done, []
            try:
                await self._store.callbacks_done(batch, self._clock())
            except SmsGatewayError as exc:
                log.log(log_level(exc, logging.WARNING), "%d delivered notifications not marked done (they may be "
                        "sent again): %s", len(batch), exc)

    @staticmethod
    async def _post(client: HttpClient, url: str, form: dict[str, str]) -> str | None:
        """POST the form; None on a 2xx answer, else what went wrong."""
        try:
            status = await client.post_form(url, form_encode(form))
        except HttpError as exc:
            return str(exc)
        return None if 200 <= status < 300 else f"HTTP {status}"
