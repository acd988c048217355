"""Opt-out on a real SQLite store: which incoming texts are keywords, what a STOP to a short code or to a modem
stops, which classes are refused, and START."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asterisk_sendsms.app.limits import Limits, optout_classes
from asterisk_sendsms.app.optout import OptOuts, keyword_change
from asterisk_sendsms.config import OptOutConfig, OptOutScope, StoreConfig
from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.errors import ForbiddenUser, InvalidParameter, RecipientOptedOut
from asterisk_sendsms.core.model import IncomingPart, NewMessage, OptOut
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.edge.http.statuses import http_status
from asterisk_sendsms.store import SqliteStore
from asterisk_sendsms.wire.ozeki import ozeki_code

NOW = 1_800_000_000.0
PHONE = "+36201234567"


@pytest.mark.parametrize(("text", "change"), [
    ("STOP", True), ("stop", True), ("  Stop\r\n", True), ("\tunsubscribe ", True), ("START", False),
    (" start", False), ("stop it", None), ("STOPP", None), ("please stop", None), ("", None), ("S T O P", None),
])
def test_keywords_are_whole_texts_trimmed_in_any_case(text: str, change: bool | None) -> None:
    assert keyword_change(OptOutConfig(), text) is change


def test_configured_keywords_replace_the_defaults() -> None:
    config = OptOutConfig(keywords=("STOP ALL", "ARRÊT"), start_keywords=())
    assert keyword_change(config, "stop   all") is True and keyword_change(config, "arrêt") is True
    assert keyword_change(config, "STOP") is None and keyword_change(config, "START") is None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(StoreConfig(tmp_path / "store.sqlite3"))
    await store.open()
    yield store
    await store.close()


def message(sender: str | None, priority: Priority = Priority.NORMAL, recipient: str = PHONE) -> NewMessage:
    return NewMessage(str(uuid.uuid4()), "alice", sender, recipient, "hi", Coding.GSM7, 1, None, NOW, NOW + 60,
                      priority)


def incoming(text: str, recipient: str = "1234", sender: str = PHONE, total: int = 1) -> IncomingPart:
    return IncomingPart("operator", sender, recipient, text, NOW, total=total)


async def check(store: SqliteStore, messages: list[NewMessage], config: OptOutConfig | None = None) -> None:
    """Accept the messages as the daemon's commit does; raise the first refusal."""
    for error in await store.accept_many(messages, Limits(optout_classes=optout_classes(config or OptOutConfig()))):
        if error is not None:
            raise error


async def test_stop_to_a_short_code_stops_its_normal_and_bulk_messages_only(
        store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    optouts = OptOuts(OptOutConfig(scope=OptOutScope.SENDER), store, lambda: NOW)
    with caplog.at_level(logging.INFO, "asterisk_sendsms.app.optout"):
        await optouts.heard(incoming(" Stop "))
    assert [r.getMessage() for r in caplog.records] == [
        f"{PHONE} opted out (' Stop ' to 1234 via operator) for sender 1234"]
    for priority in (Priority.NORMAL, Priority.BULK):
        with pytest.raises(RecipientOptedOut, match=f"recipient opted out: \\{PHONE}") as refused:
            await check(store, [message("1234", Priority.INTERACTIVE), message("1234", priority)])
        assert isinstance(refused.value, ForbiddenUser) and ozeki_code(refused.value) == 306
        assert http_status(refused.value) == 403
    await check(store, [message("1234", Priority.INTERACTIVE), message("ACME"), message(None),
                         message("1234", recipient="+36209999999")])
    await optouts.heard(incoming("START"))
    await check(store, [message("1234")])
    assert await optouts.listed(None, 10) == []


async def test_a_global_stop_stops_every_sender_and_interactive_when_configured(store: SqliteStore) -> None:
    config = OptOutConfig(refuse_interactive=True)
    optouts = OptOuts(config, store, lambda: NOW)
    await optouts.heard(incoming("UNSUBSCRIBE"))
    assert await optouts.listed(PHONE, 10) == [OptOut(PHONE, "", NOW, "keyword")]
    for sender in ("1234", "ACME", None):
        with pytest.raises(RecipientOptedOut):
            await check(store, [message(sender, Priority.INTERACTIVE)], config)


async def test_a_modem_stop_is_global_even_per_sender(store: SqliteStore) -> None:
    optouts = OptOuts(OptOutConfig(scope=OptOutScope.SENDER), store, lambda: NOW)
    await optouts.heard(incoming("STOP", recipient=""))  # a modem does not know its own number
    with pytest.raises(RecipientOptedOut):
        await check(store, [message("ACME")])


async def test_texts_that_are_no_keyword_change_nothing(store: SqliteStore) -> None:
    optouts = OptOuts(OptOutConfig(), store, lambda: NOW)
    await optouts.heard(incoming("stop it"))
    await optouts.heard(incoming("STOP", total=2))  # a part of a longer message
    await optouts.heard(incoming("STOP", sender="ACME"))  # an alphanumeric sender is no number to opt out
    assert await optouts.listed(None, 10) == []


async def test_operator_changes_use_the_forms_messages_carry(store: SqliteStore) -> None:
    optouts = OptOuts(OptOutConfig(scope=OptOutScope.SENDER), store, lambda: NOW)
    assert await optouts.add("0036 20 123-4567", "+36 1 234", "cli")
    assert not await optouts.add(PHONE, "+361234", "api")
    with pytest.raises(RecipientOptedOut):
        await check(store, [message("+361234")])
    with pytest.raises(InvalidParameter, match="'number'"):
        await optouts.add("nobody", None, "cli")
    with pytest.raises(InvalidParameter, match="'limit'"):
        await optouts.listed(None, 0)
    assert await optouts.remove(PHONE, "+361234") and not await optouts.remove(PHONE, "+361234")


async def test_a_batch_of_separate_requests_learns_which_were_refused(store: SqliteStore) -> None:
    optouts = OptOuts(OptOutConfig(), store, lambda: NOW)
    await optouts.add(PHONE, None, "cli")
    batch = [message("1234", recipient="+36209999999"), message("1234"), message(None, Priority.INTERACTIVE),
             message(None, Priority.BULK)]
    refused = await store.accept_many(batch, Limits(optout_classes=optout_classes(OptOutConfig())))
    assert [isinstance(error, RecipientOptedOut) for error in refused] == [False, True, False, True]
    assert sorted(m.recipient for m in await store.list_messages(None, None, None, None, 10)) == [
        PHONE, "+36209999999"]  # the others are stored (the interactive one to the opted-out number too)
