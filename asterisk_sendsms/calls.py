"""The Ozeki `Call` command as a use case: originate a call through a connected Asterisk and run the OzML
at `Url` when it is answered (the outbound IVR receipt)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from .addresses import parse_recipient
from .auth import check_destination
from .config import CallbackConfig, UserConfig
from .errors import InvalidParameter, ServiceUnavailable, SmsGatewayError
from .notifier import validate_callback_url

__all__ = ["CallService", "Originator"]

COMMAND = "Call"
# A dial string Asterisk understands as it is: TECH/resource (PJSIP/100, Local/100@from-internal).
_ENDPOINT = re.compile(r"[A-Za-z][A-Za-z0-9_]*/[^\s,]+")


class Originator(Protocol):
    @property
    def connected(self) -> bool: ...

    async def originate(self, endpoint: str, url: str, caller_id: str | None) -> str:
        """Dial `endpoint` into the Stasis application with `ozml,URL`; returns the channel id."""
        ...


class CallService:
    def __init__(self, originators: Sequence[Originator], dial_template: str, policy: CallbackConfig) -> None:
        self._originators = originators
        self._dial_template = dial_template
        self._policy = policy

    async def call(self, user: UserConfig, dialed: str, url: str, caller_id: str | None) -> str:
        if _ENDPOINT.fullmatch(dialed):
            endpoint = dialed
            check_destination(user, dialed)
        else:
            number = parse_recipient(dialed, "Dialed").value
            check_destination(user, number)
            endpoint = self._dial_template.format(number=number)
        script = validate_callback_url(url, self._policy, "Url", COMMAND)
        if "," in script:
            raise InvalidParameter("Url", COMMAND, "a comma cannot pass through Stasis arguments; encode it as %2C")
        ready = [o for o in self._originators if o.connected]
        if not ready:
            raise ServiceUnavailable("no Asterisk is connected over ARI: start the daemon with --ari")
        try:
            return await ready[0].originate(endpoint, script, caller_id)
        except SmsGatewayError as exc:
            raise ServiceUnavailable(f"Asterisk did not originate the call: {exc.message}") from None
