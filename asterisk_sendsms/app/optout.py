"""Opt-out: the STOP and START keywords heard in incoming SMS and the list they keep (the refusal at accept of
messages to a number on it is the store's, by `Limits.opted_out`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from asterisk_sendsms.app.limits import ANY_SENDER
from asterisk_sendsms.app.store import Store
from asterisk_sendsms.config import OptOutConfig, OptOutScope, keyword_form
from asterisk_sendsms.core.addresses import parse_recipient, parse_sender
from asterisk_sendsms.core.errors import InvalidParameter
from asterisk_sendsms.core.model import IncomingPart, OptOut

__all__ = ["MAX_LIST", "OptOuts", "keyword_change"]

log = logging.getLogger(__name__)

MAX_LIST = 100_000


def keyword_change(config: OptOutConfig, text: str) -> bool | None:
    """True when `text` is an opt-out keyword, False when a start keyword, None for any other text."""
    said = keyword_form(text)
    if said in config.keywords:
        return True
    if said in config.start_keywords:
        return False
    return None


class OptOuts:
    def __init__(self, config: OptOutConfig, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._store = store
        self._clock = clock

    async def heard(self, part: IncomingPart) -> None:
        """Act on an incoming SMS that is a keyword. Only a message of one part can be: keywords are short, and
        a phone splits only texts longer than one SMS."""
        change = keyword_change(self._config, part.text) if part.total == 1 else None
        if change is None:
            return
        try:
            number = parse_recipient(part.sender).value
        except InvalidParameter:
            log.info("%r sent to %s from %s is a keyword, but %s is no phone number to opt out", part.text,
                     part.recipient or "the modem", part.sender, part.sender)
            return
        # A modem does not know the number it was sent to: its STOP counts for every sender.
        scope = ANY_SENDER
        if self._config.scope is OptOutScope.SENDER:
            try:
                scope = self._scope(part.recipient)
            except InvalidParameter:  # no sender our messages could carry: kept as the SMSC gave it
                scope = part.recipient
        if change:
            await self._store.add_optout(OptOut(number, scope, self._clock(), "keyword"))
        else:
            await self._store.remove_optout(number, scope)
        log.info("%s opted %s (%r to %s via %s) for %s", number, "out" if change else "back in", part.text,
                 part.recipient or "the modem", part.transport, f"sender {scope}" if scope else "every sender")

    async def add(self, number: str, sender: str | None, source: str) -> bool:
        """An operator's opt-out (CLI, API); False if the number was already on the list for that sender."""
        return await self._store.add_optout(OptOut(parse_recipient(number, "number").value, self._scope(sender),
                                                   self._clock(), source))

    async def remove(self, number: str, sender: str | None) -> bool:
        return await self._store.remove_optout(parse_recipient(number, "number").value, self._scope(sender))

    async def listed(self, number: str | None, limit: int) -> list[OptOut]:
        if not 1 <= limit <= MAX_LIST:
            raise InvalidParameter("limit", "OptOuts", f"from 1 to {MAX_LIST}")
        return await self._store.list_optouts(parse_recipient(number, "number").value if number else None, limit)

    @staticmethod
    def _scope(sender: str | None) -> str:
        """A sender in the form messages carry it, so that an opt-out from "+36 1 234" meets messages from
        "+361234"; an empty one is every sender."""
        return parse_sender(sender, "sender").value if sender and sender.strip() else ANY_SENDER
