"""The Ozeki `Call` command as a use case: originate a call through a connected Asterisk and run the OzML
at `Url` when it is answered (the outbound IVR receipt)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Protocol

from asterisk_sendsms.app.notifier import validate_callback_url
from asterisk_sendsms.app.routing import prefix_matches
from asterisk_sendsms.config import AsteriskConfig, CallbackConfig, UserConfig
from asterisk_sendsms.core.addresses import parse_recipient
from asterisk_sendsms.core.errors import ForbiddenUser, InvalidParameter, ServiceUnavailable, SmsGatewayError

__all__ = ["CallService", "Originator", "check_call"]

COMMAND = "Call"
# A dial string Asterisk understands as it is: TECH/resource (PJSIP/100, Local/100@from-internal). No
# characters that join several endpoints, start dialplan expressions or separate application arguments.
_ENDPOINT = re.compile(r"[A-Za-z][A-Za-z0-9_]*/[A-Za-z0-9_.+*#@:=/-]+")
_LOOKS_LIKE_ENDPOINT = re.compile(r"[A-Za-z][A-Za-z0-9_]*/")


def check_call(user: UserConfig, dialed: str, allowed_endpoints: Sequence[str]) -> str | None:
    """Refuse (Ozeki 306) a call the user may not place. `dialed` is a normal number or a TECH/resource
    endpoint; returns the endpoint to dial as it is, or None for a number (dialled through the template)."""
    if not user.can_call:
        raise ForbiddenUser(f"Forbidden user: {user.name} may not place calls (can_call is off)")
    if not _LOOKS_LIKE_ENDPOINT.match(dialed):
        if not any(prefix_matches(dialed, p) for p in user.call_destinations if "/" not in p):
            raise ForbiddenUser(f"Forbidden user: {user.name} may not call {dialed} (not in call_destinations)")
        return None
    if not _ENDPOINT.fullmatch(dialed):
        raise InvalidParameter("Dialed", COMMAND, "an endpoint is TECH/resource with letters, digits and "
                                                  "_.+*#@:=/- only")
    if not any(fnmatchcase(dialed, p) for p in allowed_endpoints):
        raise ForbiddenUser(f"Forbidden user: dialling endpoints such as {dialed} is not allowed here "
                            "([asterisk] call_endpoints)")
    if not any(fnmatchcase(dialed, p) for p in user.call_destinations if "/" in p):
        raise ForbiddenUser(f"Forbidden user: {user.name} may not call {dialed} (not in call_destinations)")
    return dialed


class Originator(Protocol):
    @property
    def connected(self) -> bool: ...

    async def originate(self, endpoint: str, url: str, caller_id: str | None, user: UserConfig) -> str:
        """Dial `endpoint` into the Stasis application with `ozml,URL`; returns the channel id. The script's
        SMS go with `user`'s permissions: the script is the caller's, not the dialplan's."""
        ...


class CallService:
    def __init__(self, originators: Sequence[Originator], asterisk: AsteriskConfig, policy: CallbackConfig) -> None:
        self._originators = originators
        self._dial_template = asterisk.dial
        self._endpoints = asterisk.call_endpoints
        self._policy = policy

    async def call(self, user: UserConfig, dialed: str, url: str, caller_id: str | None) -> str:
        if _LOOKS_LIKE_ENDPOINT.match(dialed):
            endpoint = check_call(user, dialed, self._endpoints) or dialed
        else:
            number = parse_recipient(dialed, "Dialed").value
            check_call(user, number, self._endpoints)
            endpoint = self._dial_template.format(number=number)
        script = validate_callback_url(url, self._policy, "Url", COMMAND)
        if "," in script:
            raise InvalidParameter("Url", COMMAND, "a comma cannot pass through Stasis arguments; encode it as %2C")
        ready = [o for o in self._originators if o.connected]
        if not ready:
            raise ServiceUnavailable("no Asterisk is connected over ARI: start the daemon with --ari")
        try:
            return await ready[0].originate(endpoint, script, caller_id, user)
        except SmsGatewayError as exc:
            raise ServiceUnavailable(f"Asterisk did not originate the call: {exc.message}") from None
