"""Tool-call parsing: each family's syntax, OpenAI's delta shape, and every chunking."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from clawlan.tools.parser import ToolCallStreamParser, new_call_id, parse_tool_calls

MARKERS = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "```tool_call", "<|python_tag|>", "[ARGS]")

# (family, generated text, expected content, expected [(name, arguments)])
CASES: list[tuple[str, str, str | None, list[tuple[str, Any]]]] = [
    (
        "hermes",
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        "Let me check.",
        [("get_weather", {"city": "Paris"}), ("get_time", {})],
    ),
    (
        "qwen",
        '<tool_call>{"name":"f","arguments":"{\\"a\\": [1, \\"}\\"]}"}</tool_call>',
        None,
        [("f", {"a": [1, "}"]})],
    ),
    (
        "chatml",
        '<tool_call>\n{"arguments": {"z": 1}, "name": "late"}\n</tool_call>',
        None,
        [("late", {"z": 1})],
    ),
    ("hermes", "Use a <tool_call> tag, or a < b.", "Use a <tool_call> tag, or a < b.", []),
    ("hermes", "Plain answer.\n", "Plain answer.\n", []),
    (
        "llama3",
        '{"name": "f", "parameters": {"x": [1, 2]}}; {"name": "g", "parameters": {}}',
        None,
        [("f", {"x": [1, 2]}), ("g", {})],
    ),
    ("llama3", '<|python_tag|>{"name": "f", "parameters": {"q": "a;b"}}', None, [("f", {"q": "a;b"})]),
    ("llama3", '{"answer": 42} is the JSON.', '{"answer": 42} is the JSON.', []),
    ("llama3", "The answer is {x}.", "The answer is {x}.", []),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "f", "arguments": {"a": "]}"}}, {"name": "g", "arguments": {"b": null}, "id": "abc123xyz"}]',
        None,
        [("f", {"a": "]}"}), ("g", {"b": None})],
    ),
    (
        "mistral",
        '[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[CALL_ID]a1b2c3d4e[ARGS]{}',
        None,
        [("f", {"a": 1}), ("g", {})],
    ),
    (
        "gemma",
        'Sure.\n```tool_call\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n'
        '```tool_call\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```\n',
        "Sure.",
        [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})],
    ),
    ("gemma", "```python\nprint('```')\n```\n", "```python\nprint('```')\n```\n", []),
    ("gemma", "```tool_call\nnot json\n```", "```tool_call\nnot json\n```", []),
    (
        "hermes",
        '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call><tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
        '<tool_call>{"name": "f", "arguments": {"a": 2}}</tool_call>',
        None,
        [("f", {"a": 1}), ("f", {"a": 2})],
    ),
    (
        "gemma",
        '日本語の答え。 ```tool_call\n{"name": "f", "arguments": {"s": "é"}}\n```',
        "日本語の答え。",
        [("f", {"s": "é"})],
    ),
]


def counter() -> Any:
    n = itertools.count()
    return lambda: f"call_{next(n)}"


def stream(family: str, chunks: list[str]) -> tuple[list[dict], ToolCallStreamParser]:
    parser = ToolCallStreamParser(family, id_factory=counter())
    deltas: list[dict] = []
    for chunk in chunks:
        deltas += parser.feed(chunk)
    deltas += parser.finish()
    return deltas, parser


def assemble(deltas: list[dict]) -> tuple[str | None, list[tuple[str, str, str]]]:
    """Rebuild content and calls from deltas the way an OpenAI client does, checking the shape."""
    content = ""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        assert set(delta) in ({"content"}, {"tool_calls"}), delta
        if "content" in delta:
            assert isinstance(delta["content"], str) and delta["content"]
            content += delta["content"]
            continue
        (tc,) = delta["tool_calls"]
        i = tc["index"]
        if "id" in tc:
            # First delta of a call: OpenAI's exact keys, arguments "".
            assert set(tc) == {"index", "id", "type", "function"} and tc["type"] == "function"
            assert set(tc["function"]) == {"name", "arguments"} and tc["function"]["arguments"] == ""
            assert i == len(calls) and re.fullmatch(r"call_\w+", tc["id"])
            calls[i] = {"id": tc["id"], "name": tc["function"]["name"], "arguments": ""}
        else:
            assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
            assert i == len(calls) - 1, "fragments only extend the latest call"
            calls[i]["arguments"] += tc["function"]["arguments"]
    return content or None, [(c["id"], c["name"], c["arguments"]) for c in calls.values()]


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_whole_text(family: str, text: str, content: str | None, calls: list) -> None:
    parsed = parse_tool_calls(text, family)
    assert parsed.content == content
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == calls
    for call in parsed.tool_calls:
        assert call.to_openai()["type"] == "function" and call.id.startswith("call_")
    if calls:
        assert not any(m in (parsed.content or "") for m in MARKERS), "call syntax leaked"


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_every_chunking_gives_the_same_result(
    family: str, text: str, content: str | None, calls: list
) -> None:
    whole_deltas, whole = stream(family, [text])
    expected = assemble(whole_deltas)
    assert expected[0] == whole.content or (expected[0] or "").strip() == (whole.content or "").strip()
    assert [(n, a) for _, n, a in expected[1]] == [(c.name, c.arguments) for c in whole.tool_calls]
    # One character at a time, then every split into three pieces.
    assert assemble(stream(family, list(text))[0]) == expected
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1, 3):
            got = assemble(stream(family, [text[:i], text[i:j], text[j:]])[0])
            assert got == expected, (text[:i], text[i:j])


def test_arguments_stream_before_the_call_ends_and_syntax_is_held_back() -> None:
    parser = ToolCallStreamParser("hermes", id_factory=counter())
    assert parser.feed("Checking") == [{"content": "Checking"}]
    assert parser.feed(" now <tool") == [{"content": " now"}]  # "<tool" might open a call
    assert parser.feed('_call>\n{"name": "get_weather", ') == []  # not yet sure of the call
    first = parser.feed('"arguments": {"ci')
    assert first == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]},
    ]
    assert parser.feed('ty": "Paris"}}\n</tool_') == [
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}
    ]
    assert parser.feed("call>") == []
    assert parser.finish() == []
    assert parser.content == "Checking now"


def test_a_repeated_call_is_dropped_and_asks_to_stop() -> None:
    one = '```tool_call\n{"name": "f", "arguments": {"a": 1, "b": 2}}\n```\n'
    same = '```tool_call\n{"name": "f", "arguments": {"b": 2, "a": 1}}\n```\n'
    other = '```tool_call\n{"name": "g", "arguments": {}}\n```\n'
    parser = ToolCallStreamParser("gemma", id_factory=counter())
    deltas = parser.feed(one)
    assert not parser.stop_requested and len(deltas) == 2
    deltas = parser.feed(other)
    # A later call is sent whole once it ends: header, then its arguments.
    assert deltas == [
        {
            "tool_calls": [
                {"index": 1, "id": "call_1", "type": "function", "function": {"name": "g", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
    ]
    assert parser.feed(same) == [] and parser.stop_requested
    assert parser.feed(one[:30]) == [] and parser.finish() == []  # a cut-off repeat is dropped too
    assert [c.name for c in parser.tool_calls] == ["f", "g"]


def test_truncated_call_keeps_what_streamed_and_reports_it() -> None:
    parsed = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": 1', "hermes")
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("f", '{"a": 1')]
    assert parsed.errors and parsed.content is None
    parsed = parse_tool_calls('Hi <tool_call>{"name": "f", "argu', "hermes")
    assert parsed.tool_calls == [] and parsed.content == "Hi" and parsed.errors


def test_ids_are_unique_and_openai_shaped() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


def test_unknown_family_and_feed_after_finish() -> None:
    with pytest.raises(ValueError):
        ToolCallStreamParser("nope")
    parser = ToolCallStreamParser("gemma")
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")
