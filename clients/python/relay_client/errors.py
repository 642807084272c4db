"""Exceptions raised by the relay client; all derive from :class:`RelayError`."""

from __future__ import annotations

from typing import Optional


class RelayError(Exception):
    """Base class of every error the relay client raises on purpose."""


class RegistrationRefused(RelayError):
    """The relay refused the name; ``reason`` is the relay's typed reason.

    Reasons from the spec: ``name_taken``, ``invalid_name``, ``auth_required``, ``bad_token``,
    ``rate_limited``, ``too_many_connections``, ``too_many_connections_per_ip``,
    ``unsupported_version``, ``register_timeout``.
    """

    def __init__(self, name: str, reason: str, message: Optional[str] = None) -> None:
        self.name = name
        self.reason = reason
        self.message = message or reason.replace("_", " ")
        super().__init__(f"Cannot register {name!r}: {self.message} ({reason})")


class ConnectionClosed(RelayError):
    """The connection to the relay ended; ``reason`` is the relay's ``bye`` reason, if it sent one."""

    def __init__(self, reason: Optional[str] = None, message: Optional[str] = None) -> None:
        self.reason = reason
        self.message = message
        text = "Connection to the relay closed"
        if reason:
            text += f": {message or reason} ({reason})"
        elif message:
            text += f": {message}"
        super().__init__(text)


class ProtocolError(RelayError, ValueError):
    """The relay sent bytes that do not follow the protocol."""


class RequestError(RelayError):
    """The relay answered a request with an ``error`` (``unknown_op``, ``listing_disabled``, …)."""

    def __init__(self, op: str, reason: str, message: Optional[str] = None) -> None:
        self.op = op
        self.reason = reason
        self.message = message
        super().__init__(f"Request {op!r} failed: {message or reason} ({reason})")


class DeliveryError(RelayError):
    """A message could not be delivered (``unknown_destination``, ``message_too_large``)."""

    def __init__(
        self,
        reason: str,
        dest: Optional[str] = None,
        count: int = 1,
        size: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> None:
        self.reason = reason
        self.dest = dest
        self.count = count
        self.size = size
        self.limit = limit
        if reason == "unknown_destination":
            text = f"Cannot deliver to {dest!r}: nobody has that name"
        elif reason == "message_too_large":
            text = f"Cannot deliver to {dest!r}: {size} bytes is above the relay's limit of {limit}"
        else:
            text = f"Cannot deliver to {dest!r}: {reason}"
        super().__init__(text)


class SeedModeError(RelayError):
    """The operation needs the control channel, and this connection speaks the seed protocol."""


class RelayTimeout(RelayError, TimeoutError):
    """An operation did not finish within its deadline."""
