"""The HTTP/1.1 client for every request the gateway makes to a URL a user supplied: delivery-report and
incoming-SMS callbacks (form POSTs on keep-alive connections pooled per host) and OzML fetches (GET or form
POST, with the script's body). Answers are parsed by llhttp (httptools); head, body and total time are
bounded; redirects are never followed; every failure leaves as one exception, `HttpError`. The address
connected to is the one `UrlPolicy` checked. It is the `HttpSession` of `app/http.py`, whose errors it raises."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
from urllib.parse import quote, urlsplit

import httptools

from asterisk_sendsms.app.http import HttpError, HttpRefused, Response
from asterisk_sendsms.app.urlpolicy import AddressRefused, IpAddress, UrlPolicy

__all__ = ["HttpClient", "HttpError", "HttpRefused", "Response"]

MAX_HEAD = 64 * 1024  # the answer's status line and headers, interim (1xx) answers included
MAX_BODY = 1024 * 1024
_READ = 65536
# What may stand in a request target: printable ASCII but space; the rest is percent-encoded (never a CR or
# LF from a caller's URL in our request).
_TARGET_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]")
_NO_BODY = frozenset({204, 304})


class _Answer:
    """llhttp's callbacks for one connection's answer: the final status, the body, and whether it ended."""

    def __init__(self, keep_body: bool, max_body: int) -> None:
        self.keep_body = keep_body
        self.max_body = max_body
        self.status = 0
        self.head_done = False  # the final (non-1xx) answer's head has been parsed
        self.complete = False
        self.overflow = False
        self.keep_alive = False
        self.extra = False  # bytes after the answer: the connection is not reused
        self.chunked = False
        self.has_length = False
        self.body_size = 0
        self.chunks: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True
        self.chunked = self.has_length = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self.has_length = True
        elif lowered == b"transfer-encoding" and value.lower().rstrip().endswith(b"chunked"):
            self.chunked = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if self.parser.get_http_version() not in ("1.0", "1.1"):
            raise httptools.HttpParserError("not an HTTP/1.x answer")
        if status >= 200:
            self.status = status
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            self.overflow = True
        elif self.keep_body:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the answer ends

    @property
    def ends_with_connection(self) -> bool:
        """A body without length or chunking runs to the end of the connection."""
        return not self.chunked and not self.has_length and self.status not in _NO_BODY


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A pooled connection failed before any byte of the answer: the request goes again on a new one."""


class HttpClient:
    def __init__(self, policy: UrlPolicy, timeout: float, idle_per_host: int = 64, max_head: int = MAX_HEAD,
                 max_body: int = MAX_BODY) -> None:
        self._policy = policy
        self._timeout = timeout
        self._idle_per_host = idle_per_host
        self._max_head = max_head
        self._max_body = max_body
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def post_form(self, url: str, body: bytes) -> int:
        """POST `body` as a form; returns the answer's status. Its body is read and dropped; one longer than
        the limit, or still arriving when the time is up, is not read to its end: the connection is closed and
        the status stands. A malformed or truncated answer is an `HttpError`."""
        response = await self.request("POST", url, body, keep_body=False)
        return response.status

    async def request(self, method: str, url: str, form: bytes | None = None, keep_body: bool = True,
                      max_body: int | None = None) -> Response:
        """One request (GET, or POST of a form); with `keep_body` the whole body of the answer, which must end
        within `max_body` bytes. Raises `HttpError` when there is no such answer."""
        scheme, host, port, request = _build(method, url, form)
        key = (scheme, host, port)
        limit = self._max_body if max_body is None else max_body
        answer = _Answer(keep_body, limit)
        try:
            async with asyncio.timeout(self._timeout):
                connection = self._checkout(key)
                if connection is not None:
                    with contextlib.suppress(_Stale):
                        return await self._exchange(key, connection, request, answer, True)
                    answer = _Answer(keep_body, limit)
                connection = await self._connect(scheme, host, port)
                return await self._exchange(key, connection, request, answer, False)
        except TimeoutError:
            if answer.head_done and not keep_body:
                # A status came, then a body too slow to wait for (an endless drip): the status stands.
                return Response(answer.status, b"")
            raise HttpError(f"no answer within {self._timeout:g}s") from None
        except AddressRefused as exc:
            raise HttpRefused(str(exc)) from None
        except (OSError, ValueError) as exc:  # refused, reset, unreachable, TLS and certificate failures
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
        addresses = await self._policy.resolve(host.strip("[]"), port)
        failure: OSError | None = None
        for address in addresses:
            try:
                # The address checked is the one connected to; TLS still verifies the host's name.
                reader, writer = await asyncio.open_connection(
                    str(address), port, ssl=tls, server_hostname=host.strip("[]") if tls else None, limit=_READ)
            except OSError as exc:
                failure = exc
                continue
            connection = _Connection(reader, writer)
            try:
                self._policy.check_connected(host, _address(writer.get_extra_info("sockname")), address)
            except AddressRefused:
                connection.close()
                raise
            return connection
        raise failure if failure is not None else OSError(f"{host} has no address")

    async def _exchange(self, key: tuple[str, str, int], connection: _Connection, request: bytes, answer: _Answer,
                        pooled: bool) -> Response:
        head_bytes = 0
        prefix = b""
        reusable = False
        try:
            connection.writer.write(request)
            while not answer.complete:
                try:
                    data = await connection.reader.read(_READ)
                except OSError:
                    if pooled and head_bytes == 0:
                        raise _Stale from None
                    raise
                if not data:
                    if pooled and head_bytes == 0:
                        raise _Stale
                    if answer.head_done and answer.ends_with_connection:
                        break
                    raise HttpError("the connection closed before a complete answer")
                if head_bytes < 5:
                    # llhttp also reads RTSP/ and ICE/ answers as HTTP's.
                    start = (prefix := prefix + data[:5])[:5]
                    if not b"HTTP/".startswith(start):
                        raise HttpError(f"malformed answer: not HTTP: {start!r}")
                if not answer.head_done:
                    head_bytes += len(data)
                try:
                    answer.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    raise HttpError("the answer switches protocols") from None
                except httptools.HttpParserError as exc:
                    if answer.complete:
                        answer.extra = True  # bytes after a complete answer: it stands, the connection goes
                        break
                    raise HttpError(f"malformed answer: {exc}") from None
                if not answer.head_done and head_bytes > self._max_head:
                    raise HttpError(f"the answer's head is longer than {self._max_head} bytes")
                if answer.overflow:
                    if answer.keep_body:
                        raise HttpError(f"the answer is longer than {answer.max_body} bytes")
                    # A status and more body than anyone needs: the status stands, the rest is not read.
                    return Response(answer.status, b"")
            reusable = answer.complete and not answer.extra and answer.keep_alive
            return Response(answer.status, b"".join(answer.chunks))
        finally:
            if reusable and len(self._idle.setdefault(key, [])) < self._idle_per_host:
                self._idle[key].append(connection)
            else:
                connection.close()


def _address(sockname: object) -> IpAddress:
    if isinstance(sockname, tuple) and sockname:
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(str(sockname[0]).partition("%")[0])
    return ipaddress.IPv4Address(0)


def _build(method: str, url: str, form: bytes | None) -> tuple[str, str, int, bytes]:
    """(scheme, host, port, request bytes): the request line and headers cannot carry a CR, LF or space from
    the URL (the target is percent-encoded, the host must be a name or an address)."""
    if method not in ("GET", "POST"):
        raise HttpError(f"unsupported method {method[:20]!r}")
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise HttpError(f"not a usable URL: {url[:200]!r}") from None
    if scheme not in ("http", "https") or not host:
        raise HttpError(f"not an http(s) URL: {url[:200]!r}")
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        raise HttpError(f"not a usable host: {host[:200]!r}")
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    target = quote(parts.path or "/", safe=_TARGET_SAFE) + (
        "?" + quote(parts.query, safe=_TARGET_SAFE) if parts.query else "")
    host_header = host if port == default_port else f"{host}:{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}", "User-Agent: asterisk-sendsms"]
    if form is not None:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(form)}"]
    return scheme, host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (form or b"")
