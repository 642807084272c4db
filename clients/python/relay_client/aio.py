"""AsyncRelayClient: a relay connection for asyncio programs.

Connecting (docs/PROTOCOL.md, "Control channel")::

    connect ─► |{len}|{"op":"hello","v":1,"name":…} ─► welcome ─► registered   (or refused: raise)
            └► the relay closes without a word (it predates the control channel):
               reconnect, send ``name|`` (seed mode, no confirmation)

One reader task parses frames and routes them: data frames to the inbox, the relay's replies to the
request waiting for them, delivery errors to :meth:`AsyncRelayClient.delivery_errors`. A keepalive
task sends ``name|0|`` whenever the client has been silent for the keepalive interval.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Deque, Dict, List, Optional, Union

from ._connect import open_stream
from ._version import __version__
from .errors import (
    ConnectionClosed,
    DeliveryError,
    ProtocolError,
    RegistrationRefused,
    RelayTimeout,
    RequestError,
    SeedModeError,
)
from .limits import (
    CLOSE_GRACE_S,
    CONNECT_TIMEOUT_S,
    CONTROL_VERSION,
    KEEPALIVE_S,
    MAX_MESSAGE_BYTES,
    MAX_QUEUED_BYTES,
    READ_CHUNK_BYTES,
    WHO_PAGE_LIMIT,
)
from .messages import Message, Pong
from .wire import (
    Frame,
    FrameParser,
    decode_control,
    encode_control,
    encode_frame,
    encode_header,
    encode_register,
    validate_name,
    validate_token,
)

log = logging.getLogger("relay_client")

#: Delivery errors kept for :meth:`AsyncRelayClient.delivery_errors` (older ones are dropped).
MAX_KEPT_ERRORS = 256

_BytesLike = Union[bytes, bytearray, memoryview]


class _NoControl(Exception):
    """The relay closed the connection or stayed silent without answering the hello."""


class AsyncRelayClient:
    """A named connection to a relay, for asyncio programs.

    :param host: relay host name or address.
    :param port: relay TCP port.
    :param name: the name to register (1–255 bytes of UTF-8, no ``|``, ``:`` or control characters).
    :param token: token of a name the relay's auth file owns.
    :param tls: connect over TLS (the relay's certificate is verified).
    :param ca: PEM file of a private CA to trust (implies ``tls``).
    :param timeout: seconds allowed to connect and register, and the default for requests.
    :param seed: ``None`` (default): use the control channel, and fall back to the seed protocol when
        the relay closes the connection (or stays silent) instead of answering the hello. ``True``:
        speak only the seed protocol (``name|``; the registration is not confirmed). ``False``:
        require the control channel.
    :param keepalive: seconds of silence before a keepalive is sent; ``None`` takes the relay's
        advice from its welcome (10 s in seed mode), ``0`` turns keepalives off.
    :param max_queued_bytes: bytes of received messages held before the client stops reading.

    Example::

        async with AsyncRelayClient("127.0.0.1", 8080, "alice") as alice:
            await alice.send("bob", b"hello")
            async for message in alice:
                print(message.sender, message.payload)
    """

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        *,
        token: Optional[str] = None,
        tls: bool = False,
        ca: Optional[str] = None,
        timeout: float = CONNECT_TIMEOUT_S,
        seed: Optional[bool] = None,
        keepalive: Optional[float] = None,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        validate_name(name)
        if token is not None:
            validate_token(token)
        self.host = host
        self.port = port
        self.name = name
        self._token = token
        self._tls = tls
        self._ca = ca
        self.timeout = timeout
        self._seed = seed
        self._keepalive_option = keepalive
        self._max_queued_bytes = max_queued_bytes
        #: Whether this connection speaks the seed protocol (no control channel).
        self.seed_mode = bool(seed)
        #: The relay's welcome (limits and features), or ``None`` in seed mode.
        self.welcome: Optional[Dict[str, Any]] = None
        #: Largest payload the relay accepts (from the welcome; 16 MiB in seed mode).
        self.max_message_bytes = MAX_MESSAGE_BYTES
        #: Seconds between keepalives (0: off).
        self.keepalive = KEEPALIVE_S
        #: Why the connection ended (the relay's ``bye`` reason, ``client_closed``, …), once it has.
        self.close_reason: Optional[str] = None
        self._close_message: Optional[str] = None
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._parser = FrameParser()
        self._connected = False
        self._closed = False
        self._errors: Deque[DeliveryError] = collections.deque(maxlen=MAX_KEPT_ERRORS)
        self._pending: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self._next_id = 1
        self._inbox: Deque[Message] = collections.deque()
        self._inbox_bytes = 0
        self._last_sent = 0.0
        self._tasks: List["asyncio.Task[None]"] = []
        self._said_hello = False  # the hello was written (so a silent relay may be a seed relay)
        self._heard = 0  # bytes received in answer to the hello

    # -- connecting --------------------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int, name: str, **options: Any) -> "AsyncRelayClient":
        """Creates a client with the same arguments as the constructor and connects it."""
        client = cls(host, port, name, **options)
        await client.connect()
        return client

    async def connect(self) -> "AsyncRelayClient":
        """Connects and registers the name.

        :raises RegistrationRefused: the relay refused the name (``reason`` says why).
        :raises RelayTimeout: the relay did not answer within ``timeout``.
        :raises OSError: the connection could not be made.
        """
        if self._connected:
            raise RuntimeError("The client is already connected")
        self._wake = asyncio.Event()  # inbox, room or connection state changed
        self._write_lock = asyncio.Lock()
        leftovers: List[Frame] = []
        if self._seed is not True:
            try:
                try:
                    leftovers = await self._with_deadline(self._open_control(), "register")
                except RelayTimeout:
                    if self._seed is None and self._said_hello and self._heard == 0:
                        raise _NoControl() from None  # connected, but no answer at all
                    raise
            except _NoControl:
                await self._drop_transport()
                if self._seed is False:
                    raise ConnectionClosed(
                        None, "The relay does not speak the control channel"
                    ) from None
                log.info("The relay does not answer the hello: using the seed protocol")
                self.seed_mode = True
            except BaseException:
                await self._drop_transport()
                raise
        if self.seed_mode:
            try:
                await self._with_deadline(self._open_seed(), "connect")
            except BaseException:
                await self._drop_transport()
                raise
        if self._keepalive_option is not None:
            self.keepalive = self._keepalive_option
        self._connected = True
        self._last_sent = time.monotonic()
        for frame in leftovers:
            await self._dispatch(frame)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read_loop()))
        if self.keepalive > 0:
            self._tasks.append(loop.create_task(self._keepalive_loop()))
        return self

    async def _with_deadline(self, coro: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(coro, self.timeout)
        except asyncio.TimeoutError:
            raise RelayTimeout(f"Cannot {what} {self.name!r}: no answer within {self.timeout} s")

    async def _open_seed(self) -> None:
        self._reader, self._writer = await open_stream(self.host, self.port, self._tls, self._ca)
        self._parser = FrameParser(self.max_message_bytes)
        self._writer.write(encode_register(self.name, self._token))
        await self._writer.drain()

    async def _open_control(self) -> List[Frame]:
        self._reader, self._writer = await open_stream(self.host, self.port, self._tls, self._ca)
        hello: Dict[str, Any] = {
            "op": "hello",
            "v": CONTROL_VERSION,
            "client": f"relay-py/{__version__}",
            "name": self.name,
        }
        if self._token is not None:
            hello["token"] = self._token
        self._writer.write(encode_control(hello))
        await self._writer.drain()
        self._said_hello = True
        leftovers: List[Frame] = []
        registered = False
        while not registered:
            try:
                data = await self._reader.read(READ_CHUNK_BYTES)
            except ConnectionError:
                data = b""
            if not data:
                if self._heard == 0:
                    raise _NoControl()
                raise ConnectionClosed(None, "The relay closed the connection while registering")
            self._heard += len(data)
            for frame in self._parser.feed(data):
                if registered or frame.peer != "":
                    leftovers.append(frame)
                    continue
                reply = decode_control(frame.payload)
                op = reply["op"]
                if op == "welcome":
                    self._apply_welcome(reply)
                elif op == "registered":
                    registered = True
                elif op == "refused":
                    raise RegistrationRefused(
                        self.name, str(reply.get("reason", "refused")), reply.get("message")
                    )
                elif op == "bye":
                    raise ConnectionClosed(reply.get("reason"), reply.get("message"))
                elif op == "error" and "id" not in reply:
                    raise RequestError("hello", str(reply.get("reason")), reply.get("message"))
        return leftovers

    def _apply_welcome(self, welcome: Dict[str, Any]) -> None:
        self.welcome = welcome
        limits = welcome.get("limits") or {}
        max_message = limits.get("max_message_bytes")
        if isinstance(max_message, int) and max_message > 0:
            self.max_message_bytes = max_message
            self._parser.max_message_bytes = max(max_message, MAX_MESSAGE_BYTES)
        keepalive_ms = limits.get("keepalive_ms")
        if isinstance(keepalive_ms, (int, float)) and keepalive_ms >= 0:
            self.keepalive = keepalive_ms / 1000

    async def _drop_transport(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self._parser = FrameParser(self.max_message_bytes)
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE_S)
            except (OSError, asyncio.TimeoutError):
                pass

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason, message = "connection_closed", None
        received = 0
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(READ_CHUNK_BYTES)
                if not data:
                    if self.seed_mode and received == 0:
                        message = (
                            "the relay closed the connection; in seed mode that is how it refuses "
                            f"a name ({self.name!r} taken, invalid, or owned and needing a token)"
                        )
                    break
                received += len(data)
                for frame in self._parser.feed(data):
                    await self._dispatch(frame)
        except ProtocolError as error:
            reason, message = "protocol_error", str(error)
            log.warning("Closing the relay connection: %s", error)
        except (ConnectionError, OSError) as error:
            reason, message = "connection_error", str(error)
        except asyncio.CancelledError:
            reason = "client_closed"
        finally:
            self._finish(reason, message)

    async def _dispatch(self, frame: Frame) -> None:
        if frame.peer == "" and not self.seed_mode:
            self._handle_control(decode_control(frame.payload))
            return
        if not frame.payload:
            return  # a keepalive: never a message
        self._inbox.append(Message(frame.peer, frame.payload))
        self._inbox_bytes += len(frame.payload)
        self._wake.set()
        while self._inbox_bytes > self._max_queued_bytes and not self._closed:
            self._wake.clear()
            await self._wake.wait()  # backpressure: read no more until the program catches up

    def _handle_control(self, reply: Dict[str, Any]) -> None:
        op = reply["op"]
        request_id = reply.get("id")
        if request_id is not None:
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(reply)
        elif op == "error":
            self._errors.append(
                DeliveryError(
                    str(reply.get("reason")),
                    reply.get("dest"),
                    int(reply.get("count", 1)),
                    reply.get("size"),
                    reply.get("limit"),
                )
            )
            log.debug("Delivery error: %s", self._errors[-1])
        elif op == "bye":
            self.close_reason = str(reply.get("reason"))
            self._close_message = reply.get("message")

    def _finish(self, reason: str, message: Optional[str]) -> None:
        if self.close_reason is None:
            self.close_reason, self._close_message = reason, message
        self._closed = True
        self._wake.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._closed_error())
        self._pending.clear()

    def _closed_error(self) -> ConnectionClosed:
        if self.close_reason in ("client_closed", "connection_closed", None):
            return ConnectionClosed(None, self._close_message)
        return ConnectionClosed(self.close_reason, self._close_message)

    # -- public operations -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed

    async def send(self, dest: str, data: _BytesLike, *, confirm: bool = False) -> None:
        """Sends ``data`` to the client named ``dest``.

        :param confirm: wait for the relay to route it (a ping barrier) and raise
            :class:`DeliveryError` if it was dropped; needs the control channel.
        :raises ValueError: ``dest`` is not a valid name, or ``data`` is above the relay's limit.
        :raises ConnectionClosed: the connection has ended.
        """
        if len(data) > self.max_message_bytes:
            raise ValueError(
                f"The message is {len(data)} bytes; the relay accepts at most "
                f"{self.max_message_bytes}"
            )
        if not data:
            raise ValueError("An empty message is a keepalive and is never delivered")
        await self._write(encode_frame(dest, data))
        if confirm:
            pong = await self.ping()
            if pong.dropped:
                for error in reversed(self._errors):
                    if error.dest == dest:
                        raise error
                raise DeliveryError("unknown_destination", dest, pong.dropped)

    async def _write(self, data: bytes) -> None:
        if self._closed or self._writer is None or not self._connected:
            if self.close_reason is None:
                raise RuntimeError("The client is not connected")
            raise self._closed_error()
        async with self._write_lock:
            try:
                self._writer.write(data)
                self._last_sent = time.monotonic()
                await self._writer.drain()
            except (ConnectionError, OSError) as error:
                self._finish("connection_error", str(error))
                raise self._closed_error() from error

    async def recv(self, timeout: Optional[float] = None) -> Message:
        """Returns the next message, waiting up to ``timeout`` seconds (``None``: no limit).

        :raises RelayTimeout: no message came in time.
        :raises ConnectionClosed: the connection has ended and every message was read.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            if self._closed:
                raise self._closed_error()
            self._wake.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RelayTimeout(f"No message within {timeout} s")
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                pass
        message = self._inbox.popleft()
        self._inbox_bytes -= len(message.payload)
        self._wake.set()  # room for the reader
        return message

    def _unget(self, message: Message) -> None:
        self._inbox.appendleft(message)
        self._inbox_bytes += len(message.payload)

    def __aiter__(self) -> "AsyncRelayClient":
        return self

    async def __anext__(self) -> Message:
        """The next message; iteration ends when the connection does (see ``close_reason``)."""
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def delivery_errors(self) -> List[DeliveryError]:
        """Returns and forgets the delivery errors the relay reported since the last call."""
        errors = list(self._errors)
        self._errors.clear()
        return errors

    async def request(self, request: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
        """Sends a control request (an ``id`` is added) and returns the relay's reply.

        :raises SeedModeError: the connection speaks the seed protocol.
        :raises RequestError: the relay answered with an ``error``.
        :raises RelayTimeout: no reply within ``timeout`` (default: the client's ``timeout``).
        """
        if self.seed_mode:
            raise SeedModeError(
                f"{request.get('op')!r} needs the control channel; this relay speaks only the "
                "seed protocol"
            )
        request_id = self._next_id
        self._next_id += 1
        future: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._write(encode_control({**request, "id": request_id}))
            wait = self.timeout if timeout is None else timeout
            try:
                reply = await asyncio.wait_for(asyncio.shield(future), wait)
            except asyncio.TimeoutError:
                raise RelayTimeout(f"No answer to {request.get('op')!r} within {wait} s") from None
        finally:
            self._pending.pop(request_id, None)
        if reply["op"] == "error":
            raise RequestError(str(request.get("op")), str(reply.get("reason")), reply.get("message"))
        return reply

    async def ping(self, timeout: Optional[float] = None) -> Pong:
        """Asks the relay for a pong: everything sent before it has then been routed.

        :returns: the round-trip time, the relay's clock and how many of this client's messages
            were dropped since the previous pong.
        """
        started = time.monotonic()
        reply = await self.request({"op": "ping"}, timeout)
        return Pong(time.monotonic() - started, int(reply.get("time", 0)), int(reply.get("dropped", 0)))

    async def who(self, prefix: str = "", timeout: Optional[float] = None) -> List[str]:
        """Returns the names online that start with ``prefix``, sorted (every page of them).

        :raises RequestError: listing is off on this relay (reason ``listing_disabled``).
        """
        names: List[str] = []
        request: Dict[str, Any] = {"op": "who", "limit": WHO_PAGE_LIMIT}
        if prefix:
            request["prefix"] = prefix
        while True:
            reply = await self.request(request, timeout)
            page = [str(name) for name in reply.get("names", [])]
            names.extend(page)
            if not reply.get("more") or not page:
                return names
            request["after"] = page[-1]

    async def _keepalive_loop(self) -> None:
        keepalive = encode_header(self.name, 0)
        try:
            while not self._closed:
                left = self._last_sent + self.keepalive - time.monotonic()
                if left > 0:
                    await asyncio.sleep(left)
                    continue
                await self._write(keepalive)
        except (ConnectionClosed, asyncio.CancelledError):
            pass

    async def close(self) -> None:
        """Lets queued bytes leave (up to 2 s), then closes the connection. Safe to call twice."""
        if not self._connected:
            await self._drop_transport()
            return
        self._connected = False
        if self.close_reason is None:
            self.close_reason = "client_closed"
        for task in self._tasks[1:]:
            task.cancel()
        writer = self._writer
        if writer is not None and not self._closed:
            try:
                async with self._write_lock:
                    await asyncio.wait_for(writer.drain(), CLOSE_GRACE_S)
            except (OSError, asyncio.TimeoutError):
                pass
        await self._drop_transport()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._finish("client_closed", None)

    async def __aenter__(self) -> "AsyncRelayClient":
        if not self._connected and not self._closed:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
