"""Unit tests of address validation, prefix routing and authentication."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_sendsms.app.auth import Authenticator, check_destination
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.config import Route, UserConfig
from asterisk_sendsms.core.addresses import AddressKind, kind_of, parse_recipient, parse_sender
from asterisk_sendsms.core.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    ForbiddenAddress,
    ForbiddenUser,
    InvalidParameter,
)
from asterisk_sendsms.core.passwords import hash_password


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
    import asterisk_sendsms.app.auth as auth_module

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
    import asterisk_sendsms.app.auth as auth_module

    now = [1000.0]
    auth = Authenticator([UserConfig("alice", password_hash=hash_password("pw"))], [], clock=lambda: now[0])
    for attempt in range(auth_module.MAX_FAILURES):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("alice", f"guess{attempt}", "192.0.2.7")
    hashed: list[str] = []
    real_verify = auth_module.verify_password
    monkeypatch.setattr(auth_module, "verify_password", lambda p, e: hashed.append(p) or False)
    with pytest.raises(AuthenticationFailed, match="too many failed logins, try again in 300 s"):
        await auth.authenticate("alice", "pw", "192.0.2.7")  # even the right password, from that address
    assert hashed == []  # refused before any hash was computed
    monkeypatch.setattr(auth_module, "verify_password", real_verify)
    now[0] += auth_module.FAILURE_WINDOW - 1
    with pytest.raises(AuthenticationFailed, match="try again in 1 s"):
        await auth.authenticate("alice", "pw", "192.0.2.7")
    now[0] += 2
    assert (await auth.authenticate("alice", "pw", "192.0.2.7")).name == "alice"


async def test_guessing_a_name_does_not_lock_its_user_out_elsewhere() -> None:
    import asterisk_sendsms.app.auth as auth_module

    now = [1000.0]
    auth = Authenticator([UserConfig("alice", password_hash=hash_password("pw"))], [], clock=lambda: now[0])
    for attempt in range(3 * auth_module.MAX_FAILURES):  # the attacker keeps hammering, refused or not
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("alice", f"guess{attempt}", "192.0.2.7")
        now[0] += 1
    assert (await auth.authenticate("alice", "pw", "198.51.100.1")).name == "alice"  # the user, elsewhere
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        await auth.authenticate("alice", "pw", "192.0.2.7")


async def test_one_address_guessing_many_names_is_stopped() -> None:
    import asterisk_sendsms.app.auth as auth_module

    now = [1000.0]
    users = [UserConfig(f"user{i}", password_hash=hash_password("pw")) for i in range(2)]
    auth = Authenticator(users, [], clock=lambda: now[0])
    for attempt in range(auth_module.MAX_ADDRESS_FAILURES):  # few guesses per name, many names
        with pytest.raises(AuthenticationFailed, match=r"^Authentication failed$"):
            await auth.authenticate(f"name{attempt % 15}", "guess", "192.0.2.7")
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        await auth.authenticate("user0", "pw", "192.0.2.7")  # a name never tried from there, right password
    assert (await auth.authenticate("user0", "pw", "192.0.2.8")).name == "user0"
    # An IPv6 host holds a whole /64: its addresses count as one.
    for attempt in range(auth_module.MAX_FAILURES):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("user1", "guess", f"2001:db8:1:2::{attempt + 1:x}")
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        await auth.authenticate("user1", "pw", "2001:db8:1:2:ffff::1")
    assert (await auth.authenticate("user1", "pw", "2001:db8:1:3::1")).name == "user1"


async def test_a_misconfigured_client_does_not_lock_out_its_neighbours() -> None:
    """Behind one NAT address: one client retrying an old password is stopped, the others still log in."""
    import asterisk_sendsms.app.auth as auth_module

    now = [1000.0]
    users = [UserConfig(name, password_hash=hash_password("pw")) for name in ("app", "bob")]
    auth = Authenticator(users, [], clock=lambda: now[0])
    for _ in range(5 * auth_module.MAX_FAILURES):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("app", "old-password", "203.0.113.9")
    assert (await auth.authenticate("bob", "pw", "203.0.113.9")).name == "bob"


async def test_failures_reach_other_processes_with_the_same_keys() -> None:
    """The HTTP front workers hear of each failure the daemon counts (front.py) and refuse alike."""
    import asterisk_sendsms.app.auth as auth_module

    now = [1000.0]
    daemon = Authenticator([UserConfig("alice", password_hash=hash_password("pw"))], [], clock=lambda: now[0])
    worker = Authenticator([UserConfig("alice", password_hash=hash_password("pw"))], [], clock=lambda: now[0])
    heard: list[tuple[str, float]] = []
    daemon.on_failed_login(lambda key, at: (heard.append((key, at)), worker.note_failed_login(key, at)))
    for _ in range(auth_module.MAX_FAILURES):
        with pytest.raises(AuthenticationFailed):
            await daemon.authenticate("alice", "guess", "192.0.2.7")
    assert {key for key, _ in heard} == {"address 192.0.2.7", "user 192.0.2.7 alice"}
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        await worker.authenticate("alice", "pw", "192.0.2.7")
    assert (await worker.authenticate("alice", "pw", "192.0.2.8")).name == "alice"


def test_the_failure_log_stays_bounded_and_keeps_the_latest() -> None:
    import asterisk_sendsms.app.auth as auth_module

    log = auth_module._FailureLog(lambda: 1000.0)
    blocking = auth_module.pair_key("alice", "192.0.2.7")
    for _ in range(auth_module.MAX_FAILURES):
        log.record(blocking, 999.0)
    for index in range(auth_module.MAX_TRACKED_KEYS + 5):
        log.record(auth_module.pair_key(f"invented{index}", "198.51.100.1"), 999.0)
        if index == auth_module.MAX_TRACKED_KEYS // 2:
            log.record(blocking, 999.5)  # still failing: kept
    assert len(log._failures) <= auth_module.MAX_TRACKED_KEYS
    assert log.blocked(blocking) > 0
    long_names = {auth_module.pair_key("x" * 100_000, "192.0.2.7"), auth_module.pair_key("x" * 99_999, "192.0.2.7")}
    assert len(long_names) == 2 and all(len(key) < 100 for key in long_names)
