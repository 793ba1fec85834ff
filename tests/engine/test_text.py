"""TextStream: valid UTF-8 at every event, stop strings never half-emitted, over every chunking."""

from __future__ import annotations

import itertools
import random

import pytest

from clawlan.engine.text import TextStream


def run(chunks: list[bytes], stop: list[str]) -> tuple[list[str], bool]:
    ts = TextStream(stop)
    out = [ts.feed(c) for c in chunks]
    out.append(ts.flush())
    return out, ts.stopped


def expected(text: str, stop: list[str]) -> str:
    hits = [text.find(s) for s in stop if s and s in text]
    return text[: min(hits)] if hits else text


def all_splits(data: bytes, max_parts: int = 4):
    """Every way to cut ``data`` into at most ``max_parts`` pieces."""
    n = len(data)
    for k in range(max_parts):
        for cuts in itertools.combinations(range(1, n), k):
            bounds = (0, *cuts, n)
            yield [data[a:b] for a, b in itertools.pairwise(bounds)]


def random_splits(data: bytes, rng: random.Random, count: int):
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(len(data) - 1, 12))))
        bounds = (0, *cuts, len(data))
        yield [data[a:b] for a, b in itertools.pairwise(bounds)]


CASES = [
    ("Hello world. END here", ["END"]),
    ("abcabd and more", ["abd"]),  # a partial match ("ab") that fails, then one that succeeds
    ("x </s", ["</s>"]),  # a partial match still held at the end is plain text
    ("no stop at all", ["zzz"]),
    ("first STOP then END", ["END", "STOP"]),  # the earliest occurrence wins
    ("aaab", ["aab"]),  # overlapping self-similar prefix
    ("他说：你好。然后走了", ["。"]),  # a stop string that is one multi-byte character
    ("答案是四十二。\n\n用户：", ["用户："]),
    ("emoji 🙂 stop🙂 here", ["p🙂"]),
]


@pytest.mark.parametrize(("text", "stop"), CASES)
def test_stop_strings_never_half_emitted_over_every_chunking(text, stop):
    data = text.encode()
    want = expected(text, stop)
    splits = list(all_splits(data, 3)) if len(data) <= 40 else []
    splits += list(random_splits(data, random.Random(len(data)), 300))
    splits.append([bytes([b]) for b in data])  # one byte per token
    for chunks in splits:
        out, stopped = run(chunks, stop)
        got = ""
        for piece in out:
            assert isinstance(piece, str) and "\ufffd" not in piece
            got += piece
            # Anything emitted must be final: never a prefix of a stop string later cut.
            assert want.startswith(got), (chunks, out)
        assert got == want, (chunks, out)
        assert stopped == (want != text)


def test_text_after_a_stop_is_dropped():
    ts = TextStream(["STOP"])
    assert ts.feed(b"abc ST") == "abc "
    assert ts.feed(b"OP tail") == ""
    assert ts.stopped
    assert ts.feed(b"more") == ""
    assert ts.flush() == ""


def test_partial_match_is_held_then_released():
    ts = TextStream(["</answer>"])
    assert ts.feed(b"x </ans") == "x "
    assert ts.feed(b"wers") == "</answers"
    assert not ts.stopped


def test_utf8_split_across_tokens():
    text = "中文字符：你好，世界！𝄞 ok"
    data = text.encode()
    for chunks in random_splits(data, random.Random(7), 500):
        out, _ = run(chunks, [])
        assert all("\ufffd" not in o for o in out)
        assert "".join(out) == text
    # One byte at a time: nothing is emitted until a character is complete.
    ts = TextStream([])
    b = "你".encode()
    assert ts.feed(b[:1]) == "" and ts.feed(b[1:2]) == ""
    assert ts.feed(b[2:]) == "你"


def test_invalid_bytes_become_replacement_not_errors():
    ts = TextStream([])
    assert ts.feed(b"ok \xff") == "ok \ufffd"
    # A truncated character at the very end is flushed as a replacement character.
    ts = TextStream([])
    assert ts.feed("你".encode()[:2]) == ""
    assert ts.flush() == "\ufffd"


def test_no_stop_strings_emits_everything_at_once():
    ts = TextStream(["", ""])  # empty stop strings are ignored
    assert ts.feed(b"hello") == "hello"
    assert ts.flush() == ""
