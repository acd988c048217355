"""Talking to the running daemon over its control socket, and what every command shares: the exit codes, the
one-line error, the configuration as the command line gives it."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp

from asterisk_sendsms.config import Config, Overrides, load_config

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "CliError", "Control", "configuration", "control", "when"]


EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line failure to print."""


def configuration(args: argparse.Namespace, **extra: Any) -> Config:
    return load_config(Overrides(config_file=args.config, data_dir=args.data_dir, **extra))


class Control:
    """The daemon's control socket (the JSON API without a password: file permissions guard it)."""

    def __init__(self, config: Config) -> None:
        self._path = config.control_socket
        if not self._path.exists():
            raise CliError(f"the daemon is not running (no control socket at {self._path}); "
                           "start it with `asterisk-sendsms serve`")
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self._path)),
                                              timeout=aiohttp.ClientTimeout(total=30))

    async def __aenter__(self) -> Control:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            async with self._session.request(method, f"http://daemon{path}", json=body) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise CliError(f"cannot talk to the daemon at {self._path}: {exc}") from None

    async def stream(self, path: str) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._session.get(f"http://daemon{path}",
                                         timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
                if response.status != 200:
                    raise CliError(str((await response.json(content_type=None)).get("error")))
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise CliError(f"lost the daemon at {self._path}: {exc}") from None


async def control(config: Config, method: str, path: str, body: dict[str, Any] | None = None
                   ) -> tuple[int, Any]:
    async with Control(config) as control:
        return await control.call(method, path, body)


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="milliseconds")
