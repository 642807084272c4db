"""RelayClient: a blocking relay connection for ordinary (threaded or not) Python programs.

It runs an :class:`~relay_client.aio.AsyncRelayClient` on a private event loop in a background
thread: that thread reads the socket, answers nothing on its own, and sends the keepalives, so the
program may block in ``input()`` for as long as it likes. Every method may be called from any
thread; sends are serialised, so frames from several threads never interleave.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from typing import Any, Coroutine, Deque, Dict, Iterator, List, Optional, TypeVar, Union

from .aio import AsyncRelayClient
from .errors import ConnectionClosed, DeliveryError
from .limits import CLOSE_GRACE_S, CONNECT_TIMEOUT_S, MAX_QUEUED_BYTES
from .messages import Message, Pong

T = TypeVar("T")
_BytesLike = Union[bytes, bytearray, memoryview]


class _Ticket:
    """Hands one received message over between the loop thread and an interruptible caller."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.taken = False


class RelayClient:
    """A named connection to a relay; connects and registers in the constructor.

    :param host: relay host name or address.
    :param port: relay TCP port.
    :param name: the name to register.
    :param token: token of a name the relay's auth file owns.
    :param tls: connect over TLS; ``ca`` is a PEM file of a private CA to trust.
    :param timeout: seconds allowed to connect and register, and the default for requests.
    :param seed: ``None``: control channel, seed protocol if the relay does not answer the hello;
        ``True``: seed protocol only (registration not confirmed); ``False``: control channel only.
    :param keepalive: seconds of silence before a keepalive (``None``: the relay's advice, 0: off).
    :raises RegistrationRefused: the relay refused the name; ``reason`` says why.
    :raises RelayTimeout: no answer within ``timeout``.
    :raises OSError: the connection could not be made.

    Example::

        with RelayClient("127.0.0.1", 8080, "alice") as alice:
            alice.send("bob", b"hello")
            for message in alice:
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
        self._async = AsyncRelayClient(
            host,
            port,
            name,
            token=token,
            tls=tls,
            ca=ca,
            timeout=timeout,
            seed=seed,
            keepalive=keepalive,
            max_queued_bytes=max_queued_bytes,
        )
        self._pushback: Deque[Message] = collections.deque()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"relay-client:{name}", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._async.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        if not self._closed:
            try:
                return asyncio.run_coroutine_threadsafe(coro, self._loop)
            except RuntimeError:  # the loop was closed by another thread meanwhile
                pass
        coro.close()
        raise ConnectionClosed(None)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self._submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ConnectionClosed(None) from None  # close() from another thread ended the call
        except BaseException:
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        self._closed = True
        if self._thread.is_alive():

            async def cancel_the_rest() -> None:
                # Calls still waiting in other threads end (as ConnectionClosed), never hang.
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            try:
                asyncio.run_coroutine_threadsafe(cancel_the_rest(), self._loop).result(CLOSE_GRACE_S)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    # -- attributes of the connection --------------------------------------------------------

    @property
    def name(self) -> str:
        """The registered name."""
        return self._async.name

    @property
    def seed_mode(self) -> bool:
        """Whether this connection speaks the seed protocol (no control channel)."""
        return self._async.seed_mode

    @property
    def welcome(self) -> Optional[Dict[str, Any]]:
        """The relay's welcome (limits, features), or ``None`` in seed mode."""
        return self._async.welcome

    @property
    def max_message_bytes(self) -> int:
        """Largest payload the relay accepts."""
        return self._async.max_message_bytes

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed or self._async.closed

    @property
    def close_reason(self) -> Optional[str]:
        """Why the connection ended, once it has (the relay's ``bye`` reason, ``client_closed``…)."""
        return self._async.close_reason

    # -- operations --------------------------------------------------------------------------

    def send(self, dest: str, data: _BytesLike, *, confirm: bool = False) -> None:
        """Sends ``data`` to ``dest``; with ``confirm``, raises :class:`DeliveryError` if dropped.

        Safe to call from several threads at once.
        """
        self._call(self._async.send(dest, bytes(data), confirm=confirm))

    def recv(self, timeout: Optional[float] = None) -> Message:
        """Returns the next message, waiting up to ``timeout`` seconds (``None``: no limit).

        An interrupt (Ctrl-C) while waiting loses no message.

        :raises RelayTimeout: no message came in time.
        :raises ConnectionClosed: the connection has ended and every message was read.
        """
        if self._pushback:
            return self._pushback.popleft()
        ticket = _Ticket()

        async def take() -> Message:
            message = await self._async.recv(timeout)
            with ticket.lock:
                if ticket.abandoned:
                    self._async._unget(message)
                    raise asyncio.CancelledError()
                ticket.taken = True
            return message

        future = self._submit(take())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ConnectionClosed(None) from None  # close() from another thread
        except BaseException:
            with ticket.lock:
                ticket.abandoned = True
                taken = ticket.taken
            if not taken:
                future.cancel()
            else:
                self._pushback.append(future.result())
            raise

    def __iter__(self) -> Iterator[Message]:
        """Yields messages until the connection ends (then see ``close_reason``)."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    def ping(self, timeout: Optional[float] = None) -> Pong:
        """Round trip to the relay; everything sent before has been routed when it returns."""
        return self._call(self._async.ping(timeout))

    def who(self, prefix: str = "", timeout: Optional[float] = None) -> List[str]:
        """Names online that start with ``prefix``, sorted."""
        return self._call(self._async.who(prefix, timeout))

    def request(self, request: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
        """Sends a raw control request and returns the reply (see the protocol's control channel)."""
        return self._call(self._async.request(request, timeout))

    def delivery_errors(self) -> List[DeliveryError]:
        """Returns and forgets the delivery errors the relay reported since the last call."""
        async def take() -> List[DeliveryError]:
            return self._async.delivery_errors()  # on the loop thread, like every other access

        return self._call(take())

    def close(self) -> None:
        """Lets queued bytes leave (up to 2 s) and closes the connection. Safe to call twice."""
        if self._closed:
            return
        try:
            self._call(self._async.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> "RelayClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_thread", None) is not None:
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:
                pass
