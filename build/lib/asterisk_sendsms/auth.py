"""Who may use the API: client address allow-lists, user passwords (verified off the event loop, with a
cache so that a correct password costs one hash per process, not one per request), and permissions."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Sequence

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


class Authenticator:
    def __init__(self, users: Sequence[UserConfig], allowed_clients: Sequence[Network]) -> None:
        self._users = {user.name: user for user in users}
        self._allowed_clients = tuple(allowed_clients)
        self._pepper = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._in_progress: dict[tuple[str, bytes], asyncio.Future[bool]] = {}
        # Unknown users cost a hash too, so response time does not tell which names exist.
        self._dummy_hash = hash_password(os.urandom(8).hex())

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

    async def authenticate(self, username: str | None, password: str | None, address: str) -> UserConfig:
        if not username or password is None:
            raise AuthenticationRequired()
        user = self._users.get(username)
        if user is None:
            await asyncio.to_thread(verify_password, password, self._dummy_hash)
            raise AuthenticationFailed()
        fingerprint = self._fingerprint(username, password)
        known = self._verified.get(username)
        if known is None or not hmac.compare_digest(known, fingerprint):
            if not await self._verify(user, password, fingerprint):
                raise AuthenticationFailed()
            self._verified[username] = fingerprint
        if not _allowed(address, user.allowed_sources):
            raise ForbiddenAddress(f"Forbidden address: {user.name} may not connect from {address}")
        return user
