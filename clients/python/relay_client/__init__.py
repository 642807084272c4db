"""A client for the named TCP relay, standard library only.

>>> from relay_client import RelayClient
>>> # with RelayClient("127.0.0.1", 8080, "alice") as alice:
>>> #     alice.send("bob", b"hello")
>>> #     print(alice.recv())

:class:`RelayClient` blocks (and is thread-safe); :class:`AsyncRelayClient` is the asyncio variant
with the same operations. :mod:`relay_client.wire` holds the pure codec.
"""

from ._version import __version__
from .aio import AsyncRelayClient
from .client import RelayClient
from .errors import (
    ConnectionClosed,
    DeliveryError,
    ProtocolError,
    RegistrationRefused,
    RelayError,
    RelayTimeout,
    RequestError,
    SeedModeError,
)
from .messages import Message, Pong
from .wire import Frame, FrameParser, encode_control, encode_frame, encode_register

__all__ = [
    "__version__",
    "AsyncRelayClient",
    "ConnectionClosed",
    "DeliveryError",
    "Frame",
    "FrameParser",
    "Message",
    "Pong",
    "ProtocolError",
    "RegistrationRefused",
    "RelayClient",
    "RelayError",
    "RelayTimeout",
    "RequestError",
    "SeedModeError",
    "encode_control",
    "encode_frame",
    "encode_register",
]
