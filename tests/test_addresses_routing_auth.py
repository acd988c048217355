"""Unit tests of address validation, prefix routing and authentication."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_sendsms.addresses import AddressKind, kind_of, parse_recipient, parse_sender
from asterisk_sendsms.auth import Authenticator, check_destination
from asterisk_sendsms.config import Route, UserConfig
from asterisk_sendsms.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    ForbiddenAddress,
    ForbiddenUser,
    InvalidParameter,
)
from asterisk_sendsms.passwords import hash_password
from asterisk_sendsms.routing import Router


@pytest.mark.parametrize(("raw", "value", "kind"), [
    ("+36 20 123-4567", "+36201234567", AddressKind.INTERNATIONAL),
    ("0036201234567", "+36201234567", AddressKind.INTERNATIONAL),
    ("+0615546670", "+0615546670", AddressKind.INTERNATIONAL),  # the seed's own example
    ("06201234567", "06201234567", AddressKind.NATIONAL),
    ("1234", "1234", AddressKind.NATIONAL),
])
def test_recipients(raw: str, value: str, kind: AddressKind) -> None:
    address = parse_recipient(raw)
    assert (address.value, address.kind) == (value, kind)


@pytest.mark.parametrize("raw", ["", "  ", "call me", "+1234567890123456", "12", "+36 20 abc"])
def test_bad_recipients(raw: str) -> None:
    with pytest.raises(InvalidParameter, match="'Recipient'"):
        parse_recipient(raw)


def test_senders() -> None:
    assert parse_sender("ACME Bank").kind is AddressKind.ALPHANUMERIC
    assert parse_sender("+3630").kind is AddressKind.INTERNATIONAL
    with pytest.raises(InvalidParameter, match="at most 11"):
        parse_sender("A very long sender")
    with pytest.raises(InvalidParameter, match="cannot carry"):
        parse_sender("Bank✓")


@given(st.text(max_size=24) | st.from_regex(r"\A[ +0(]*[0-9 ().-]{0,25}\Z")
       | st.sampled_from(["+ABC", "12", "+12", "+123"]))
def test_the_kind_of_a_normal_address_is_the_kind_parsing_gave(raw: str) -> None:
    for parse in (parse_recipient, parse_sender):
        try:
            address = parse(raw)
        except InvalidParameter:
            continue
        assert kind_of(address.value) is address.kind


def test_longest_prefix_wins() -> None:
    router = Router([Route("", ("default",)), Route("+36", ("hu",)), Route("+3620", ("telenor",)),
                     Route("06", ("national",))])
    def via(number: str) -> tuple[str, ...] | None:
        route = router.route_for(number)
        return route.transports if route else None
    assert via("+36201234567") == ("telenor",)
    assert via("+36301234567") == ("hu",)
    assert via("06301234567") == ("national",)
    assert via("+4420") == ("default",)
    assert Router([Route("+36", ("hu",))]).route_for("+4420") is None


def test_destination_permissions() -> None:
    check_destination(UserConfig("a", allowed_destinations=("+36",)), "+3620")
    with pytest.raises(ForbiddenUser):
        check_destination(UserConfig("a", allowed_destinations=("+36",)), "+4420")
    with pytest.raises(ForbiddenUser):
        check_destination(UserConfig("a", can_send=False), "+3620")


async def test_authentication() -> None:
    users = [UserConfig("alice", password_hash=hash_password("pw"),
                        allowed_sources=(ipaddress.ip_network("10.0.0.0/8"),))]
    auth = Authenticator(users, [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")])
    assert (await auth.authenticate("alice", "pw", "10.1.2.3")).name == "alice"
    assert (await auth.authenticate("alice", "pw", "::ffff:10.1.2.3")).name == "alice"  # cached path
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate("alice", "pW", "10.1.2.3")
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate("bob", "pw", "10.1.2.3")
    with pytest.raises(AuthenticationRequired):
        await auth.authenticate(None, "pw", "10.1.2.3")
    with pytest.raises(ForbiddenAddress):
        await auth.authenticate("alice", "pw", "127.0.0.1")
    auth.check_client("127.0.0.1")
    with pytest.raises(ForbiddenAddress):
        auth.check_client("192.168.1.1")


async def test_a_burst_of_logins_costs_one_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    import asterisk_sendsms.auth as auth_module

    calls: list[str] = []
    real_verify = auth_module.verify_password

    def counting_verify(password: str, encoded: str) -> bool:
        calls.append(password)
        return real_verify(password, encoded)

    auth = Authenticator([UserConfig("alice", password_hash=hash_password("pw"))], [])
    monkeypatch.setattr(auth_module, "verify_password", counting_verify)
    users = await asyncio.gather(*(auth.authenticate("alice", "pw", "127.0.0.1") for _ in range(50)))
    assert {u.name for u in users} == {"alice"}
    assert calls == ["pw"]
    results = await asyncio.gather(*(auth.authenticate("alice", "bad", "127.0.0.1") for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, AuthenticationFailed) for r in results) and calls == ["pw", "bad"]


async def test_brute_force_is_refused_without_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    import asterisk_sendsms.auth as auth_module

    now = [1000.0]
    auth = Authenticator([UserConfig("alice", password_hash=hash_password("pw"))], [], clock=lambda: now[0])
    for attempt in range(auth_module.MAX_FAILURES):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("alice", f"guess{attempt}", "192.0.2.7")
    hashed: list[str] = []
    real_verify = auth_module.verify_password
    monkeypatch.setattr(auth_module, "verify_password", lambda p, e: hashed.append(p) or False)
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        await auth.authenticate("alice", "pw", "192.0.2.7")  # even the right password, from that address
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        await auth.authenticate("alice", "pw", "198.51.100.1")  # or for that user from elsewhere
    assert hashed == []  # refused before any hash was computed
    monkeypatch.setattr(auth_module, "verify_password", real_verify)
    now[0] += auth_module.FAILURE_WINDOW + 1
    assert (await auth.authenticate("alice", "pw", "192.0.2.7")).name == "alice"
