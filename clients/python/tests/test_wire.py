"""The codec from byte arrays: split at every position, several frames per read, hostile input."""

from __future__ import annotations

import doctest
import json
import unittest

from relay_client import wire
from relay_client.errors import ProtocolError
from relay_client.wire import Frame, FrameParser, encode_control, encode_frame, encode_register

STREAM_FRAMES = [
    Frame("bob", b"hello"),
    Frame("alice", b"a|b||c|"),
    Frame("", json.dumps({"op": "pong", "id": 1}).encode()),
    Frame("bin", bytes(range(256))),
    Frame("carol", b""),
    Frame("d\u00e9j\u00e0", "caf\u00e9".encode()),
    Frame("x" * 255, b"|" * 10),
]
STREAM = b"".join(encode_frame(f.peer, f.payload) for f in STREAM_FRAMES)


def load_tests(loader, tests, ignore):  # noqa: ANN001, ANN201
    """Runs the module's doctests too."""
    tests.addTests(doctest.DocTestSuite(wire))
    return tests


class EncodeTest(unittest.TestCase):
    def test_encodes_frames_registrations_and_control_requests(self) -> None:
        self.assertEqual(encode_frame("bob", b"hello"), b"bob|5|hello")
        self.assertEqual(encode_frame("", b"{}"), b"|2|{}")
        self.assertEqual(encode_register("alice"), b"alice|")
        self.assertEqual(encode_register("lab", "s3cret"), b"lab:s3cret|")
        self.assertEqual(encode_control({"op": "ping", "id": 1}), b'|20|{"op":"ping","id":1}')

    def test_refuses_bad_names_and_payloads(self) -> None:
        with self.assertRaises(ValueError):
            wire.validate_name("")
        for bad in ["a|b", "a:b", "tab\there", "x" * 256, "\x7f"]:
            with self.subTest(name=bad), self.assertRaises(ValueError):
                encode_frame(bad, b"x")
        with self.assertRaises(TypeError):
            encode_frame("bob", "text")  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            encode_register("lab", "has space")


class ParserTest(unittest.TestCase):
    def test_parses_a_stream_split_at_every_byte(self) -> None:
        for cut in range(len(STREAM) + 1):
            parser = FrameParser()
            got = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
            self.assertEqual(got, STREAM_FRAMES, f"split at {cut}")
            self.assertFalse(parser.mid_frame)

    def test_parses_a_stream_fed_one_byte_at_a_time(self) -> None:
        parser = FrameParser()
        got = []
        for i in range(len(STREAM)):
            got += parser.feed(STREAM[i : i + 1])
        self.assertEqual(got, STREAM_FRAMES)

    def test_parses_every_pair_of_cuts_of_two_frames(self) -> None:
        data = b"ab|3|x|yc|2||||1|z"
        expected = [Frame("ab", b"x|y"), Frame("c", b"||"), Frame("", b"z")]
        for i in range(len(data) + 1):
            for j in range(i, len(data) + 1):
                parser = FrameParser()
                got = parser.feed(data[:i]) + parser.feed(data[i:j]) + parser.feed(data[j:])
                self.assertEqual(got, expected, f"cuts {i}, {j}")

    def test_keeps_a_large_payload_whole_across_many_reads(self) -> None:
        payload = bytes(range(256)) * 4096  # 1 MiB
        data = encode_frame("big", payload) + b"next|1|!"
        parser = FrameParser()
        got = []
        for at in range(0, len(data), 65521):
            got += parser.feed(data[at : at + 65521])
        self.assertEqual(got, [Frame("big", payload), Frame("next", b"!")])

    def test_refuses_hostile_headers_before_buffering_them(self) -> None:
        cases = {
            "name over 255 bytes": b"n" * 256,
            "length with a letter": b"bob|1x",
            "length with a sign": b"bob|-1|",
            "empty length": b"bob||",
            "more than 20 digits": b"bob|" + b"0" * 21,
            "length above the limit": b"bob|1025|",
            "name not UTF-8": b"\xff|1|x",
        }
        for what, data in cases.items():
            with self.subTest(what), self.assertRaises(ProtocolError):
                parser = FrameParser(max_message_bytes=1024)
                for i in range(len(data)):  # byte by byte: refused as soon as it is wrong
                    parser.feed(data[i : i + 1])

    def test_accepts_a_length_at_the_limit_with_leading_zeros(self) -> None:
        parser = FrameParser(max_message_bytes=4)
        self.assertEqual(parser.feed(b"bob|0004|abcd"), [Frame("bob", b"abcd")])


if __name__ == "__main__":
    unittest.main()
