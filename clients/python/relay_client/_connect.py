"""Opening the transport: a TCP or TLS stream for asyncio."""

from __future__ import annotations

import asyncio
import ssl
from typing import Optional, Tuple


def tls_context(ca: Optional[str]) -> ssl.SSLContext:
    """A client TLS context that verifies the relay's certificate (against ``ca`` if given)."""
    return ssl.create_default_context(cafile=ca)


async def open_stream(
    host: str, port: int, tls: bool, ca: Optional[str]
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to the relay (without a deadline: callers wrap this in ``wait_for``)."""
    if tls or ca:
        return await asyncio.open_connection(
            host, port, ssl=tls_context(ca), server_hostname=host
        )
    return await asyncio.open_connection(host, port)
