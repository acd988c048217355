"""Who may use the API: client address allow-lists, user passwords (verified off the event loop, with a
cache so that a correct password costs one hash per process, not one per request), and permissions."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn

from asterisk_sendsms.app.routing import prefix_matches
from asterisk_sendsms.config import Network, UserConfig
from asterisk_sendsms.core.errors import AuthenticationFailed, AuthenticationRequired, ForbiddenAddress, ForbiddenUser
from asterisk_sendsms.core.passwords import hash_password, verify_password
from asterisk_sendsms.core.traffic import Priority

__all__ = ["OPERATOR", "Authenticator", "check_destination", "check_priority", "client_allowed"]

# The local operator (the CLI on the daemon's control socket) may do anything.
OPERATOR = UserConfig("operator", can_send=True, admin=True)
# Sends from calls (FastAGI, ARI) when no `asterisk.user` is configured: the dialplan is trusted. The
# configuration allows that only while FastAGI listens on loopback (ARI connects out to a configured server).
ASTERISK_PRINCIPAL = UserConfig("asterisk", can_send=True)


def client_allowed(address: str, networks: Sequence[Network]) -> bool:
    """Whether `address` is in one of `networks` (empty: any address)."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def check_destination(user: UserConfig, recipient: str) -> None:
    if not user.can_send:
        raise ForbiddenUser(f"Forbidden user: {user.name} may not send SMS")
    if user.allowed_destinations and not any(prefix_matches(recipient, p) for p in user.allowed_destinations):
        raise ForbiddenUser(f"Forbidden user: {user.name} may not send to {recipient}")


def check_priority(user: UserConfig, priority: Priority) -> None:
    if priority not in user.priorities:
        raise ForbiddenUser(f"Forbidden user: {user.name} may not send {priority.value} messages")


# Brute force: after MAX_FAILURES failed logins within the window for one user name from one address, or
# MAX_ADDRESS_FAILURES from one address whatever the names, further attempts from there are refused at once (no
# hash is computed) until the window has passed. Failures are never counted per name alone: whoever can reach
# the API could otherwise lock any user out everywhere by guessing ten times. The pair's limit is below the
# address's so that one misconfigured client retrying an old password does not lock out its neighbours
# behind the same NAT address.
MAX_FAILURES = 10
MAX_ADDRESS_FAILURES = 30
FAILURE_WINDOW = 300.0
MAX_TRACKED_KEYS = 100_000


def _source(address: str) -> str:
    """Whom failures are counted against: the IPv4 address, or the /64 of an IPv6 address (one host usually
    holds a whole /64, so counting single IPv6 addresses would give it billions of tries)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address.replace(" ", "_")
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def address_key(address: str) -> str:
    return f"address {_source(address)}"


def pair_key(username: str, address: str) -> str:
    # A source holds no space, so the key cannot be read as another (source, name) pair. A long invented
    # name is kept as its digest: the log holds up to MAX_TRACKED_KEYS keys, each of bounded size.
    if len(username) > 64:
        username = "sha256:" + hashlib.sha256(username.encode(errors="surrogatepass")).hexdigest()
    return f"user {_source(address)} {username}"


def _limit(key: str) -> int:
    return MAX_ADDRESS_FAILURES if key.startswith("address ") else MAX_FAILURES


class _FailureLog:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        times = self._failures.get(key)
        if not times:
            return 0.0
        now = self._clock()
        while times and times[0] <= now - FAILURE_WINDOW:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        return times[0] + FAILURE_WINDOW - now if len(times) >= _limit(key) else 0.0

    def record(self, key: str, at: float) -> None:
        times = self._failures.pop(key, None)  # re-inserted last: the dict stays ordered by latest failure
        if times is None:
            if len(self._failures) >= MAX_TRACKED_KEYS:
                self._forget_oldest()
            times = deque(maxlen=_limit(key))
        times.append(at)
        self._failures[key] = times

    def _forget_oldest(self) -> None:
        # Bounded memory under a flood of invented names: the keys whose latest failure is oldest go, so the
        # counts that block an attacker now are the last to be forgotten.
        for key in list(self._failures)[:MAX_TRACKED_KEYS // 10]:
            del self._failures[key]


class Authenticator:
    def __init__(self, users: Sequence[UserConfig], allowed_clients: Sequence[Network],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._users = {user.name: user for user in users}
        self._allowed_clients = tuple(allowed_clients)
        self._pepper = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._in_progress: dict[tuple[str, bytes], asyncio.Future[bool]] = {}
        # Unknown users cost a hash too, so response time does not tell which names exist.
        self._dummy_hash = hash_password(os.urandom(8).hex())
        self._clock = clock
        self._failures = _FailureLog(clock)
        self._failure_listeners: list[Callable[[str, float], None]] = []

    async def _verify(self, user: UserConfig, password: str, fingerprint: bytes) -> bool:
        if user.password_hash is None:
            return hmac.compare_digest((user.plaintext_password or "").encode(), password.encode())
        # Concurrent requests with the same credentials share one hash computation: a burst of new
        # connections must not start dozens of scrypt runs.
        key = (user.name, fingerprint)
        pending = self._in_progress.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(verify_password, password, user.password_hash))
            self._in_progress[key] = pending
            pending.add_done_callback(lambda _: self._in_progress.pop(key, None))
        return await asyncio.shield(pending)

    def check_client(self, address: str) -> None:
        if not client_allowed(address, self._allowed_clients):
            raise ForbiddenAddress(f"Forbidden address: {address} may not use this API")

    def _fingerprint(self, name: str, password: str) -> bytes:
        return hmac.new(self._pepper, f"{name}\0{password}".encode(), hashlib.sha256).digest()

    def on_failed_login(self, listener: Callable[[str, float], None]) -> None:
        """Call `listener` with each failure as `note_failed_login` takes it (for the HTTP front workers)."""
        self._failure_listeners.append(listener)

    def note_failed_login(self, key: str, at: float) -> None:
        """Count a failure another process saw (`at` on the machine's monotonic clock)."""
        self._failures.record(key, at)

    def _failed(self, address: str, username: str) -> NoReturn:
        now = self._clock()
        for key in (address_key(address), pair_key(username, address)):
            self._failures.record(key, now)
            for listener in self._failure_listeners:
                listener(key, now)
        raise AuthenticationFailed()

    async def authenticate(self, username: str | None, password: str | None, address: str) -> UserConfig:
        if not username or password is None:
            raise AuthenticationRequired()
        wait = max(self._failures.blocked(address_key(address)), self._failures.blocked(pair_key(username, address)))
        if wait:
            raise AuthenticationFailed(f"Authentication failed: too many failed logins, try again in {wait:.0f} s")
        user = self._users.get(username)
        if user is None:
            await asyncio.to_thread(verify_password, password, self._dummy_hash)
            self._failed(address, username)
        fingerprint = self._fingerprint(username, password)
        known = self._verified.get(username)
        if known is None or not hmac.compare_digest(known, fingerprint):
            if not await self._verify(user, password, fingerprint):
                self._failed(address, username)
            self._verified[username] = fingerprint
        if not client_allowed(address, user.allowed_sources):
            raise ForbiddenAddress(f"Forbidden address: {user.name} may not connect from {address}")
        return user
