"""plan_request: validation, the grammar per tool_choice, and the lazy trigger in llama.cpp."""

from __future__ import annotations

import ctypes
import re

import pytest

from clawlan.errors import InvalidRequest
from clawlan.tools.grammar import FAMILIES, UnsupportedSchemaFeature, tool_call_triggers
from clawlan.tools.plan import ToolPlan, plan_request

from .gbnf_regex import accepts
from .openclaw_tools import TOOLS

BAD_TOOL = {"type": "function", "function": {"name": "odd", "parameters": {"type": "object", "not": {}}}}


def test_unknown_family_only_matters_when_tools_may_be_called() -> None:
    plan = plan_request({"response_format": {"type": "json_object"}}, "phi3")
    assert plan.grammar and not plan.parse_tool_calls
    assert not plan_request({"tools": TOOLS, "tool_choice": "none"}, "phi3").parse_tool_calls
    with pytest.raises(InvalidRequest, match="phi3"):
        plan_request({"tools": TOOLS}, "phi3")


def test_no_tools_or_none_means_no_parsing() -> None:
    plan = plan_request({"messages": []}, "gemma")
    assert (plan.tool_choice, plan.grammar, plan.parse_tool_calls, plan.tools) == ("none", None, False, [])
    assert plan.new_parser() is None
    plan = plan_request(
        {"tools": TOOLS, "tool_choice": "none", "response_format": {"type": "json_object"}}, "gemma"
    )
    assert plan.tools == [] and not plan.parse_tool_calls and plan.grammar and not plan.grammar_triggers


def test_auto_is_a_lazy_grammar_and_falls_back_on_unsupported_schemas() -> None:
    plan = plan_request({"tools": TOOLS}, "hermes")
    assert plan.tool_choice == "auto" and plan.parse_tool_calls and plan.grammar
    assert plan.grammar_triggers == tool_call_triggers("hermes")
    assert plan.new_parser() is not None
    plan = plan_request({"tools": [*TOOLS, BAD_TOOL], "tool_choice": "auto"}, "hermes")
    assert plan.grammar is None and plan.parse_tool_calls and "'not'" in plan.warnings[0]
    plan = plan_request({"tools": TOOLS, "response_format": {"type": "json_object"}}, "hermes")
    assert not plan.parse_tool_calls and plan.grammar and not plan.grammar_triggers


def test_required_and_named() -> None:
    plan = plan_request({"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}, "gemma")
    one = '```tool_call\n{"name": "process", "arguments": {"action": "list"}}\n```'
    assert plan.grammar and not plan.grammar_triggers and accepts(plan.grammar, one)
    assert not accepts(plan.grammar, one + "\n" + one)  # parallel_tool_calls: false
    named = plan_request(
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "read"}}}, "gemma"
    )
    assert named.tool_choice == {"type": "function", "function": {"name": "read"}}
    flat = plan_request({"tools": TOOLS, "tool_choice": {"type": "function", "name": "read"}}, "gemma")
    assert flat.tool_choice == named.tool_choice and flat.grammar == named.grammar
    assert not accepts(named.grammar or "", one)
    with pytest.raises(UnsupportedSchemaFeature, match="tool 'odd'.*'not'"):
        plan_request({"tools": [BAD_TOOL], "tool_choice": "required"}, "gemma")


def test_finish_reason_and_prompt() -> None:
    plan = plan_request({"tools": TOOLS}, "gemma")
    parser = plan.new_parser()
    assert parser is not None
    parser.feed('```tool_call\n{"name": "read", "arguments": {"path": "a"}}\n```')
    parser.finish()
    assert ToolPlan.finish_reason(parser, "stop") == "tool_calls"
    assert ToolPlan.finish_reason(None, "length") == "length"
    msgs = plan.prompt_messages([{"role": "user", "content": "hi"}])
    assert msgs[0]["role"] == "system" and "```tool_call" in msgs[0]["content"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": {"a": 1}}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
        ({"tools": [TOOLS[0], TOOLS[0]]}, "tools"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_request(body, "gemma")
    assert info.value.status_code == 400 and info.value.param == param


def test_trigger_patterns_find_the_opener() -> None:
    samples = {
        "hermes": "I'll look. <tool_call>",
        "gemma": "Sure.\n```tool_call",
        "mistral": "[TOOL_CALLS]",
        "llama3": ' {"name"',
    }
    for family in FAMILIES:
        text = samples[FAMILIES[family]]
        assert any(re.fullmatch(p, text + "\n{") for p in tool_call_triggers(family)), family
        assert not any(re.fullmatch(p, "A plain answer.") for p in tool_call_triggers(family)), family


def test_lazy_grammar_in_llama_cpp_constrains_only_after_the_trigger() -> None:
    from .llama_helper import llama_cpp, vocab_model

    vocab = llama_cpp.llama_model_get_vocab(vocab_model())
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    plan = plan_request({"tools": [t for t in TOOLS if t["function"]["name"] == "get_weather"]}, "gemma")
    patterns = (ctypes.c_char_p * len(plan.grammar_triggers))(*[p.encode() for p in plan.grammar_triggers])
    sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        vocab, (plan.grammar or "").encode(), b"root", patterns, len(patterns), None, 0
    )
    assert sampler

    def tokens(text: str) -> list[int]:
        raw = text.encode()
        buf = (llama_cpp.llama_token * (len(raw) + 8))()
        n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), False, True)
        return list(buf[:n])

    def n_allowed() -> int:
        data = (llama_cpp.llama_token_data * n_vocab)()
        for i in range(n_vocab):
            data[i].id = i
        arr = llama_cpp.llama_token_data_array(data, n_vocab, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr))
        return sum(1 for i in range(n_vocab) if data[i].logit != float("-inf"))

    try:
        for t in tokens("Sure, let me check. "):
            llama_cpp.llama_sampler_accept(sampler, t)
        assert n_allowed() == n_vocab  # free text before the opener
        for t in tokens("```tool_call\n"):
            llama_cpp.llama_sampler_accept(sampler, t)
        assert 0 < n_allowed() < 10  # only the call object's "{" from here on
    finally:
        llama_cpp.llama_sampler_free(sampler)
