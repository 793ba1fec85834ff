"""Token log probabilities (chat and legacy shapes), and the fields refused rather than ignored,
spoken to by the official ``openai`` client against the real model."""

from __future__ import annotations

import openai
import pytest

MESSAGES = [{"role": "user", "content": "Name three colours of the rainbow."}]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)


def check_greedy_entry(logprob: float, tops: list[float]) -> None:
    """Under greedy the chosen token is the most likely one; the top list is sorted, all <= 0."""
    assert tops == sorted(tops, reverse=True)
    assert all(v <= 0.0 for v in tops) and logprob <= 0.0
    assert logprob == pytest.approx(tops[0], abs=1e-6)


def test_chat_logprobs(backend):
    r = client(backend).chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=12, temperature=0, logprobs=True, top_logprobs=5
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for e in content:
        assert len(e.top_logprobs) == 5
        check_greedy_entry(e.logprob, [t.logprob for t in e.top_logprobs])
        assert e.token == e.top_logprobs[0].token
        assert bytes(e.bytes).decode("utf-8", errors="replace") == e.token
    assert bytes(b for e in content for b in e.bytes).decode() == r.choices[0].message.content
    # Asked for none: none given (and the greedy fast path is kept).
    r = client(backend).chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, temperature=0)
    assert r.choices[0].logprobs is None


def test_chat_logprobs_without_top(backend):
    r = client(backend).chat.completions.create(model="m", messages=MESSAGES, max_tokens=6, temperature=0.8, seed=3, logprobs=True)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(e.top_logprobs == [] and e.logprob <= 0.0 for e in content)


def test_chat_logprobs_streamed(backend):
    stream = client(backend).chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=12, temperature=0, logprobs=True, top_logprobs=2,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    assert len(entries) == chunks[-1].usage.completion_tokens
    for e in entries:
        check_greedy_entry(e.logprob, [t.logprob for t in e.top_logprobs])
    assert bytes(b for e in entries for b in e.bytes).decode() == text


def test_completion_logprobs(backend):
    r = client(backend).completions.create(
        model="m", prompt="The colours of the rainbow are", max_tokens=10, temperature=0, logprobs=3,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 10
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(10)]
    for value, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3
        check_greedy_entry(value, sorted(top.values(), reverse=True))
    # Streamed: the same tokens, offsets running on across chunks.
    stream = client(backend).completions.create(
        model="m", prompt="The colours of the rainbow are", max_tokens=10, temperature=0, logprobs=1,
        extra_body={"ignore_eos": True}, stream=True,
    )  # fmt: skip
    chunks = list(stream)
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    offsets = [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert "".join(tokens) == "".join(c.choices[0].text for c in chunks)
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))] and len(tokens) == 10


@pytest.mark.parametrize(
    ("kind", "extra", "field"),
    [
        ("completions", {"echo": True}, "echo"),
        ("completions", {"suffix": "end"}, "suffix"),
        ("completions", {"logprobs": 6}, "logprobs"),
        ("completions", {"n": 2}, "n"),
        ("chat", {"top_logprobs": 2}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_unsupported_fields_are_400(backend, kind, extra, field):
    c = client(backend)
    with pytest.raises(openai.BadRequestError) as info:
        if kind == "chat":
            c.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2, extra_body=extra)
        else:
            c.completions.create(model="m", prompt="Hi", max_tokens=2, extra_body=extra)
    assert info.value.body["param"] == field, info.value.body
    assert field in info.value.body["message"]
