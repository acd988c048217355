"""Recipient prefix matching, shared by routes (which transports serve a number) and user permissions."""

from __future__ import annotations

from collections.abc import Sequence

from asterisk_sendsms.config import Route

__all__ = ["Router", "prefix_matches"]


def prefix_matches(recipient: str, prefix: str) -> bool:
    """A prefix with '+' matches international numbers only; one without matches the digits of any number;
    the empty prefix matches everything."""
    if prefix.startswith("+"):
        return recipient.startswith(prefix)
    return recipient.lstrip("+").startswith(prefix)


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        # The most specific prefix wins; '+36' is more specific than '36' of the same length.
        self._routes = sorted(routes, key=lambda r: (len(r.prefix.lstrip("+")), r.prefix.startswith("+")),
                              reverse=True)

    def route_for(self, recipient: str) -> Route | None:
        """The most specific route serving the recipient, if any."""
        for route in self._routes:
            if prefix_matches(recipient, route.prefix):
                return route
        return None
