"""Values the clients return: received messages and ping results."""

from __future__ import annotations

from typing import NamedTuple


class Message(NamedTuple):
    """A message received from another client."""

    #: Name of the client that sent it (reply to it with ``send(msg.sender, …)``).
    sender: str
    #: The payload, exactly the bytes that were sent.
    payload: bytes


class Pong(NamedTuple):
    """The relay's answer to :meth:`ping`: everything sent before the ping has been routed."""

    #: Round-trip time in seconds.
    rtt: float
    #: The relay's clock, milliseconds since the Unix epoch.
    time_ms: int
    #: Messages of this client dropped (offline destination) since the previous pong.
    dropped: int
