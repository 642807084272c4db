"""AsyncRelayClient against a real relay process: the same operations as RelayClient."""

from __future__ import annotations

import asyncio
import os
import time
import unittest

from relay_client import (
    AsyncRelayClient,
    ConnectionClosed,
    DeliveryError,
    RegistrationRefused,
    RelayTimeout,
)

from .relay_process import RelayProcess, SeedRelay

relays: dict = {}


def setUpModule() -> None:  # noqa: N802
    relays["framed"] = RelayProcess("--idle-timeout", "3s")


def tearDownModule() -> None:  # noqa: N802
    for relay in relays.values():
        relay.stop()


def client(name: str, **options) -> AsyncRelayClient:  # noqa: ANN003
    return AsyncRelayClient("127.0.0.1", relays["framed"].port, name, timeout=5, **options)


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    async def test_sends_receives_and_answers(self) -> None:
        payloads = [b"hello", b"a|b||", bytes(range(256)), os.urandom(1024 * 1024)]
        async with client("as-alice") as alice, client("as-bob") as bob:
            self.assertFalse(alice.seed_mode)
            for payload in payloads:
                await alice.send("as-bob", payload)
            for payload in payloads:
                message = await bob.recv(10)
                self.assertEqual(message, ("as-alice", payload))
            await bob.send(message.sender, b"thanks")
            self.assertEqual((await alice.recv(5)).payload, b"thanks")

    async def test_who_and_ping(self) -> None:
        async with client("as-who-1") as one, client("as-who-2"):
            self.assertEqual(await one.who("as-who-"), ["as-who-1", "as-who-2"])
            pong = await one.ping()
            self.assertEqual(pong.dropped, 0)
            self.assertGreater(pong.time_ms, 0)

    async def test_refusal_carries_the_reason(self) -> None:
        async with client("as-taken"):
            with self.assertRaises(RegistrationRefused) as caught:
                await AsyncRelayClient.open("127.0.0.1", relays["framed"].port, "as-taken")
            self.assertEqual(caught.exception.reason, "name_taken")

    async def test_offline_destination_is_reported(self) -> None:
        async with client("as-err") as alice:
            with self.assertRaises(DeliveryError) as caught:
                await alice.send("as-nobody", b"x", confirm=True)
            self.assertEqual(caught.exception.reason, "unknown_destination")

    async def test_iteration_and_keepalive_across_the_idle_timeout(self) -> None:
        async with client("as-quiet") as quiet, client("as-talker") as talker:
            await asyncio.sleep(4)  # past the 3 s idle timeout: both kept alive
            await talker.send("as-quiet", b"one")
            await talker.send("as-quiet", b"two")
            got = []
            async for message in quiet:
                got.append(message.payload)
                if len(got) == 2:
                    break
            self.assertEqual(got, [b"one", b"two"])

    async def test_recv_timeout_and_closed_errors(self) -> None:
        alice = await client("as-closing").connect()
        started = time.monotonic()
        with self.assertRaises(RelayTimeout):
            await alice.recv(0.2)
        self.assertLess(time.monotonic() - started, 2)
        await alice.close()
        await alice.close()
        with self.assertRaises(ConnectionClosed):
            await alice.recv(1)
        with self.assertRaises(ConnectionClosed):
            await alice.send("x", b"y")

    async def test_seed_fallback(self) -> None:
        seed = SeedRelay()
        try:
            async with AsyncRelayClient("127.0.0.1", seed.port, "as-old", timeout=5) as old:
                self.assertTrue(old.seed_mode)
                await old.send("as-old", b"me|me")
                self.assertEqual(await old.recv(5), ("as-old", b"me|me"))
        finally:
            seed.stop()


if __name__ == "__main__":
    unittest.main()
