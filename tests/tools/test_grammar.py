"""JSON Schema to GBNF: the language is right, refusals are loud, llama.cpp takes it."""

from __future__ import annotations

import json
import random
import re

import pytest

from clawlan.errors import InvalidRequest
from clawlan.tools.grammar import (
    FAMILIES,
    UnsupportedSchemaFeature,
    json_object_grammar,
    response_format_grammar,
    schema_to_gbnf,
    tool_call_grammar,
)
from clawlan.tools.parser import parse_tool_calls
from clawlan.tools.plan import plan_request
from clawlan.tools.prompt import content_text

from .gbnf_regex import accepts, gbnf_to_regex, sample
from .openclaw_tools import TOOLS, schema_of

jsonschema = pytest.importorskip("jsonschema")


def valid(schema: dict, text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


# -- the language -------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "lo", "hi"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 14}, -30, 40),
        ({"type": "integer", "minimum": -17, "maximum": 123}, -150, 150),
        ({"type": "integer", "exclusiveMinimum": 0}, -20, 120),
        ({"type": "integer", "minimum": 7}, -20, 1200),
        ({"type": "integer", "maximum": -3}, -120, 20),
        ({"type": "integer", "minimum": 95, "maximum": 1005}, 0, 1100),
        ({"type": "integer", "minimum": 0, "exclusiveMaximum": 100}, -10, 110),
        ({"type": "integer", "minimum": 1.5, "maximum": 9.9}, -5, 15),
    ],
)
def test_integer_ranges_are_exact(schema: dict, lo: int, hi: int) -> None:
    rx = gbnf_to_regex(schema_to_gbnf(schema))
    for n in range(lo, hi + 1):
        assert (rx.fullmatch(str(n)) is not None) == valid(schema, str(n)), n
    assert not rx.fullmatch("007")  # no leading zeros: not JSON


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
        {"type": "number", "minimum": -2.5, "maximum": 3},
        {"type": "number", "maximum": -1},
    ],
)
def test_number_bounds_only_admit_valid_numbers(schema: dict) -> None:
    rx = gbnf_to_regex(schema_to_gbnf(schema))
    rng = random.Random(4)
    candidates = [
        "0",
        "1",
        "-1",
        "0.5",
        "-0.5",
        "0.0",
        "1.0",
        "0.999",
        "2.75",
        "-2.25",
        "-3.5",
        "599.9",
        "600",
        "601",
    ]
    candidates += [f"{rng.uniform(-700, 700):.3f}" for _ in range(300)]
    admitted = [c for c in candidates if rx.fullmatch(c)]
    assert admitted, "the grammar admits no number at all"
    for c in admitted:
        assert valid(schema, c), c


def test_optional_properties_in_any_subset_and_required_enforced() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}},
        "required": ["b"],
    }
    g = schema_to_gbnf(schema)
    assert accepts(g, '{"b": true}')
    assert accepts(g, '{"a": 1, "b": false}')
    assert accepts(g, '{"b": true, "c": null}')
    assert accepts(g, '{"a": 1, "b": true, "c": null}')
    assert accepts(g, '{\n  "a": 1,\n  "b": true\n}')
    assert not accepts(g, '{"a": 1}')  # b is required
    assert not accepts(g, '{"a": 1, "b": true, "d": 2}')  # no invented keys
    assert not accepts(g, '{"b": true' + " " * 40 + "}")  # whitespace is bounded


def test_free_form_map_and_additional_properties_never_duplicate_declared_keys() -> None:
    schema = {
        "type": "object",
        "properties": {"ab": {"type": "integer"}},
        "additionalProperties": {"type": "string"},
    }
    g = schema_to_gbnf(schema)
    assert accepts(g, '{"ab": 1, "x": "y"}')
    assert accepts(g, '{"a": "y", "abc": "z"}')
    assert not accepts(g, '{"ab": "y"}')
    assert not accepts(g, '{"ab": 1, "ab": "y"}')
    assert accepts(schema_to_gbnf({"type": "object"}), '{"k": [1, {"z": null}]}')


def test_pattern_properties_and_patterns() -> None:
    env = schema_of("exec")["properties"]["env"]
    g = schema_to_gbnf(env)
    assert accepts(g, '{"PATH": "/bin", "LANG_2": "C"}')
    assert not accepts(g, '{"path": "/bin"}')
    g = schema_to_gbnf({"type": "string", "pattern": r"^(foo|ba[rz])-\d{2,3}$"})
    for s, ok in [("foo-12", True), ("baz-123", True), ("bar-1", False), ("qux-12", False)]:
        assert accepts(g, json.dumps(s)) is ok, s
    # Unanchored: a match anywhere will do.
    assert accepts(schema_to_gbnf({"type": "string", "pattern": "ab"}), '"xxabyy"')


PATTERNS = {
    r"^(.*)$": [("anything", True), ("", True)],  # TypeBox's Type.Record key
    r"^[ -~]+$": [("abc", True), ("é", False), ("", False)],  # a range spanning quote and backslash
    r"^[\s\S]{1,3}$": [("ab", True), ("abcd", False)],
    r"^\S+$": [("ab", True), ("a b", False)],
    r"^a\tb$": [("a\tb", True), ("ab", False)],
    r"^[\w.-]+@[\w-]+\.[a-z]{2,}$": [("a.b@c-d.org", True), ("a@b", False)],
    r"^[日本]+$": [("日本", True), ("x", False)],
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_regex_subset(pattern: str) -> None:
    g = schema_to_gbnf({"type": "string", "pattern": pattern})
    for text, ok in PATTERNS[pattern]:
        assert accepts(g, json.dumps(text, ensure_ascii=False)) is ok, text
    rng = random.Random(pattern)
    for _ in range(100):  # everything the grammar writes matches the regex
        assert re.search(pattern, json.loads(sample(g, rng)))


def test_strings_enums_consts_and_arrays() -> None:
    g = schema_to_gbnf({"type": "string", "minLength": 2, "maxLength": 4})
    assert [accepts(g, json.dumps("x" * n)) for n in range(6)] == [False, False, True, True, True, False]
    assert accepts(g, r'"\n\"a"')  # escapes count as one character
    g = schema_to_gbnf({"type": "array", "items": {"enum": ["a", 1, None]}, "minItems": 1, "maxItems": 2})
    assert accepts(g, '["a"]') and accepts(g, "[1, null]")
    assert not accepts(g, "[]") and not accepts(g, '["a", 1, null]') and not accepts(g, '["b"]')
    assert accepts(schema_to_gbnf({"const": {"k": [1]}}), '{"k": [1]}')
    g = schema_to_gbnf({"type": ["integer", "null"]})
    assert accepts(g, "null") and accepts(g, "-4") and not accepts(g, '"4"')


def test_any_of_with_shared_siblings_and_all_of_merge() -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "required": ["id"],
        "additionalProperties": False,
        "anyOf": [
            {"properties": {"id": {}, "a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"id": {}, "b": {"type": "boolean"}}, "required": ["b"]},
        ],
    }
    g = schema_to_gbnf(schema)
    assert accepts(g, '{"id": 1, "a": "x"}') and accepts(g, '{"id": 2, "b": true}')
    assert not accepts(g, '{"id": 1}') and not accepts(g, '{"a": "x"}')
    merged = {
        "allOf": [
            {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
            {"required": ["y"]},
        ]
    }
    g = schema_to_gbnf(merged)
    assert accepts(g, '{"x": 1, "y": true}') and not accepts(g, '{"x": 1}')


def test_openclaw_schemas_only_admit_valid_arguments() -> None:
    samples = {
        "read": [
            '{"path": "a.txt"}',
            '{"path": "a.txt", "offset": 3, "limit": 2000}',
            '{"path": "a", "limit": 2001}',
        ],
        "browser": [
            '{"action": "open", "url": "http://x"}',
            '{"action": "click", "target": {"ref": "e12", "x": 3}}',
            '{"action": "snapshot"}',
            '{"action": "click", "url": "http://x"}',
            '{"action": "open"}',
        ],
        "cron": [
            '{"action": "add", "job": {"name": "n", "schedule": {"kind": "every", "everyMs": 60000}}}',
            '{"action": "add", "job": {"name": "n", "schedule": {"kind": "every", "everyMs": 5}}}',
            '{"action": "list"}',
        ],
        "web_search": [
            '{"query": "q", "freshness": null}',
            '{"query": "", "count": 3}',
            '{"query": "q", "freshness": "year"}',
        ],
    }
    for name, texts in samples.items():
        schema = schema_of(name)
        g = schema_to_gbnf(schema, owner=f"tool {name!r}")
        for text in texts:
            if accepts(g, text):
                assert valid(schema, text), (name, text)
        assert any(accepts(g, t) for t in texts), name


SOUNDNESS_SCHEMAS = {
    "integers": {"type": "integer", "minimum": -17, "maximum": 123},
    "numbers": {"type": "number", "minimum": -2.5, "exclusiveMaximum": 3},
    "formats": {
        "type": "object",
        "properties": {
            "d": {"type": "string", "format": "date-time"},
            "u": {"type": "string", "format": "uuid"},
        },
        "required": ["d", "u"],
    },
    "map": {
        "type": "object",
        "properties": {"ab": {"type": "integer"}},
        "additionalProperties": {"type": "string"},
    },
    "recursive": {
        "$ref": "#/$defs/n",
        "$defs": {
            "n": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 2}},
            }
        },
    },
    "pattern": {"type": "string", "pattern": r"^(foo|ba[rz])-\d{2,3}[^a-z]?$"},
    "tuple": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 1},
}


@pytest.mark.parametrize(
    "name", [t["function"]["name"] for t in TOOLS] + sorted(SOUNDNESS_SCHEMAS) + ["generation"]
)
def test_random_strings_of_the_grammar_validate(name: str) -> None:
    """Walk the grammar at random: every string it can produce must be valid."""
    schema = SOUNDNESS_SCHEMAS.get(name) or (GENERATION_SCHEMA if name == "generation" else schema_of(name))
    g = schema_to_gbnf(schema)
    rng = random.Random(name)
    for _ in range(150):
        text = sample(g, rng)
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_random_tool_calls_parse_and_validate(family: str) -> None:
    g = tool_call_grammar(TOOLS, family)
    rng = random.Random(family)
    for _ in range(40):
        text = sample(g, rng)
        parsed = parse_tool_calls(text, family)
        assert parsed.content is None and parsed.tool_calls, text
        assert all(e.startswith("repeated call") for e in parsed.errors), (text, parsed.errors)
        for call in parsed.tool_calls:
            jsonschema.validate(json.loads(call.arguments), schema_of(call.name))


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "feature"),
    [
        ({"type": "string", "not": {"const": "x"}}, "not"),
        ({"if": {"type": "string"}, "then": {"maxLength": 3}}, "if"),
        ({"type": "string", "pattern": "^(?=a)b$"}, "lookaround"),
        ({"type": "string", "pattern": r"^\p{L}+$"}, "escape"),
        ({"type": "string", "pattern": r"^[^\S]$"}, "inside a class"),
        ({"type": "string", "pattern": r"^(a)\1$"}, "escape"),
        ({"type": "string", "pattern": '^["]$'}, "JSON must escape"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "integer", "multipleOf": 5}, "multipleOf"),
        ({"$ref": "https://example.com/s.json"}, "$ref"),
        ({"type": "object", "properties": {"a": False}}, "false"),
        ({"type": "number", "minimum": 0.2, "maximum": 0.8}, "minimum/maximum"),
        ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames"),
        ({"type": "object", "required": ["x"], "additionalProperties": False}, "required property 'x'"),
    ],
)
def test_unsupported_features_are_a_400_naming_tool_and_feature(schema: dict, feature: str) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "frob", "parameters": {"type": "object", "properties": {"v": schema}}},
        }
    ]
    with pytest.raises(UnsupportedSchemaFeature) as info:
        tool_call_grammar(tools, "gemma")
    err = info.value
    assert isinstance(err, InvalidRequest) and err.status_code == 400
    body = err.to_body()["error"]
    assert "tool 'frob'" in body["message"] and feature in body["message"]
    assert body["param"] == "tools"


def test_response_format_variants() -> None:
    assert response_format_grammar(None) is None
    assert response_format_grammar({"type": "text"}) is None
    assert response_format_grammar({"type": "json_object"}) == json_object_grammar()
    with pytest.raises(InvalidRequest):
        response_format_grammar({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(UnsupportedSchemaFeature, match="response_format 'x'"):
        response_format_grammar({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}})
    with pytest.raises(InvalidRequest, match="not in tools"):
        tool_call_grammar(TOOLS, "gemma", tool_choice={"type": "function", "function": {"name": "nope"}})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tool_call_grammar_writes_what_the_parser_reads(family: str) -> None:
    tools = [t for t in TOOLS if t["function"]["name"] in ("get_weather", "process")]
    g = tool_call_grammar(tools, family)
    text = {
        "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "process", "arguments": {"action": "list"}}\n</tool_call>',
        "gemma": '```tool_call\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```\n'
        '```tool_call\n{"name": "process", "arguments": {"action": "list"}}\n```',
        "llama3": '{"name": "get_weather", "parameters": {"city": "Oslo"}}; {"name": "process", "parameters": {"action": "list"}}',
        "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}, '
        '{"name": "process", "arguments": {"action": "list"}}]',
    }[FAMILIES[family]]
    assert accepts(g, text)
    parsed = parse_tool_calls(text, family)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("process", {"action": "list"}),
    ]
    assert parsed.content is None
    one = tool_call_grammar(tools, family, tool_choice={"type": "function", "function": {"name": "process"}})
    assert not accepts(one, text)  # a named function is exactly one call to it


# -- llama.cpp -------------------------------------------------------------------


def all_grammars() -> list[tuple[str, str]]:
    out = [("json_object", json_object_grammar())]
    out += [(t["function"]["name"], schema_to_gbnf(t["function"]["parameters"])) for t in TOOLS]
    out += [(f"tools-{fam}", tool_call_grammar(TOOLS, fam)) for fam in sorted(set(FAMILIES.values()))]
    out.append(
        (
            "recursive",
            schema_to_gbnf(
                {
                    "$ref": "#/$defs/n",
                    "$defs": {
                        "n": {
                            "type": "object",
                            "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
                        }
                    },
                }
            ),
        )
    )
    return out


def test_llama_cpp_parses_every_generated_grammar() -> None:
    from .llama_helper import grammar_parses

    for name, gbnf in all_grammars():
        assert grammar_parses(gbnf), name
    assert not grammar_parses("root ::= undefined-rule")  # the check can fail


def _gemma_prompt(user: str) -> str:
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


# Every OpenClaw feature in one schema, with every string and map bounded so
# that greedy decoding must end within the token budget.
GENERATION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"const": "send"},
        "channel": {"type": "string", "enum": ["whatsapp", "telegram", "slack"]},
        "to": {"type": "string", "minLength": 1, "maxLength": 20},
        "text": {"type": "string", "maxLength": 40},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "meta": {
            "anyOf": [
                {"type": "object", "properties": {"urgent": {"type": "boolean"}}, "required": ["urgent"]},
                {"type": "null"},
            ]
        },
        "tags": {
            "type": "object",
            "patternProperties": {"^[a-z]{1,8}$": {"type": "string", "maxLength": 10}},
            "additionalProperties": False,
            "maxProperties": 2,
        },
    },
    "required": ["action", "channel", "to", "text", "meta"],
    "additionalProperties": False,
}


@pytest.mark.slow  # decoding on the embedded model: seconds alone, a minute on busy cores
def test_constrained_generation_validates_against_an_openclaw_schema() -> None:
    from .llama_helper import generate

    g = schema_to_gbnf(GENERATION_SCHEMA)
    text, stopped = generate(_gemma_prompt("Send 'lunch at 12?' to Bob on telegram, as JSON."), g, 200)
    assert stopped, text
    jsonschema.validate(json.loads(text), GENERATION_SCHEMA)


def render_gemma(messages: list[dict]) -> str:
    """llama.cpp's built-in Gemma format: the system text opens the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = []
    for m in messages:
        if m["role"] == "system":
            continue
        role = "model" if m["role"] == "assistant" else "user"
        text = content_text(m["content"])
        if system and role == "user":
            text, system = f"{system}\n\n{text}", ""
        out.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    return "".join(out) + "<start_of_turn>model\n"


@pytest.mark.slow  # decoding on the embedded model: seconds alone, a minute on busy cores
def test_required_tool_call_on_the_embedded_model_parses_and_validates() -> None:
    """OpenClaw's shape end to end: two user turns (one an array), tools, required.

    Four of the twelve tools keep the prefill short on two shared cores; the
    twelve-tool request is the server's end-to-end test.
    """
    from .llama_helper import generate_tokens

    body = {
        "messages": [
            {"role": "system", "content": "You are a personal assistant running inside OpenClaw."},
            {"role": "user", "content": "Hi!"},
            {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
        ],
        "tools": [t for t in TOOLS if t["function"]["name"] in ("get_weather", "browser", "exec", "process")],
        "tool_choice": "required",
    }
    plan = plan_request(body, "gemma")
    prompt = render_gemma(plan.prompt_messages(body["messages"]))
    parser = plan.new_parser()
    assert parser is not None
    deltas: list[dict] = []

    def feed(piece: str) -> bool:
        deltas.extend(parser.feed(piece))
        return parser.stop_requested  # the model repeats its call: stop, as the server does

    text, stopped, _ = generate_tokens(prompt, plan.grammar, 160, stop=feed)
    deltas += parser.finish()
    assert stopped, text
    assert parser.tool_calls and parser.content is None, text
    assert all("content" not in d for d in deltas)
    for call in parser.tool_calls:
        jsonschema.validate(json.loads(call.arguments), schema_of(call.name))
    streamed = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas)
    assert streamed == "".join(c.arguments for c in parser.tool_calls)
    assert plan.finish_reason(parser, "stop") == "tool_calls"


@pytest.mark.slow  # decoding on the embedded model
def test_auto_lazy_grammar_on_the_embedded_model_parses_without_leaking() -> None:
    """auto: free text until the model opens a call, then a schema-valid call; no syntax in content."""
    from .llama_helper import generate_tokens

    tools = [t for t in TOOLS if t["function"]["name"] in ("get_weather", "process")]
    body = {
        "messages": [{"role": "user", "content": "Use the get_weather tool to get the weather in Rome."}],
        "tools": tools,
    }
    plan = plan_request(body, "gemma")
    assert plan.grammar_triggers
    parser = plan.new_parser()
    assert parser is not None
    deltas: list[dict] = []

    def feed(piece: str) -> bool:
        deltas.extend(parser.feed(piece))
        return parser.stop_requested

    prompt = render_gemma(plan.prompt_messages(body["messages"]))
    text, _, _ = generate_tokens(prompt, plan.grammar, 90, stop=feed, triggers=plan.grammar_triggers)
    deltas += parser.finish()
    assert parser.tool_calls, text  # the base model does open a call here (greedy, so repeatable)
    for call in parser.tool_calls:
        jsonschema.validate(json.loads(call.arguments), schema_of(call.name))
    content = "".join(d.get("content", "") for d in deltas)
    assert "```tool_call" not in content and '"arguments"' not in content


# -- linear conversion and limits (issue 13, finding 2) -------------------------------------------


def _deep(depth: int) -> dict:
    """A `type` list and anyOf beside siblings at every level: walked per branch, this doubles per level."""
    s: dict = {"type": "string"}
    for _ in range(depth):
        s = {"type": ["object", "null"], "properties": {"a": s}, "anyOf": [{"required": ["a"]}, {}]}
    return s


def _count_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the builder's real work: each object, array, string or number it turns into rules."""
    from clawlan.tools import grammar

    calls = [0]

    def counted(real):
        def walk(self, *args, **kw):
            calls[0] += 1
            return real(self, *args, **kw)

        return walk

    for name in ("visit_object", "visit_array", "visit_string", "visit_number"):
        monkeypatch.setattr(grammar._Builder, name, counted(getattr(grammar._Builder, name)))
    return calls


def test_each_subschema_is_walked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from clawlan.tools.grammar import GrammarLimits

    calls = _count_walks(monkeypatch)
    schema_to_gbnf(_deep(12), limits=GrammarLimits(max_depth=100))
    assert calls[0] <= 12 * 4, calls[0]  # a few walks per level, not 2**12
    g = schema_to_gbnf(_deep(3))
    assert accepts(g, '{"a": {"a": null}}') and accepts(g, "null") and not accepts(g, '{"a": 1}')
    # A $ref with siblings, used many times, is not expanded (and walked) once per use.
    shared = {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(30)}}
    schema = {
        "$defs": {"S": shared},
        "type": "object",
        "properties": {f"p{i}": {"$ref": "#/$defs/S", "type": "object"} for i in range(30)},
    }
    calls[0] = 0
    schema_to_gbnf(schema)
    assert calls[0] <= 30 + 30 + 5, calls[0]  # each use's object once, the 30 integers once in all
    small = {"$defs": {"S": {"type": "object", "properties": {"k": {"type": "integer"}}}}}
    small["properties"] = {p: {"$ref": "#/$defs/S", "type": "object"} for p in "xy"}
    g = schema_to_gbnf(small)
    assert accepts(g, '{"x": {"k": 1}, "y": {}}') and not accepts(g, '{"y": {"k": "x"}}')


def test_2000_optional_properties_make_a_linear_grammar() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}
    g = schema_to_gbnf(schema, limits=None)
    assert len(g) < 20 * len(json.dumps(schema)), len(g)  # it was 71 MB, quadratic
    small = {"type": "object", "properties": {k: {"type": "integer"} for k in "abcdef"}, "required": ["c"]}
    g = schema_to_gbnf(small)
    for text, ok in [
        ('{"c": 1}', True),
        ('{"a": 1, "c": 2, "f": 3}', True),
        ('{"b": 1, "c": 2, "d": 3, "e": 4}', True),
        ('{"a": 1, "b": 2}', False),  # c is required
        ('{"c": 1, "a": 2}', False),  # declared order
        ('{"c": 1, "c": 2}', False),
    ]:
        assert accepts(g, text) is ok, text


def test_limits_are_400s_naming_the_config_key() -> None:
    import time

    from clawlan.tools.grammar import GrammarLimits, SchemaLimitExceeded

    with pytest.raises(SchemaLimitExceeded, match=r"server\.max_schema_depth"):
        schema_to_gbnf(_deep(20))
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}
    with pytest.raises(SchemaLimitExceeded, match=r"server\.max_grammar_bytes"):
        schema_to_gbnf(wide, limits=GrammarLimits(max_grammar_bytes=10_000))
    with pytest.raises(SchemaLimitExceeded, match=r"server\.max_grammar_bytes"):
        schema_to_gbnf({"type": "string", "maxLength": 10**9})  # llama.cpp would expand it
    with pytest.raises(SchemaLimitExceeded, match=r"server\.grammar_timeout_ms"):
        schema_to_gbnf(wide, limits=GrammarLimits(deadline=time.monotonic() - 1))
    with pytest.raises(SchemaLimitExceeded) as e:
        tool_call_grammar([{"type": "function", "function": {"name": "f", "parameters": _deep(20)}}], "gemma")
    assert e.value.status_code == 400 and "tool 'f'" in e.value.message


@pytest.mark.parametrize(
    "schema",
    [{"type": "string", "maxLength": "ten"}, {"type": "array", "minItems": float("nan")}, {"properties": 5}],
)
def test_malformed_schemas_are_a_400(schema: dict) -> None:
    with pytest.raises(InvalidRequest, match="malformed|properties"):
        schema_to_gbnf(schema)


def test_empty_brackets_take_one_whitespace() -> None:
    g = schema_to_gbnf({"type": "object", "properties": {"a": {"type": "integer"}}})
    assert accepts(g, "{}") and accepts(g, "{ }") and accepts(g, '{\n  "a": 1\n}')
    assert not accepts(g, "{\n    \n     }")
    assert not accepts(schema_to_gbnf({"type": "array"}), "[\n  \n ]")
