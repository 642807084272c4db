"""The relay's wire format: encoders and an incremental frame parser, with no I/O.

Protocol flow (docs/PROTOCOL.md)::

    seed:     client → relay  alice|               register (no reply)
              client → relay  bob|5|hello          send
              relay → client  alice|5|hello        deliver (framed with the sender's name)
    control:  client → relay  |35|{"op":"hello",…} opt in; the relay is the empty name
              relay → client  |187|{"op":"welcome",…} then |36|{"op":"registered",…}

Every frame is ``{name}|{len}|{payload}``: ``name`` is 0 to 255 bytes (empty for the relay's
control channel), ``len`` 1 to 20 ASCII digits, then exactly ``len`` payload bytes, which may be
anything, ``|`` included.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, NamedTuple, Optional, Union

from .errors import ProtocolError
from .limits import MAX_LENGTH_DIGITS, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_TOKEN_BYTES

_BAR = 0x7C  # "|"
_NAME = 0
_LENGTH = 1
_PAYLOAD = 2


class Frame(NamedTuple):
    """One frame: ``peer`` is the sender (received) or destination (sent); ``""`` is the relay."""

    peer: str
    payload: bytes


def _bad_name_char(name: str) -> Optional[str]:
    for ch in name:
        if ch in "|:" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            return ch
    return None


def validate_name(name: str, what: str = "name") -> bytes:
    """Checks a name to register or send to and returns its UTF-8 bytes.

    :raises TypeError: ``name`` is not a ``str``.
    :raises ValueError: it is empty, longer than 255 bytes, or holds ``|``, ``:`` or a control
        character.
    """
    if not isinstance(name, str):
        raise TypeError(f"The {what} must be a str, not {type(name).__name__}")
    raw = name.encode("utf-8")
    if not raw:
        raise ValueError(f"The {what} must not be empty")
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"The {what} is {len(raw)} bytes; at most {MAX_NAME_BYTES} are allowed")
    bad = _bad_name_char(name)
    if bad is not None:
        raise ValueError(f"The {what} must not contain {bad!r}")
    return raw


def validate_token(token: str) -> bytes:
    """Checks a token (1 to 255 bytes of UTF-8, no space, ``|`` or control character)."""
    if not isinstance(token, str):
        raise TypeError(f"The token must be a str, not {type(token).__name__}")
    raw = token.encode("utf-8")
    if not raw or len(raw) > MAX_TOKEN_BYTES:
        raise ValueError(f"The token must be 1 to {MAX_TOKEN_BYTES} bytes")
    if any(ch in " |" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        raise ValueError("The token must not contain a space, '|' or a control character")
    return raw


def encode_register(name: str, token: Optional[str] = None) -> bytes:
    """Encodes a seed registration: ``name|``, or ``name:token|`` for an owned name."""
    raw = validate_name(name)
    if token is not None:
        raw += b":" + validate_token(token)
    return raw + b"|"


def encode_header(dest: str, length: int) -> bytes:
    """Encodes ``dest|len|``; ``dest`` may be ``""`` (the relay) here."""
    raw = b"" if dest == "" else validate_name(dest, "destination")
    if length < 0:
        raise ValueError("The length must not be negative")
    return raw + b"|" + str(length).encode("ascii") + b"|"


def encode_frame(dest: str, payload: Union[bytes, bytearray, memoryview]) -> bytes:
    """Encodes one frame ``dest|len|payload``.

    :raises TypeError: ``payload`` is not bytes-like.
    :raises ValueError: ``dest`` is not a valid name.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"The payload must be bytes, not {type(payload).__name__}")
    return encode_header(dest, len(payload)) + bytes(payload)


def encode_control(request: Dict[str, Any]) -> bytes:
    """Encodes a control request: a frame to the empty name holding one JSON object."""
    payload = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return encode_header("", len(payload)) + payload


def decode_control(payload: bytes) -> Dict[str, Any]:
    """Decodes a control payload from the relay into a dict with a string ``op``.

    :raises ProtocolError: it is not a JSON object with a string ``op``.
    """
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"The relay sent a control frame that is not JSON: {error}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise ProtocolError("The relay sent a control frame without a string 'op'")
    return obj


class FrameParser:
    """Incremental parser of ``name|len|payload`` frames, fed whatever bytes a read returned.

    Frames may be split anywhere or arrive several per read. The memory it holds is bounded: a
    header field is refused once it passes its limit (255 name bytes, 20 digits), and a payload
    buffer is allocated only after its declared length is checked against ``max_message_bytes``.

    >>> p = FrameParser()
    >>> p.feed(b"bob|5|he") + p.feed(b"llocarol|0|")
    [Frame(peer='bob', payload=b'hello'), Frame(peer='carol', payload=b'')]
    """

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._state = _NAME
        self._field = bytearray()
        self._name = ""
        self._payload = bytearray()
        self._filled = 0

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame has been fed and the rest is still to come."""
        return self._state != _NAME or bool(self._field)

    def feed(self, data: bytes) -> List[Frame]:
        """Parses ``data`` and returns the frames it completes, in order.

        :raises ProtocolError: the stream breaks the format; the parser must not be fed again.
        """
        frames: List[Frame] = []
        view = memoryview(data)
        at, end = 0, len(view)
        while at < end:
            if self._state == _PAYLOAD:
                take = min(len(self._payload) - self._filled, end - at)
                self._payload[self._filled : self._filled + take] = view[at : at + take]
                self._filled += take
                at += take
                if self._filled == len(self._payload):
                    frames.append(Frame(self._name, bytes(self._payload)))
                    self._payload = bytearray()
                    self._state = _NAME
                continue
            limit = MAX_NAME_BYTES if self._state == _NAME else MAX_LENGTH_DIGITS
            bar = data.find(b"|", at, min(end, at + limit + 1 - len(self._field)))
            stop = end if bar < 0 else bar
            self._field += view[at:stop]
            at = stop if bar < 0 else bar + 1
            if len(self._field) > limit:
                what = "name" if self._state == _NAME else "length"
                raise ProtocolError(f"Frame {what} field longer than {limit} bytes")
            if self._state == _LENGTH and not self._field.isdigit() and self._field:
                raise ProtocolError(f"Frame length {bytes(self._field)!r} is not a decimal number")
            if self._state == _LENGTH and self._field and int(self._field) > self.max_message_bytes:
                raise ProtocolError(
                    f"Frame length {int(self._field)} is above the limit of "
                    f"{self.max_message_bytes} bytes"
                )
            if bar < 0:
                continue
            if self._state == _NAME:
                try:
                    self._name = self._field.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("Frame name is not UTF-8") from None
                self._state = _LENGTH
            else:
                if not self._field:
                    raise ProtocolError("Frame length is empty")
                length = int(self._field)
                if length == 0:
                    frames.append(Frame(self._name, b""))
                    self._state = _NAME
                else:
                    self._payload = bytearray(length)
                    self._filled = 0
                    self._state = _PAYLOAD
            self._field = bytearray()
        return frames
