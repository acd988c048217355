"""The frames of the links between the daemon and its child processes, without I/O: a length, a checksum and a
body of at most MAX_FRAME bytes; the hello that opens each link with its protocol version; `pack`, typed
messages into one frame, and `Codec`, which reads them back, refusing anything malformed with `IpcError`."""

from __future__ import annotations

import marshal
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["HEADER", "MAX_FRAME", "NUMBER", "OPTIONAL_NUMBER", "OPTIONAL_STR", "PROTOCOL_VERSION", "Codec",
           "FrameReader", "IpcError", "Kind", "Message", "VersionMismatch", "check", "decode_hello", "encode_hello",
           "frame", "frame_length", "pack"]

# Raised with every change to a message's fields or to the messages a link carries: the daemon and a child
# that name different versions refuse each other at the hello instead of misreading fields.
PROTOCOL_VERSION = 2
# A frame: the length of its body, the body's CRC-32, the body. marshal reads any list or tuple length a body
# claims into memory before it reads a single item (bytes cut or out of step could stall the daemon for
# seconds and take gigabytes), so a body is read only if it is as our own `pack` wrote it.
HEADER = struct.Struct("!II")
MAX_FRAME = 64 * 1024 * 1024
# The frame's layout and the hello's (this mark, the version, a body) never change, so that any two versions can
# tell each other apart.
_HELLO_MARK = "asterisk-sendsms ipc"


class IpcError(ValueError):
    """A frame that cannot be read: the link it came on is out of step, and is closed."""


class VersionMismatch(IpcError):
    """The other end speaks another version of the protocol."""


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def frame_length(header: bytes) -> int:
    """The length of the body that follows `header` (HEADER.size bytes); IpcError past MAX_FRAME."""
    length, _ = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise IpcError(f"a frame of {length} bytes: the stream is out of step")
    return int(length)


class FrameReader:
    """Bodies of frames out of the bytes of the stream as they come, each checked against its checksum."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        bodies = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            length, checksum = HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise IpcError(f"a frame of {length} bytes: the stream is out of step")
            end = start + HEADER.size + length
            if end > len(buffer):
                break
            body = buffer[start + HEADER.size:end]
            if zlib.crc32(body) != checksum:
                raise IpcError("a frame whose checksum does not match: the stream is out of step")
            bodies.append(body)
            start = end
        self._buffer = buffer[start:]
        return bodies


def _loads(body: bytes) -> Any:
    # marshal: tuples, lists, str, bytes, float, int, None are what the links carry, and it reads them back
    # several times faster than pickle (and 4 times faster than json). `body` passed its checksum (see HEADER);
    # what marshal reads is checked field by field before use.
    try:
        return marshal.loads(body)  # noqa: S302 - from a child of ours, over a socketpair; checked below
    except (ValueError, EOFError, TypeError) as exc:
        raise IpcError(f"a frame that is not marshal data ({exc})") from None


def encode_hello(body: bytes) -> bytes:
    """The first frame each end of a link sends: the protocol version and `body` (the daemon's: the child's
    configuration, pickled; a child's: empty)."""
    return frame(marshal.dumps((_HELLO_MARK, PROTOCOL_VERSION, body)))


def decode_hello(body: bytes) -> bytes:
    """The body of a hello; VersionMismatch if it names another version, IpcError if it is none."""
    hello = _loads(body)
    if type(hello) is not tuple or len(hello) != 3 or hello[0] != _HELLO_MARK or type(hello[1]) is not int:
        raise VersionMismatch(f"the first frame is no hello of protocol version {PROTOCOL_VERSION} (another "
                              "version, or no asterisk-sendsms process)")
    if hello[1] != PROTOCOL_VERSION:
        raise VersionMismatch(f"the other end speaks protocol version {hello[1]}, this one {PROTOCOL_VERSION}")
    if type(hello[2]) is not bytes:
        raise IpcError("a hello without its body")
    return hello[2]


class Message(Protocol):
    """A message of a link: `encode` gives its tag and its fields as one tuple; the `Codec` of the end it goes
    to reads such a tuple back with the decoder of its tag (ValueError or TypeError if it does not fit: `check`
    does the common part)."""

    def encode(self) -> tuple[Any, ...]: ...


# For `check`: a field that may be None, a number (an int where a float is meant reads as the same value).
OPTIONAL_STR = (str, type(None))
NUMBER = (float, int)
OPTIONAL_NUMBER = (float, int, type(None))

Kind = type | tuple[type, ...]


def check(row: tuple[Any, ...], kinds: tuple[Kind, ...]) -> None:
    """ValueError unless `row` is a tuple of one field of each of `kinds` (the tag's first), in order."""
    if type(row) is not tuple or len(row) != len(kinds) or not all(map(isinstance, row, kinds)):
        found = ", ".join(type(value).__name__ for value in row[1:21]) if type(row) is tuple else type(row).__name__
        raise ValueError(f"fields ({found}) where {len(kinds) - 1} of other kinds belong")


def pack(messages: Sequence[Message]) -> bytes:
    """One frame of several messages (sent in one system call)."""
    return frame(marshal.dumps([message.encode() for message in messages]))


class Codec:
    """The messages one end of a link may receive, by tag: `unpack` reads those of a frame's body (from
    `FrameReader`) back, checked; IpcError for anything else."""

    def __init__(self, decoders: dict[str, Callable[[tuple[Any, ...]], Any]]) -> None:
        self._decoders = decoders

    def unpack(self, body: bytes) -> list[Any]:
        rows = _loads(body)
        if type(rows) is not list:
            raise IpcError(f"a frame of {type(rows).__name__}, not a list of messages")
        try:
            return [self._decoders[row[0]](row) for row in rows]
        except (LookupError, TypeError, ValueError) as exc:
            if not all(type(row) is tuple and row and type(row[0]) is str and row[0] in self._decoders
                       for row in rows):
                raise IpcError("a message that is no tuple of a known tag and its fields") from None
            raise IpcError(f"a message that does not read ({exc})") from None
