"""Tool calling and structured output through the real server, in OpenClaw's request shape."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import jsonschema
import openai
import pytest

_spec = importlib.util.spec_from_file_location(
    "openclaw_tools", pathlib.Path(__file__).parent.parent / "tools" / "openclaw_tools.py"
)
openclaw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(openclaw)
TOOLS, schema_of = openclaw.TOOLS, openclaw.schema_of

_SENTENCES = [
    "You are a personal assistant running inside OpenClaw on the office network.",
    "Use the tools to read and edit files in the workspace; never invent file contents.",
    "Keep answers short, cite the file you used, and ask before deleting anything.",
    "When a task needs several steps, plan them first and report progress after each one.",
    "Respect the user's time zone and language; answer in Chinese when asked in Chinese.",
    "Secrets, passwords and API keys must never be printed back to the user.",
]


def openclaw_system_prompt(chars: int = 41_000) -> str:
    """A system prompt the size of OpenClaw's (~41k characters), numbered so no two lines repeat."""
    lines, n = [], 0
    while sum(len(x) + 1 for x in lines) < chars:
        lines.append(f"{n}. {_SENTENCES[n % len(_SENTENCES)]}")
        n += 1
    return "\n".join(lines)


def collect_stream(stream) -> tuple[list, dict, str | None, str]:
    """Assemble streamed chunks into tool calls, as OpenAI's clients do."""
    chunks = list(stream)
    calls: dict[int, dict] = {}
    content = ""
    for ch in chunks:
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.index not in calls:
                # OpenAI's first delta for a call carries id, type and name; later ones only arguments.
                assert tc.id and tc.type == "function" and tc.function.name, tc
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and tc.function.name is None
            calls[tc.index]["arguments"] += tc.function.arguments or ""
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return chunks, calls, finish[-1] if finish else None, content


@pytest.fixture(scope="module")
def big_server(serve):
    # The default context (the largest that fits, up to the model's 32k), not the tests' 4k.
    return serve(max_context_tokens=None, kv_tokens=None, batch_size=2, memory_budget_mb=2048)


def test_openclaw_shaped_request_required_then_cached_round_trip(big_server):
    c = openai.OpenAI(base_url=big_server.base_url + "/v1", api_key="k", max_retries=0, timeout=600)
    messages = [
        {"role": "system", "content": openclaw_system_prompt()},
        {"role": "user", "content": "Please read the file notes/todo.md and summarise it."},
        {"role": "user", "content": [{"type": "text", "text": "[context] workspace: /home/staff/project"}]},
    ]
    kw = dict(model="gemma-3-270m", stream=True, stream_options={"include_usage": True}, tools=TOOLS, max_completion_tokens=400, temperature=0)
    # One call: the base model would otherwise fill its budget with more (grammar-valid) calls.
    first = c.chat.completions.create(messages=messages, tool_choice="required", parallel_tool_calls=False, **kw)
    chunks, calls, finish, content = collect_stream(first)
    assert finish == "tool_calls"
    assert len(calls) == 1 and content == ""
    for call in calls.values():
        args = json.loads(call["arguments"])
        jsonschema.validate(args, schema_of(call["name"]))
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens > 10_000  # OpenClaw-sized, accepted at the default context
    first_prompt = usage.prompt_tokens

    # Second turn: OpenClaw rewrites call ids to plain alphanumerics, then sends the result and a question.
    call = next(iter(calls.values()))
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "abc123", "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": "abc123", "content": "- buy printer paper\n- renew the VPN certificate"},
        {"role": "user", "content": "Thanks. What is on the list?"},
    ]
    # Same system prompt and tools, tool_choice auto, as OpenClaw sends every turn.
    chunks, calls2, finish, content = collect_stream(c.chat.completions.create(messages=messages, tool_choice="auto", **kw))
    usage = chunks[-1].usage
    assert usage.prompt_tokens > first_prompt
    assert usage.prompt_tokens_details.cached_tokens >= 0.9 * usage.prompt_tokens
    assert finish in ("stop", "length", "tool_calls")
    assert "```tool_call" not in content and "<tool_call>" not in content  # never leaked
    for call2 in calls2.values():  # a call the model chooses is grammar-constrained too
        jsonschema.validate(json.loads(call2["arguments"]), schema_of(call2["name"]))
    assert (finish == "tool_calls") == bool(calls2)

    # tool_choice "none": no calls, and call syntax the model imitates from the history never leaks.
    kw["max_completion_tokens"] = 60
    chunks, calls3, finish, content = collect_stream(c.chat.completions.create(messages=messages, tool_choice="none", **kw))
    assert finish in ("stop", "length") and calls3 == {}
    assert "```tool_call" not in content and "<tool_call>" not in content


def test_named_function_non_streamed(backend):
    c = openai.OpenAI(base_url=backend.base_url + "/v1", api_key="k", max_retries=0)
    r = c.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Read README.md"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "read"}},
        max_tokens=120,
        temperature=0,
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert [t.function.name for t in msg.tool_calls] == ["read"]
    jsonschema.validate(json.loads(msg.tool_calls[0].function.arguments), schema_of("read"))
    assert re.fullmatch(r"call_[A-Za-z0-9]+", msg.tool_calls[0].id)


def test_json_schema_response_format(backend):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 130}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    c = openai.OpenAI(base_url=backend.base_url + "/v1", api_key="k", max_retries=0)
    r = c.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": schema}},
        max_tokens=80,
        temperature=0,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    r = c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Answer with the JSON object {\"ok\": true} and nothing else."}], response_format={"type": "json_object"}, max_tokens=200, temperature=0, frequency_penalty=1.5
    )
    text = r.choices[0].message.content
    # The 270M base model rambles inside an unconstrained object, so it may run out of tokens;
    # what it wrote is still an object, and a finished one parses.
    assert text.lstrip().startswith("{")
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_unsupported_schema_feature_is_a_400_naming_tool(backend):
    tool = {"type": "function", "function": {"name": "odd", "parameters": {"type": "object", "properties": {"x": {"not": {"type": "string"}}}}}}
    c = openai.OpenAI(base_url=backend.base_url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], tools=[tool], tool_choice="required")
    assert "odd" in e.value.body["message"] and "not" in e.value.body["message"]


def test_auto_with_an_unenforceable_schema_says_so(backend):
    """tool_choice auto promises nothing, so the request succeeds, but the client and the log are told
    that the tool's arguments are not grammar-constrained."""
    tool = {"type": "function", "function": {"name": "odd", "parameters": {"type": "object", "not": {}}}}
    c = openai.OpenAI(base_url=backend.base_url + "/v1", api_key="k", max_retries=0)
    for stream in (False, True):
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=[tool], max_tokens=2, stream=stream
        )
        assert "'not'" in raw.headers["x-clawlan-warning"] and "without a grammar" in raw.headers["x-clawlan-warning"]
        out = raw.parse()
        if stream:
            list(out)  # read to the end: the request completes
    r = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert "x-clawlan-warning" not in r.headers
