"""Delivery notifications: the accept-time URL check, the Ozeki `SMSDeliveryReport` form, and the loop that
POSTs each one from the store's outbox until the receiver answers 2xx or the retry time runs out. Each job
fails alone: whatever goes wrong is recorded on the job (retried, or parked as failed), never in the loop."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import Counter, deque
from datetime import UTC, datetime

from asterisk_sendsms.app.clock import SYSTEM_CLOCK, wait_event
from asterisk_sendsms.app.http import HttpError, HttpRefused, HttpSession, OpenHttp
from asterisk_sendsms.app.store import Store
from asterisk_sendsms.app.urlpolicy import UrlPolicy, UrlRejected, url_host
from asterisk_sendsms.config import CallbackConfig
from asterisk_sendsms.core.clock import Clock
from asterisk_sendsms.core.errors import InvalidParameter, SmsGatewayError, log_level
from asterisk_sendsms.core.model import CallbackJob, CallbackShares, IncomingView, MessageView
from asterisk_sendsms.wire.ozeki import form_encode

__all__ = ["Notifier", "delivery_report_form", "incoming_form", "url_policy", "validate_callback_url"]

log = logging.getLogger(__name__)

DONE_BATCH_DELAY = 0.05
_LEASE_MARGIN = 30.0
_LOOP_PAUSE = 1.0  # after the store failed to hand out jobs, or with nothing due
# How often a claim looks past the due notifications of hosts and users whose share is in flight. That look
# reads all of their backlog; taken at every claim (each finished post, each receipt) it cost a busy gateway
# more than the posts. Other hosts' notifications behind such a backlog wait at most this long for a slot.
_LOOK_PAST_FULL_EVERY = 1.0


def url_policy(config: CallbackConfig) -> UrlPolicy:
    return UrlPolicy.of(config.allowed_hosts, config.allowed_networks)


def validate_callback_url(url: str, policy: CallbackConfig, parameter: str = "DeliveryReportURL",
                          command: str = "SendSms") -> str:
    """The URL as it is kept, or `InvalidParameter` naming `parameter` (Ozeki code 302)."""
    try:
        return url_policy(policy).check_url(url)
    except UrlRejected as exc:
        raise InvalidParameter(parameter, command, str(exc)) from None


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
    def __init__(self, store: Store, policy: CallbackConfig, open_http: OpenHttp, clock: Clock = SYSTEM_CLOCK
                 ) -> None:
        self._store = store
        self._policy = policy
        self._open_http = open_http
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._in_flight: Counter[str] = Counter()  # jobs being posted, per host
        self._users: Counter[str] = Counter()  # and per user ("" for incoming SMS: not counted)
        # Claimed jobs waiting for a slot of their host and user: a finished post starts the next at once
        # instead of after a claim (a store round trip behind the writer's other work, 4-18 ms on a busy
        # gateway, which capped one host's notifications at a few hundred a second).
        self._ready: dict[str, deque[CallbackJob]] = {}  # per host, in the order claimed
        self._claimed_hosts: Counter[str] = Counter()  # posting and ready, per host
        self._claimed_users: Counter[str] = Counter()
        self._unexpected: Counter[int] = Counter()  # errors of ours per job, until it is parked
        self._failing: set[str] = set()  # hosts already reported as failing (log once per outage)
        self._refused: set[str] = set()  # hosts already reported as refused by the URL policy
        self._recovered: dict[str, float] = {}  # when a failing host answered again
        self._done: list[int] = []
        self._done_waiting = asyncio.Event()
        self._claims_failing = False
        self._next_look_past_full = 0.0

    def wake(self) -> None:
        self._wakeup.set()

    def _backoff(self, attempts: int) -> float:
        return float(min(self._policy.retry_max, self._policy.retry_initial * 2 ** max(attempts - 1, 0)))

    async def run(self) -> None:
        # A claimed job may wait for its host's slot (a post's timeout at most) before its own post.
        lease = 2 * self._policy.timeout + _LEASE_MARGIN
        client = self._open_http(url_policy(self._policy), self._policy.timeout, idle_per_host=self._policy.per_host)
        try:
            await self._serve(client, lease)
        finally:
            await client.close()

    async def _serve(self, client: HttpSession, lease: float) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._record_done())
            while True:
                self._wakeup.clear()
                self._start_ready(group, client)
                # Up to twice the slots are claimed, each host and user up to twice its share: one more post
                # each, ready to go; a ready job waits for one post of its host or user at most.
                free = 2 * self._policy.concurrency - sum(self._claimed_hosts.values())
                jobs: list[CallbackJob] = []
                if free > 0:
                    try:
                        # Claimed with each host's and user's share capped: a host whose receiver hangs
                        # holds at most `per_host` slots, a user at most `per_user`; the others go to the next
                        # due jobs of other hosts and users.
                        now = self._clock.time()
                        look_past_full = now >= self._next_look_past_full
                        if look_past_full:
                            self._next_look_past_full = now + _LOOK_PAST_FULL_EVERY
                        shares = CallbackShares(2 * self._policy.per_host, 2 * self._policy.per_user,
                                                dict(self._claimed_hosts), dict(self._claimed_users),
                                                look_past_full)
                        jobs = await self._store.claim_callbacks(free, now, lease, shares)
                    except SmsGatewayError as exc:
                        log.log(log_level(exc), "cannot read pending notifications: %s", exc)
                    except Exception as exc:  # a bug must not end the notifier, nor take the daemon with it
                        if not self._claims_failing:  # once per outage: the loop tries again every second
                            log.error("cannot read pending notifications (%s):\n%s", type(exc).__name__,
                                      "".join(traceback.format_tb(exc.__traceback__)).rstrip())
                        self._claims_failing = True
                    else:
                        if self._claims_failing:
                            log.info("pending notifications can be read again")
                        self._claims_failing = False
                for job in jobs:
                    host = url_host(job.url)
                    self._claimed_hosts[host] += 1
                    self._claimed_users[job.user] += 1
                    self._ready.setdefault(host, deque()).append(job)
                self._start_ready(group, client)
                if len(jobs) < free or free <= 0:
                    await wait_event(self._clock, self._wakeup, _LOOP_PAUSE)

    def _start_ready(self, group: asyncio.TaskGroup, client: HttpSession) -> None:
        """Posts the ready jobs whose host and user have a free slot, each host's in the order they were claimed.
        Called at every finished post: a host without a free slot costs a look, not a pass over its jobs."""
        posting = sum(self._in_flight.values())
        for host in list(self._ready):
            jobs, user_full = self._ready[host], deque[CallbackJob]()
            while jobs and posting < self._policy.concurrency and self._in_flight[host] < self._policy.per_host:
                job = jobs.popleft()
                if job.user and self._users[job.user] >= self._policy.per_user:
                    user_full.append(job)
                    continue
                posting += 1
                self._in_flight[host] += 1
                self._users[job.user] += 1
                group.create_task(self._deliver(group, client, job))
            jobs.extendleft(reversed(user_full))
            if not jobs:
                del self._ready[host]

    async def _deliver(self, group: asyncio.TaskGroup, client: HttpSession, job: CallbackJob) -> None:
        host = url_host(job.url)
        try:
            await self._attempt(client, job, host)
        except SmsGatewayError as exc:
            # The job's lease runs out and it is claimed again.
            log.log(log_level(exc), "notification %s for %s not recorded: %s", job.job_id, job.sms_id, exc)
        except Exception as exc:  # the job's boundary: a bug ends this attempt, never the notifier
            await self._unexpected_failure(job, host, exc)
        finally:
            for counter, key in ((self._in_flight, host), (self._users, job.user), (self._claimed_hosts, host),
                                 (self._claimed_users, job.user)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]
            self._wakeup.set()
        self._start_ready(group, client)  # now, not after a claim the loop may be waiting for (not when cancelled)

    async def _attempt(self, client: HttpSession, job: CallbackJob, host: str) -> None:
        form = self._form(job)
        if form is None:
            await self._store.callback_abandon(job.job_id, "message no longer in the store", self._clock.time())
            return
        started = self._clock.time()
        try:
            status = await client.post_form(job.url, form_encode(form))
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except HttpRefused as exc:
            # The policy refuses where the host leads (an internal address): no request went out, and asking
            # again would not change that. The job is parked with the reason; nothing tells whether the
            # internal target would have answered.
            await self._store.callback_abandon(job.job_id, f"refused: {exc}", self._clock.time())
            if host not in self._refused:  # once per host: a user can queue many
                self._refused.add(host)
                log.warning("notification %s for %s refused: %s", job.job_id, job.sms_id, exc)
            return
        except HttpError as exc:
            error = str(exc)
        now = self._clock.time()
        self._unexpected.pop(job.job_id, None)
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

    async def _unexpected_failure(self, job: CallbackJob, host: str, exc: Exception) -> None:
        """An error of ours (a bug): logged once per job with where it happened (the exception's type and
        frames, not its text, which could carry a message's), retried with backoff, parked after
        `max_failures` so that no job can fail forever, or at every start."""
        self._unexpected[job.job_id] += 1
        count = self._unexpected[job.job_id]
        reason = f"internal error ({type(exc).__name__}) while notifying {host}"
        if count == 1:
            log.error("notification %s for %s to %s failed by an internal error %s; retrying:\n%s", job.job_id,
                      job.sms_id, host, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        try:
            now = self._clock.time()
            if count >= self._policy.max_failures:
                self._unexpected.pop(job.job_id, None)
                await self._store.callback_abandon(job.job_id, reason, now)
                log.error("notification %s for %s parked as failed after %d internal errors", job.job_id,
                          job.sms_id, count)
            else:
                await self._store.callback_retry(job.job_id, now + self._backoff(count), reason, now)
        except Exception as store_error:  # the lease runs out and the job is claimed again
            log.warning("notification %s for %s not recorded: %s", job.job_id, job.sms_id,
                        type(store_error).__name__)

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
            await self._clock.sleep(DONE_BATCH_DELAY)
            self._done_waiting.clear()
            batch, self._done = self._done, []
            try:
                await self._store.callbacks_done(batch, self._clock.time())
            except SmsGatewayError as exc:
                log.log(log_level(exc, logging.WARNING), "%d delivered notifications not marked done (they may be "
                        "sent again): %s", len(batch), exc)
            except Exception as exc:  # the loop outlives a bug; the posts are sent again after their lease
                log.error("%d delivered notifications not marked done (%s); they may be sent again", len(batch),
                          type(exc).__name__)
