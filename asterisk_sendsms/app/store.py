"""The `Store` protocol: the durable queue, message lifecycle, receipts and callback outbox behind one API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from asterisk_sendsms.app.limits import NO_LIMITS, Limits
from asterisk_sendsms.core.errors import RequestError
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import (
    CallbackJob,
    CallbackShares,
    IncomingPart,
    MessageView,
    NewMessage,
    OptOut,
    OutboundMessage,
    PendingCallback,
    Receipt,
    ReceiptResult,
)
from asterisk_sendsms.core.traffic import Priority

__all__ = ["Store"]


class Store(Protocol):
    """Every method commits before it returns; a raised error means nothing of that call was written.
    Errors: `ServiceUnavailable` when the storage fails, `IllegalTransition` when the lifecycle forbids
    the change."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema to this program's version (then close); returns (version before, version after).
        `open` creates the schema in an empty database but refuses an older one."""
        ...

    @property
    def where(self) -> str:
        """Where the messages are kept, safe to print."""
        ...

    async def accept(self, message: NewMessage, limits: Limits = NO_LIMITS) -> None:
        """Commit the message: accepted, or scheduled until its SendAt or its user's next turn under `limits`.
        Raises `RecipientOptedOut` or `QuotaExceeded` (nothing written) when its recipient opted out of its class
        or its user's quota has no room for its parts."""
        ...

    async def accept_many(self, messages: Sequence[NewMessage], limits: Limits = NO_LIMITS
                          ) -> list[RequestError | None]:
        """`accept` for each message in one transaction: None for each one committed, the refusal of each one
        not. A raised error means none was."""
        ...

    async def ping(self) -> None:
        """A trivial read through the same path as every operation: raises `ServiceUnavailable` if the store
        cannot answer."""
        ...

    async def release_claims(self, now: float) -> int:
        """Make messages and notifications claimed by a previous run of this node due again (after a crash);
        other nodes' claims are left to their leases.
        Returns the number of messages."""
        ...

    async def claim(self, limit: int, now: float, lease: float, up_to: Priority = Priority.BULK,
                    limits: Limits = NO_LIMITS) -> list[OutboundMessage]:
        """Take up to `limit` due messages of classes `up_to` and above for dispatch (accepted/queued →
        queued): by class, bulk users in turn, then oldest first. Those past their validity are expired
        instead of returned. First, scheduled messages whose time came are accepted (those of a user with a
        max_rate in `limits` at the user's next turn)."""
        ...

    async def cancel(self, sms_id: str, username: str | None, now: float) -> MessageView:
        """scheduled/accepted/queued → cancelled, unless a dispatcher holds it (`NotCancellable`); `username`
        None may cancel anyone's, else only that user's (`MessageNotFound`)."""
        ...

    async def renew_claims(self, sms_ids: Sequence[str], due_at: float) -> int:
        """Extend this node's claims of these queued messages to `due_at` (they wait in a transport longer than
        a lease: nobody, this node included, may claim them again meanwhile). Returns how many it still held."""
        ...

    async def mark_submitted(self, sms_id: str, transport: str, smsc_ids: Sequence[str], now: float,
                             receipt_deadline: float | None) -> ReceiptResult:
        """queued → submitted with one SMSC id per part; receipts that arrived early are applied now.
        Without a receipt deadline (a route that gives no receipts) it is final at once: `sent`."""
        ...

    async def retry_later(self, sms_id: str, due_at: float, error_code: str, error_text: str, now: float,
                          attempted: bool) -> None:
        """Back to the queue until `due_at`; `attempted` counts it as a submission attempt."""
        ...

    async def finish(self, sms_id: str, state: State, error_code: str, error_text: str, now: float,
                     transport: str | None = None, attempted: bool = False) -> None:
        """Move to a final state without a receipt (failed, rejected, expired)."""
        ...

    async def apply_receipt(self, receipt: Receipt, now: float) -> ReceiptResult:
        """Record a receipt on its part; one for an unknown SMSC id is kept until its submit is recorded."""
        ...

    async def expire_overdue(self, now: float) -> int:
        """Submitted messages whose receipt deadline passed become expired."""
        ...

    async def awaiting_receipts(self, transport: str) -> list[tuple[str, str]]:
        """(smsc_id, recipient) of parts on `transport` still waiting for a final receipt."""
        ...

    async def get(self, sms_id: str, detail: bool = True) -> MessageView | None:
        """The message; without `detail` its parts, history and callback state are left out (cheaper)."""
        ...

    async def list_messages(self, username: str | None, state: State | None, recipient: str | None,
                            since: float | None, limit: int, offset: int = 0, priority: Priority | None = None
                            ) -> list[MessageView]:
        """Newest first, with their callback state but without parts and history; `recipient` is a prefix;
        `username` None means all; `offset` skips that many (paging)."""
        ...

    async def stats(self, since: float) -> dict[str, Any]:
        """For the status page: `states` (count per state since), `per_minute` (minute number → messages
        accepted), `queue` (waiting to be sent), `classes` (traffic class → (waiting, creation time of the
        oldest)), `scheduled` ((count, next due time or None)), `pending_callbacks` (a count), `optouts`
        (a count), `failure_reasons` (the most frequent error codes of messages that ended without delivery
        since, with their counts)."""
        ...

    async def quota_use(self, counters: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Parts counted on each (user, quota counter key of `Limits.quota_keys`)."""
        ...

    async def add_optout(self, optout: OptOut) -> bool:
        """Put the number on the opt-out list for its scope; False if it was already there (kept as it was)."""
        ...

    async def remove_optout(self, number: str, scope: str) -> bool:
        """Take the number off the opt-out list for `scope`; False if it was not there."""
        ...

    async def list_optouts(self, number: str | None, limit: int) -> list[OptOut]:
        """The opt-out list (of one number if given), newest first."""
        ...

    async def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        """Notifications not yet delivered, the next due first."""
        ...

    async def store_incoming(self, part: IncomingPart, callback_url: str | None) -> str | None:
        """Keep a received SMS (or part). Returns the id of the complete message once every part is in,
        with its IncomingSMS notification queued when `callback_url` is set; None while parts are missing."""
        ...

    async def claim_callbacks(self, limit: int, now: float, lease: float, shares: CallbackShares | None = None
                              ) -> list[CallbackJob]:
        """Due notifications, each with its subject (the message or incoming SMS) read alongside; with `shares`,
        none for a host or user whose share is in flight: their slots go to the next due jobs of others."""
        ...

    async def callbacks_done(self, job_ids: Sequence[int], now: float) -> None: ...

    async def callback_retry(self, job_id: int, due_at: float, error: str, now: float) -> None: ...

    async def callback_abandon(self, job_id: int, error: str, now: float) -> None: ...
