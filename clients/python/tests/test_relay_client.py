"""RelayClient against a real relay process: registration, framing, keepalive, errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import tempfile
import threading
import time
import unittest
from typing import List

from relay_client import (
    ConnectionClosed,
    DeliveryError,
    RegistrationRefused,
    RelayClient,
    RelayTimeout,
    SeedModeError,
)
from relay_client.wire import encode_frame, encode_register

from .relay_process import HERE, RelayProcess, SeedRelay

FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tests", "fixtures"))

relays: dict = {}
auth_dir = tempfile.TemporaryDirectory()


def setUpModule() -> None:  # noqa: N802
    auth_file = os.path.join(auth_dir.name, "auth.json")
    with open(auth_file, "w") as f:
        json.dump({"lab": {"sha256": hashlib.sha256(b"s3cret").hexdigest()}}, f)
    relays["framed"] = RelayProcess()
    relays["idle"] = RelayProcess("--idle-timeout", "3s")
    relays["auth"] = RelayProcess("--auth-file", auth_file, "--max-message", "64KiB")
    relays["tls"] = RelayProcess(
        "--tls-cert",
        os.path.join(FIXTURES, "server.pem"),
        "--tls-key",
        os.path.join(FIXTURES, "server.key"),
    )


def tearDownModule() -> None:  # noqa: N802
    for relay in relays.values():
        relay.stop()
    auth_dir.cleanup()


def client(name: str, relay: str = "framed", **options) -> RelayClient:  # noqa: ANN003
    return RelayClient("127.0.0.1", relays[relay].port, name, timeout=5, **options)


class RegistrationTest(unittest.TestCase):
    def test_registers_through_the_control_channel(self) -> None:
        with client("reg-alice") as alice:
            self.assertFalse(alice.seed_mode)
            self.assertEqual(alice.welcome["op"], "welcome")  # type: ignore[index]
            self.assertEqual(alice.who("reg-"), ["reg-alice"])
        self.assertTrue(alice.closed)
        alice.close()  # safe twice

    def test_a_taken_name_is_refused_with_the_relays_reason(self) -> None:
        with client("reg-taken"):
            with self.assertRaises(RegistrationRefused) as caught:
                client("reg-taken")
        self.assertEqual(caught.exception.reason, "name_taken")
        self.assertIn("reg-taken", str(caught.exception))
        with client("reg-taken") as again:  # free once its holder left
            self.assertFalse(again.closed)

    def test_owned_names_need_the_right_token(self) -> None:
        with self.assertRaises(RegistrationRefused) as missing:
            client("lab", "auth")
        self.assertEqual(missing.exception.reason, "auth_required")
        with self.assertRaises(RegistrationRefused) as wrong:
            client("lab", "auth", token="wrong")
        self.assertEqual(wrong.exception.reason, "bad_token")
        with client("lab", "auth", token="s3cret") as lab:
            self.assertTrue(lab.welcome["names_owned"])  # type: ignore[index]

    def test_bad_names_are_refused_before_connecting(self) -> None:
        for bad in ["", "a|b", "a:b", "x" * 256]:
            with self.subTest(name=bad), self.assertRaises(ValueError):
                client(bad)


class MessagingTest(unittest.TestCase):
    def test_payloads_arrive_exactly_bars_binary_and_one_mebibyte(self) -> None:
        payloads = [
            b"hello",
            b"|",
            b"a|b|c||",
            b"bob|5|hello",
            bytes(range(256)),
            os.urandom(1024 * 1024),
        ]
        with client("msg-alice") as alice, client("msg-bob") as bob:
            for payload in payloads:
                alice.send("msg-bob", payload)
            for payload in payloads:
                message = bob.recv(10)
                self.assertEqual(message.sender, "msg-alice")
                self.assertEqual(message.payload, payload)
            bob.send("msg-alice", b"reply")
            self.assertEqual(alice.recv(5).payload, b"reply")

    def test_iteration_yields_messages_until_the_connection_ends(self) -> None:
        got: List[bytes] = []
        with client("it-alice") as alice:
            bob = client("it-bob")
            for i in range(3):
                alice.send("it-bob", b"m%d" % i)
            alice.ping()  # all routed
            threading.Timer(0.3, bob.close).start()
            for message in bob:
                got.append(message.payload)
        self.assertEqual(got, [b"m0", b"m1", b"m2"])

    def test_sends_from_many_threads_never_interleave(self) -> None:
        with client("th-alice") as alice, client("th-bob") as bob:

            def blast(i: int) -> None:
                for j in range(100):
                    alice.send("th-bob", (b"%d-%d|" % (i, j)) * 300)

            threads = [threading.Thread(target=blast, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seen = set()
            for _ in range(800):
                payload = bob.recv(10).payload
                unit = payload[: payload.index(b"|") + 1]
                self.assertEqual(payload, unit * 300)
                seen.add(unit)
            self.assertEqual(len(seen), 800)

    def test_close_from_another_thread_ends_a_blocked_recv(self) -> None:
        alice = client("blocked-alice")
        outcome: List[BaseException] = []

        def wait() -> None:
            try:
                alice.recv()  # no timeout
            except BaseException as error:  # noqa: BLE001
                outcome.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)
        alice.close()
        waiter.join(5)
        self.assertFalse(waiter.is_alive(), "recv() still blocked after close()")
        self.assertIsInstance(outcome[0], ConnectionClosed)

    def test_recv_times_out(self) -> None:
        with client("to-alice") as alice:
            started = time.monotonic()
            with self.assertRaises(RelayTimeout):
                alice.recv(0.2)
            self.assertLess(time.monotonic() - started, 2)


class TlsTest(unittest.TestCase):
    def test_talks_over_tls_with_a_private_ca_and_refuses_an_unknown_one(self) -> None:
        ca = os.path.join(FIXTURES, "ca.pem")
        port = relays["tls"].port
        with RelayClient("localhost", port, "tls-a", ca=ca, timeout=5) as a:
            with RelayClient("127.0.0.1", port, "tls-b", tls=True, ca=ca, timeout=5) as b:
                self.assertFalse(a.seed_mode)
                a.send("tls-b", b"secret|stuff", confirm=True)
                self.assertEqual(b.recv(5), ("tls-a", b"secret|stuff"))
        with self.assertRaises(OSError):  # ssl.SSLCertVerificationError: not the system's CAs
            RelayClient("localhost", port, "tls-c", tls=True, timeout=5)


class InterruptTest(unittest.TestCase):
    def test_ctrl_c_in_recv_loses_no_message(self) -> None:
        with client("int-a") as a, client("int-b") as b:
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))  # a real Ctrl-C
            started = time.monotonic()
            timer.start()
            with self.assertRaises(KeyboardInterrupt):
                a.recv(5)
            self.assertLess(time.monotonic() - started, 2.5, "recv() was not interrupted")
            timer.join()
            b.send("int-a", b"after", confirm=True)
            self.assertEqual(a.recv(5).payload, b"after")


class ErrorsTest(unittest.TestCase):
    def test_a_message_to_an_offline_name_raises_with_confirm(self) -> None:
        with client("err-alice") as alice:
            with self.assertRaises(DeliveryError) as caught:
                alice.send("err-nobody", b"hi", confirm=True)
            self.assertEqual(caught.exception.reason, "unknown_destination")
            self.assertEqual(caught.exception.dest, "err-nobody")
            alice.send("err-nobody", b"again")
            self.assertEqual(alice.ping().dropped, 1)
            reasons = {(e.reason, e.dest) for e in alice.delivery_errors()}
            self.assertEqual(reasons, {("unknown_destination", "err-nobody")})
            with client("err-bob") as _bob:
                alice.send("err-bob", b"fine", confirm=True)  # no error: bob is online

    def test_a_message_above_the_relays_limit_is_refused_locally(self) -> None:
        with client("big-alice", "auth") as alice:
            self.assertEqual(alice.max_message_bytes, 64 * 1024)
            with self.assertRaises(ValueError):
                alice.send("big-alice", b"x" * (64 * 1024 + 1))
            alice.send("big-alice", b"x" * (64 * 1024))
            self.assertEqual(len(alice.recv(5).payload), 64 * 1024)

    def test_send_after_close_raises_connection_closed(self) -> None:
        alice = client("closed-alice")
        alice.close()
        with self.assertRaises(ConnectionClosed):
            alice.send("anyone", b"x")


class KeepaliveTest(unittest.TestCase):
    def test_an_idle_client_stays_registered_past_the_idle_timeout(self) -> None:
        with client("ka-quiet", "idle") as quiet:
            self.assertLess(quiet.welcome["limits"]["keepalive_ms"], 3000)  # type: ignore[index]
            time.sleep(4)  # longer than the relay's 3 s idle timeout, sending nothing
            with client("ka-talker", "idle") as talker:
                talker.send("ka-quiet", b"still there?", confirm=True)
            self.assertEqual(quiet.recv(5).payload, b"still there?")

    def test_without_keepalives_the_relay_says_bye(self) -> None:
        silent = client("ka-silent", "idle", keepalive=0)
        try:
            with self.assertRaises(ConnectionClosed) as caught:
                silent.recv(8)
            self.assertEqual(caught.exception.reason, "idle_timeout")
            self.assertEqual(silent.close_reason, "idle_timeout")
        finally:
            silent.close()


class SeedModeTest(unittest.TestCase):
    def test_seed_mode_sends_and_receives_through_a_current_relay(self) -> None:
        with client("seed-a", seed=True) as a, client("seed-b") as b:
            self.assertTrue(a.seed_mode)
            self.assertIsNone(a.welcome)
            b.send("seed-a", b"x|y")
            self.assertEqual(a.recv(5), ("seed-b", b"x|y"))
            a.send("seed-b", b"back")
            self.assertEqual(b.recv(5).payload, b"back")
            with self.assertRaises(SeedModeError):
                a.who()

    def test_a_taken_name_in_seed_mode_shows_up_as_a_closed_connection(self) -> None:
        with client("seed-taken"):
            late = client("seed-taken", seed=True)
            try:
                with self.assertRaises(ConnectionClosed) as caught:
                    late.recv(5)
                self.assertIn("refuses a name", str(caught.exception))
            finally:
                late.close()

    def test_falls_back_to_the_seed_protocol_when_the_relay_ignores_the_hello(self) -> None:
        seed = SeedRelay()
        try:
            with RelayClient("127.0.0.1", seed.port, "old-a", timeout=5) as a:
                self.assertTrue(a.seed_mode)
                with RelayClient("127.0.0.1", seed.port, "old-b", seed=True) as b:
                    deadline = time.monotonic() + 5
                    while "old-b" not in seed.clients and time.monotonic() < deadline:
                        time.sleep(0.01)
                    a.send("old-b", b"hi|there")
                    self.assertEqual(b.recv(5), ("old-a", b"hi|there"))
            with self.assertRaises(ConnectionClosed):
                RelayClient("127.0.0.1", seed.port, "old-c", timeout=5, seed=False)
        finally:
            seed.stop()

    def test_falls_back_when_the_relay_keeps_silent_after_the_hello(self) -> None:
        seed = SeedRelay(silent_on_hello=True)
        try:
            started = time.monotonic()
            with RelayClient("127.0.0.1", seed.port, "mute-a", timeout=1) as a:
                self.assertTrue(a.seed_mode)
                self.assertLess(time.monotonic() - started, 3)
            with self.assertRaises(RelayTimeout):
                RelayClient("127.0.0.1", seed.port, "mute-b", timeout=0.5, seed=False)
        finally:
            seed.stop()

    def test_frames_split_anywhere_by_the_relay_arrive_whole(self) -> None:
        stream = encode_frame("peer", b"a|b") + encode_frame("p2", bytes(range(40)))
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        accepted: List[socket.socket] = []

        def serve() -> None:
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = b""
            while not head.endswith(b"|"):
                head += conn.recv(1)
            for cut in range(1, len(stream)):
                conn.sendall(stream[:cut])
                time.sleep(0.002)  # a separate read for each part, most of the time
                conn.sendall(stream[cut:])

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with RelayClient("127.0.0.1", port, "split", seed=True, keepalive=0) as c:
                for cut in range(1, len(stream)):
                    self.assertEqual(c.recv(5), ("peer", b"a|b"), f"cut {cut}")
                    self.assertEqual(c.recv(5), ("p2", bytes(range(40))), f"cut {cut}")
        finally:
            thread.join(5)
            for conn in accepted:
                conn.close()
            listener.close()

    def test_a_raw_seed_peer_and_the_client_understand_each_other(self) -> None:
        with client("raw-peer-b") as b:
            raw = socket.create_connection(("127.0.0.1", relays["framed"].port))
            try:
                raw.sendall(encode_register("raw-peer-a"))
                time.sleep(0.1)  # the seed protocol has no confirmation
                raw.sendall(b"raw-peer-b|5|he")
                time.sleep(0.05)
                raw.sendall(b"llo")
                self.assertEqual(b.recv(5), ("raw-peer-a", b"hello"))
                b.send("raw-peer-a", b"hi|x")
                raw.settimeout(5)
                self.assertEqual(raw.recv(100), b"raw-peer-b|4|hi|x")
            finally:
                raw.close()


if __name__ == "__main__":
    unittest.main()
