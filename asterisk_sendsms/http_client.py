"""The HTTP/1.1 client that posts notifications: keep-alive connections pooled per host, one form POST per
call, redirects never followed. aiohttp's client cost about 300 µs of CPU per post, as much as the rest of a
message's way through the gateway; this costs a tenth of that."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from urllib.parse import quote, urlsplit

__all__ = ["HttpClient", "HttpError"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024  # a receiver's answer is read and dropped; more than this is not an answer
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?")
# What may stand in a request target: printable ASCII but space; the rest is percent-encoded (never a CR or
# LF from a caller's URL in our request).
_TARGET_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_NO_BODY = {204, 304}


class HttpError(Exception):
    """The request did not get an HTTP answer (connection, TLS, timeout or a malformed reply)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    def __init__(self, timeout: float, idle_per_host: int = 64) -> None:
        self._timeout = timeout
        self._idle_per_host = idle_per_host
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def post_form(self, url: str, body: bytes) -> int:
        """POST `body` as a form; returns the status of the answer. Raises `HttpError` if there is none."""
        try:
            parts = urlsplit(url)
            scheme, port = parts.scheme, parts.port
            host = (parts.hostname or "").encode("idna").decode("ascii")
        except (ValueError, UnicodeError):
            raise HttpError(f"not a usable URL: {url[:200]}") from None
        if scheme not in ("http", "https") or not host:
            raise HttpError(f"not an http(s) URL: {url[:200]}")
        port = port or (443 if scheme == "https" else 80)
        target = quote(parts.path or "/", safe=_TARGET_SAFE) + (
            "?" + quote(parts.query, safe=_TARGET_SAFE) if parts.query else "")
        host_header = f"[{host}]" if ":" in host else host
        if port != (443 if scheme == "https" else 80):
            host_header += f":{port}"
        request = (f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: asterisk-sendsms\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
                   ).encode("ascii") + body
        key = (scheme, host, port)
        try:
            async with asyncio.timeout(self._timeout):
                # A pooled connection the server has just closed fails before any answer: the post goes once
                # more on a new connection (notifications are at least once anyway).
                connection = self._checkout(key)
                if connection is not None:
                    try:
                        return await self._exchange(key, connection, request)
                    except (OSError, asyncio.IncompleteReadError):
                        connection.close()
                connection = await self._connect(scheme, host, port)
                return await self._exchange(key, connection, request)
        except TimeoutError:
            raise HttpError(f"no answer within {self._timeout:g}s") from None
        except asyncio.IncompleteReadError:
            raise HttpError("the connection closed before a complete answer") from None
        except asyncio.LimitOverrunError:
            raise HttpError("the answer's header is too long") from None
        except OSError as exc:  # connection refused or reset, TLS failures, unknown host
            raise HttpError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=_MAX_HEAD)
        return _Connection(reader, writer)

    async def _exchange(self, key: tuple[str, str, int], connection: _Connection, request: bytes) -> int:
        reusable = False
        try:
            connection.writer.write(request)
            while True:
                status, reusable = await self._read_answer(connection.reader)
                if status >= 200:
                    return status
                # 1xx: an interim answer; the final one follows
        finally:
            if reusable and len(self._idle.setdefault(key, [])) < self._idle_per_host:
                self._idle[key].append(connection)
            else:
                connection.close()

    @staticmethod
    async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
        """(status, whether the connection can carry another request); the body is read and dropped."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        start = _STATUS_LINE.fullmatch(lines[0])
        if start is None:
            raise HttpError(f"not an HTTP answer: {lines[0][:80]!r}")
        status = int(start.group(2))
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise HttpError(f"malformed header line in the answer: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get(b"connection", b"").lower()
        keep_alive = b"close" not in connection if start.group(1) == b"1" else b"keep-alive" in connection
        if status < 200 or status in _NO_BODY:
            return status, keep_alive
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await _skip_chunked(reader)
            return status, keep_alive
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > _MAX_BODY:
                raise HttpError(f"unusable Content-Length in the answer: {length[:40]!r}")
            await reader.readexactly(int(length))
            return status, keep_alive
        # No length: the body ends with the connection.
        total = 0
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                total += len(data)
                if total > _MAX_BODY:
                    raise HttpError("the answer is too long")
        return status, False


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise HttpError(f"malformed chunk size in the answer: {size_line[:40]!r}") from None
        total += size
        if total > _MAX_BODY:
            raise HttpError("the answer is too long")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return
        await reader.readexactly(size + 2)
