"""Questions to a relay over short-lived control connections: its welcome, why a name is refused.

Seed-protocol programs (such as ``test_client.py``) use these to learn what the seed protocol cannot
tell them, without changing a byte of their own connection.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional

from ._connect import open_stream
from ._version import __version__
from .aio import AsyncRelayClient
from .errors import ConnectionClosed, ProtocolError, RegistrationRefused, RelayError, RelayTimeout
from .limits import CONNECT_TIMEOUT_S, CONTROL_VERSION, READ_CHUNK_BYTES
from .wire import FrameParser, decode_control, encode_control


async def fetch_welcome(
    host: str,
    port: int,
    *,
    tls: bool = False,
    ca: Optional[str] = None,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Optional[Dict[str, Any]]:
    """Says hello without registering and returns the relay's welcome.

    :returns: the welcome, or ``None`` when the relay does not speak the control channel (it
        closes the connection or does not answer within ``timeout``).
    :raises OSError: the connection could not be made.
    """
    reader, writer = await asyncio.wait_for(open_stream(host, port, tls, ca), timeout)
    try:
        hello = {"op": "hello", "v": CONTROL_VERSION, "client": f"relay-py/{__version__}"}
        writer.write(encode_control(hello))
        await writer.drain()
        parser = FrameParser()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data = await asyncio.wait_for(
                    reader.read(READ_CHUNK_BYTES), max(0.0, deadline - loop.time())
                )
            except (asyncio.TimeoutError, ConnectionError):
                return None
            if not data:
                return None
            for frame in parser.feed(data):
                if frame.peer == "":
                    reply = decode_control(frame.payload)
                    if reply["op"] == "welcome":
                        return reply
                    if reply["op"] in ("refused", "bye"):
                        return None
    except ProtocolError:
        return None
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass


async def refusal_reason(
    host: str,
    port: int,
    name: str,
    *,
    token: Optional[str] = None,
    tls: bool = False,
    ca: Optional[str] = None,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Optional[RegistrationRefused]:
    """Tries to register ``name`` over the control channel and returns the refusal, if any.

    When the name is accepted the connection is closed at once. Returns ``None`` when the name was
    accepted or the relay does not speak the control channel.
    """
    client = AsyncRelayClient(
        host, port, name, token=token, tls=tls, ca=ca, timeout=timeout, seed=False, keepalive=0
    )
    try:
        await client.connect()
    except RegistrationRefused as refused:
        return refused
    except (RelayError, OSError):
        return None
    await client.close()
    return None


def explain_refusal(
    host: str, port: int, name: str, token: Optional[str] = None, timeout: float = 3.0
) -> str:
    """A sentence for a person: why the relay closed a seed connection right after ``name|``."""
    try:
        refused = asyncio.run(refusal_reason(host, port, name, token=token, timeout=timeout))
    except (OSError, RelayTimeout, ConnectionClosed):
        refused = None
    if refused is not None:
        hint = {
            "name_taken": " Pick another name, or stop the client that holds it.",
            "auth_required": " This name is owned: pass its token with --token.",
            "bad_token": " The token is wrong for this name.",
        }.get(refused.reason, "")
        return f"The relay refused the name {name!r}: {refused.message} ({refused.reason}).{hint}"
    return (
        f"The relay closed the connection right after registering {name!r}: the name is taken by "
        "another client, invalid, or owned (it then needs --token)."
    )
