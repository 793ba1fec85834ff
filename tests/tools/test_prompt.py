"""Tools in the prompt: what the model is told, and a round trip through the parser."""

from __future__ import annotations

import json

import pytest

from clawlan.errors import InvalidRequest
from clawlan.tools.grammar import FAMILIES, tool_call_grammar
from clawlan.tools.parser import parse_tool_calls
from clawlan.tools.prompt import (
    content_text,
    prepare_messages,
    render_tools_system_text,
    tool_calls_to_text,
    tool_result_role,
    tool_result_to_text,
)

from .gbnf_regex import accepts
from .openclaw_tools import TOOLS

CALLS = [
    {"id": "abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "abd", "type": "function", "function": {"name": "process", "arguments": '{"action": "list"}'}},
]

# OpenClaw's second turn: system, a string user message, an array one, the
# assistant's calls (ids rewritten to plain alphanumerics), results, a user turn.
MESSAGES = [
    {"role": "system", "content": "You are a helpful agent." * 10},
    {"role": "user", "content": "hi"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "weather in Paris?"}, {"type": "text", "text": "and jobs"}],
    },
    {"role": "assistant", "content": "", "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "abc", "content": "sunny"},
    {"role": "tool", "tool_call_id": "abd", "content": [{"type": "text", "text": "no jobs"}]},
    {"role": "user", "content": "thanks"},
]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rendered_calls_parse_back_and_match_the_grammar(family: str) -> None:
    text = tool_calls_to_text(CALLS, family)
    parsed = parse_tool_calls(text, family)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("process", {"action": "list"}),
    ]
    assert parsed.content is None
    # What we replay is a string the grammar would have let the model write.
    tools = [t for t in TOOLS if t["function"]["name"] in ("get_weather", "process")]
    assert accepts(tool_call_grammar(tools, family), text)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prepare_messages_flattens_tool_turns(family: str) -> None:
    out = prepare_messages(MESSAGES, family, tools=TOOLS, tool_choice="auto")
    roles = [m["role"] for m in out]
    result_role = tool_result_role(family)
    assert roles == ["system", "user", "user", "assistant", result_role] + (
        [result_role] if result_role != "user" else []
    ) + ["user"]
    assert all(isinstance(m["content"], str) or m["role"] == "user" for m in out)
    assert all("tool_calls" not in m for m in out)
    system = out[0]["content"]
    assert system.startswith("You are a helpful agent.")  # the caller's prompt stays a cacheable prefix
    for tool in TOOLS:
        assert json.dumps(tool["function"]["name"]) in system
    assert "sunny" in out[4]["content"] and "no jobs" in "".join(m["content"] for m in out[4:6])
    assert MESSAGES[2]["content"][0]["type"] == "text"  # input untouched


def test_choice_instructions_come_last_and_none_adds_no_tools() -> None:
    auto = render_tools_system_text(TOOLS, "gemma")
    required = render_tools_system_text(TOOLS, "gemma", tool_choice="required")
    named = render_tools_system_text(
        TOOLS, "gemma", tool_choice={"type": "function", "function": {"name": "read"}}
    )
    single = render_tools_system_text(TOOLS, "gemma", parallel_tool_calls=False)
    common = auto[: auto.rindex("\n\n")]
    for text in (required, named, single):
        assert text.startswith(common)
    assert "must call at least one" in required and "'read'" in named and "at most one" in single
    assert prepare_messages([{"role": "user", "content": "x"}], "gemma", tools=TOOLS, tool_choice="none") == [
        {"role": "user", "content": "x"}
    ]
    assert prepare_messages([{"role": "user", "content": "x"}], "gemma", tools=TOOLS)[0]["role"] == "system"
    assert render_tools_system_text([], "gemma") == ""


def test_results_and_helpers() -> None:
    assert tool_result_to_text({"content": "42"}, "hermes") == "<tool_response>\n42\n</tool_response>"
    assert "```tool_output\n42\n```" in tool_result_to_text({"content": "42"}, "gemma", name="calc")
    assert json.loads(
        tool_result_to_text({"content": "42"}, "mistral")[len("[TOOL_RESULTS]") : -len("[/TOOL_RESULTS]")]
    ) == {"content": "42"}
    assert tool_result_to_text({"content": "42"}, "llama3") == "42"
    assert content_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "a\nb"
    # A non-text part is refused, as the chat template refuses it, rather than silently dropped.
    with pytest.raises(InvalidRequest, match="image_url"):
        content_text([{"type": "text", "text": "a"}, {"type": "image_url"}])
    assert content_text(None) == ""
    with pytest.raises(InvalidRequest):
        tool_calls_to_text(CALLS, "vicuna")
