"""Requests of the API's fast lane read from a TCP byte stream, without I/O: the HTTP/1.1 request grammar
(RFC 9112) in one place, an O(n) receive buffer that frames the stream one request at a time, the lane's limits,
and which requests the lane serves. A request it does not serve stays in the buffer, byte for byte, for the
server it is handed to; bytes that are no request are refused with one exception, BadRequest."""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from asterisk_sendsms.core.errors import ParseError

__all__ = ["LINGER", "MAX_HEADERS", "MAX_HEADER_BYTES", "BadRequest", "NotOurs", "Request", "RequestReader", "Stage",
           "max_request_line"]

# The lane serves /api only: applications send a handful of short headers. A GET carries its parameters in
# the request line, which may therefore be as long as a POST body (max_request_line).
MAX_HEADERS = 32
MAX_HEADER_BYTES = 8 * 1024
_MIN_REQUEST_LINE = 8190  # aiohttp's default, for the other paths and the status page's links
# A connection refused with an error is closed this long after the answer, what the client still sends unread:
# closed at once with bytes of the client's unread, the kernel would reset it and the client could lose the answer.
LINGER = 2.0

# The grammar (RFC 9112 §3, §5; RFC 9110 §5.6.2 token, §5.5 field values): a request line of method, target
# and version separated by single spaces; field lines of a token, a colon, optional whitespace and a value of
# visible characters, spaces, tabs and obs-text. No bare CR or LF anywhere: a line ends with CRLF.
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])"
_HEAD = re.compile(_REQUEST_LINE + rb"(?:\r\n" + _TCHAR + rb"+:[\t\x20-\x7e]*)*")  # less its final CRLF CRLF
# The same with obs-text in field values: allowed, and left to aiohttp.
_HEAD_OBS_TEXT = re.compile(_REQUEST_LINE + rb"(?:\r\n" + _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*)*")
_REQUEST_LINE_ONLY = re.compile(_REQUEST_LINE)
# A field of lines that match _FIELD_LINES: the value runs to the end of its line, less trailing whitespace.
_FIELD = re.compile(rb"\r\n(" + _TCHAR + rb"+):[ \t]*([^\r]*)")
_METHOD_START = re.compile(_TCHAR + rb"{1,20}(?: |$)")
_END_OF_HEAD = b"\r\n\r\n"
_LINE_END = b"\r\n"
# Headers that change how the body is framed or answered: aiohttp knows them all.
_HAND_OVER = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
_FORM_TYPES = (b"application/x-www-form-urlencoded", b"application/x-www-form-urlencoded; charset=utf-8")
_METHODS = {b"GET": "GET", b"POST": "POST"}  # the lane's; any other is handed over
_VERSIONS = (b"1.1", b"1.0")
_MAX_LENGTH_DIGITS = 15


def max_request_line(max_body_bytes: int) -> int:
    """A GET carries its parameters in the request line: allow it what a POST body may have."""
    return max(_MIN_REQUEST_LINE, max_body_bytes)


class BadRequest(ParseError):
    """The bytes are not an HTTP/1.1 request within the lane's limits: answered with `http_status`, then the
    connection is closed (what follows cannot be framed)."""

    def __init__(self, reason: str, http_status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class NotOurs(Exception):
    """The request at the head of the buffer is well formed, for another server (another path or method, a
    chunked body, an upgrade, anything unusual): hand over `RequestReader.unanswered()`."""


class Stage(enum.Enum):
    IDLE = "idle"  # no byte of the next request yet
    HEAD = "head"  # part of a request's head has arrived
    BODY = "body"  # the head is complete, part of the body is missing
    READY = "ready"  # a request was returned and is being answered


class Request(NamedTuple):
    method: str  # GET or POST
    query: str
    body: bytes  # a POST's form; a GET's body is read past
    authorization: str
    keep_alive: bool
    http10: bool  # an HTTP/1.0 client that keeps the connection must be told so


class RequestReader:
    """Bytes in (`feed`), requests out (`next_request`). The buffer grows at its end and is cut at its start
    once a request is answered (`finish`): the search for the end of a head goes on where it stopped, nothing is
    copied per read, and the buffer always starts where the next server would."""

    def __init__(self, max_line: int, max_body: int) -> None:
        self._max_line = max_line
        self._max_body = max_body
        self._buffer = bytearray()
        self._ready = False  # a request was returned and is being answered
        # A partial head: where the search for its end goes on, how far it is checked for bare line feeds,
        # where its request line ends (-1: not yet), whether it starts with a method and a space.
        self._scanned = self._checked = 0
        self._line_end = -1
        self._method_seen = False
        self._head_length = 0
        self._message_length = 0
        self._request: Request | None = None

    @property
    def stage(self) -> Stage:
        if self._ready:
            return Stage.READY
        if self._message_length:
            return Stage.BODY
        return Stage.HEAD if self._buffer else Stage.IDLE

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def unanswered(self) -> bytes:
        """Every byte not answered yet, from the first of the current request."""
        return bytes(self._buffer)

    def next_request(self, data: bytes = b"") -> Request | None:
        """With `data` fed, the request at the head of the buffer when it is complete and the lane's; None while
        bytes are missing. Raises NotOurs for a request another server answers, BadRequest for bytes that are no
        request. After a request, call `finish` once it is answered."""
        if data:
            self._buffer += data
        if self._ready:
            return None
        if not self._message_length:
            end = self._buffer.find(_END_OF_HEAD, self._scanned)
            if end < 0:
                if self._buffer:
                    self._check_partial_head()
                return None
            self._read_head(end + len(_END_OF_HEAD))
        if len(self._buffer) < self._message_length:
            return None
        self._ready = True
        request = self._request
        assert request is not None  # set with Stage.BODY
        if request.method == "POST" and self._message_length > self._head_length:
            request = request._replace(body=bytes(self._buffer[self._head_length:self._message_length]))
        return request

    def finish(self) -> bool:
        """The request returned last is answered: its bytes leave the buffer. Whether bytes of another are
        buffered."""
        assert self._ready
        del self._buffer[:self._message_length]  # moves the start of the bytearray, copies nothing
        self._ready = False
        self._message_length = 0
        self._request = None
        if self._checked:  # the head came in pieces
            self._scanned = self._checked = 0
            self._line_end = -1
            self._method_seen = False
        return bool(self._buffer)

    # ------------------------------------------------------------ parsing

    def _check_partial_head(self) -> None:
        """Refuse a head that cannot become a request as soon as that shows (a bare LF, TLS or other protocols
        on the port, a head over the limits), not at the head timeout."""
        buffer = self._buffer
        if not self._method_seen:
            method = _METHOD_START.match(buffer)
            if method is None:
                raise BadRequest("not an HTTP request")
            self._method_seen = method.group().endswith(b" ")
        line_feed = buffer.find(b"\n", self._checked)
        while line_feed >= 0:
            if line_feed == 0 or buffer[line_feed - 1] != 0x0D:
                raise BadRequest("a line ends with a bare LF; HTTP lines end with CRLF")
            if self._line_end < 0:
                self._line_end = line_feed - 1
            line_feed = buffer.find(b"\n", line_feed + 1)
        buffered = len(buffer)
        self._checked = buffered
        self._scanned = max(0, buffered - len(_END_OF_HEAD) + 1)
        if self._line_end < 0:
            if buffered > self._max_line + 1:
                raise self._line_too_long()
        elif self._line_end > self._max_line:
            raise self._line_too_long()
        elif buffered - self._line_end > MAX_HEADER_BYTES + len(_END_OF_HEAD):
            raise self._headers_too_long()

    def _read_head(self, head_length: int) -> None:
        """Read the head by the grammar: BadRequest for one that breaks it, NotOurs for one that keeps it but is
        not the lane's; else the request waits for its body."""
        buffer = self._buffer  # read in place (matched groups are bytes of their own)
        head_end = head_length - len(_END_OF_HEAD)
        start = _HEAD.fullmatch(buffer, 0, head_end)
        if start is None:
            self._refuse_head(head_end)
        assert start is not None  # _refuse_head raises
        line_end = start.end(3)
        if line_end > self._max_line:
            raise self._line_too_long()
        if head_end - line_end > MAX_HEADER_BYTES:
            raise self._headers_too_long()
        fields = _FIELD.findall(buffer, line_end, head_end)
        if len(fields) > MAX_HEADERS:
            raise self._headers_too_long()
        headers = {}
        for name, value in fields:
            headers[name.lower()] = value
        if len(headers) < len(fields):  # a field given twice: aiohttp refuses some, and which value counts
            lengths = {value.rstrip(b" \t") for name, value in fields if name.lower() == b"content-length"}
            if len(lengths) > 1:
                raise BadRequest("two different Content-Length fields")
            raise NotOurs()
        length = 0
        if b"content-length" in headers:
            length_field = headers[b"content-length"].rstrip(b" \t")
            if not length_field.isdigit() or len(length_field) > _MAX_LENGTH_DIGITS:
                raise BadRequest("Content-Length is not a number of bytes")
            length = int(length_field)
            if length > self._max_body:  # refused before it is sent: no server of ours would read it
                raise BadRequest(f"the request body is larger than {self._max_body} bytes", 413)
        method, target, version = start.groups()
        if (method not in _METHODS or not (target == b"/api" or target.startswith(b"/api?")) or b"#" in target
                or version not in _VERSIONS or not _HAND_OVER.isdisjoint(headers)):
            raise NotOurs()
        http10 = version == b"1.0"
        if not http10 and b"host" not in headers:
            raise NotOurs()  # aiohttp answers 400, as HTTP/1.1 asks
        if length and method == b"POST" and b"content-type" in headers and \
                headers[b"content-type"].rstrip(b" \t").lower() not in _FORM_TYPES:
            raise NotOurs()
        if b"connection" in headers:
            tokens = {token.strip() for token in headers[b"connection"].lower().split(b",")}
            keep_alive = b"keep-alive" in tokens if http10 else b"close" not in tokens
        else:
            keep_alive = not http10
        authorization = headers[b"authorization"].rstrip(b" \t").decode() if b"authorization" in headers else ""
        self._request = Request(_METHODS[method], target[5:].decode(), b"", authorization, keep_alive, http10)
        self._head_length = head_length
        self._message_length = head_length + length

    def _refuse_head(self, head_end: int) -> None:
        """Hand over a head with obs-text, else say which part of it breaks the grammar."""
        buffer = self._buffer
        line_end = buffer.find(_LINE_END, 0, head_end)
        line_end = head_end if line_end < 0 else line_end
        if line_end > self._max_line:
            raise self._line_too_long()
        if head_end - line_end > MAX_HEADER_BYTES:
            raise self._headers_too_long()
        if _HEAD_OBS_TEXT.fullmatch(buffer, 0, head_end) is not None:
            raise NotOurs()
        if _REQUEST_LINE_ONLY.fullmatch(buffer, 0, line_end) is None:
            raise BadRequest("the request line is not METHOD TARGET HTTP/x.y")
        raise BadRequest("a header field is not NAME: VALUE (or it holds a control character)")

    def _line_too_long(self) -> BadRequest:
        return BadRequest(f"the request line is longer than {self._max_line} bytes", 414)

    @staticmethod
    def _headers_too_long() -> BadRequest:
        return BadRequest(f"the header fields are more than {MAX_HEADERS} or longer than {MAX_HEADER_BYTES} bytes",
                          431)
