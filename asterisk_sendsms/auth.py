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

from .config import Network, UserConfig
from .errors import AuthenticationFailed, AuthenticationRequired, ForbiddenAddress, ForbiddenUser
from .passwords import hash_password, verify_password
from .routing import prefix_matches

__all__ = ["OPERATOR", "Authenticator", "check_destination"]

# The local operator (the CLI on the daemon's control socket) may do anything.
OPERATOR = UserConfig("operator", can_send=True, admin=True)
# Sends from calls (FastAGI, ARI) when no `asterisk.user` is configured: the dialplan is trusted.
ASTERISK_PRINCIPAL = UserConfig("asterisk", can_send=True)


def _allowed(address: str, networks: Sequence[Network]) -> bool:
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


# Brute force: after this many failed logins within the window, from one address or for one user name,
# further attempts are refused at once (no hash is computed) until the window has passed.
MAX_FAILURES = 10
FAILURE_WINDOW = 300.0


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
        return times[0] + FAILURE_WINDOW - now if len(times) >= MAX_FAILURES else 0.0

    def record(self, key: str, at: float) -> None:
        if len(self._failures) > 100_000:  # bounded memory under a flood of invented names
            self._failures.clear()
        self._failures.setdefault(key, deque(maxlen=MAX_FAILURES)).append(at)


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
        if not _allowed(address, self._allowed_clients):
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
        for key in (f"address {address}", f"user {username}"):
            self._failures.record(key, now)
            for listener in self._failure_listeners:
                listener(key, now)
        raise AuthenticationFailed()

    async def authenticate(self, username: str | None, password: str | None, address: str) -> UserConfig:
        if not username or password is None:
            raise AuthenticationRequired()
        wait = max(self._failures.blocked(f"address {address}"), self._failures.blocked(f"user {username}"))
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
        if not _allowed(address, user.allowed_sources):
            raise ForbiddenAddress(f"Forbidden address: {user.name} may not connect from {address}")
        return user
