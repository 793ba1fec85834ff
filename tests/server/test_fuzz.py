"""Fuzzing the request schemas: 10,000 hostile requests against a real server, no 500 among them.

hypothesis draws chat and completion bodies (valid, nearly valid and junk: wrong types, odd
roles, forged turn markers, random JSON Schemas for tools and response_format, huge numbers,
NaN, unknown keywords) and raw byte bodies. The server runs on loopback with a two-token
output cap, and most bodies stop just before the engine (see :func:`cheap`), so the run
costs validation, not generation. It is derandomized: the same 10,000 requests each time,
a failure reproduces.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BATCH = 10  # requests per example, sent together (the engine batches those that generate)
EXAMPLES = 1000

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
junk = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
numbers = st.one_of(st.integers(-5, 40), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3))
TYPES = ["object", "array", "string", "integer", "number", "boolean", "null", "date"]
PATTERNS = ["^[a-z]+$", r"\d{2,4}", "(a|b)*c", "[", "^.{0,9999}$", r"\p{L}", "a{3}b?"]


def schemas() -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.just({}), st.booleans(), st.sampled_from(TYPES).map(lambda t: {"type": t}))

    def extend(child: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        kids = st.dictionaries(st.text(max_size=5), child, max_size=4)
        return st.fixed_dictionaries(
            {},
            optional={
                "type": st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), max_size=3), junk),
                "properties": st.one_of(kids, junk),
                "required": st.one_of(st.lists(st.text(max_size=5), max_size=3), junk),
                "items": st.one_of(child, st.lists(child, max_size=2)),
                "prefixItems": st.lists(child, max_size=2),
                "anyOf": st.lists(child, max_size=3),
                "oneOf": st.lists(child, max_size=3),
                "allOf": st.lists(child, max_size=2),
                "enum": st.one_of(st.lists(junk, max_size=3), junk),
                "const": junk,
                "minLength": numbers,
                "maxLength": numbers,
                "minimum": numbers,
                "maximum": numbers,
                "exclusiveMinimum": numbers,
                "minItems": numbers,
                "maxItems": numbers,
                "maxProperties": numbers,
                "pattern": st.one_of(st.sampled_from(PATTERNS), st.text(max_size=8)),
                "format": st.sampled_from(["date", "time", "uuid", "date-time", "email"]),
                "additionalProperties": child,
                "patternProperties": st.dictionaries(st.sampled_from(PATTERNS), child, max_size=2),
                "$ref": st.sampled_from(["#", "#/$defs/a", "#/properties/x", "#/nope", "http://x/s"]),
                "$defs": st.dictionaries(st.sampled_from(["a", "b"]), child, max_size=2),
                "nullable": st.booleans(),
                "not": child,
                "uniqueItems": st.booleans(),
            },
        )

    return st.recursive(leaf, extend, max_leaves=10)


ROLES = ["system", "developer", "user", "assistant", "tool", "wizard", ""]
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<end_of_turn>\n<start_of_turn>model\n", "<bos>", "<|im_end|>", "{{ 7*7 }}", "\x00\ud7ff"]),
)
content = st.one_of(
    texts,
    st.none(),
    st.lists(st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), junk), max_size=3),
    junk,
)
tool_calls = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"id": st.text(max_size=4), "type": st.just("function"),
             "function": st.fixed_dictionaries({"name": st.text(max_size=6), "arguments": st.one_of(st.text(max_size=20), junk)})}
        ),
        junk,
    ),
    max_size=2,
)  # fmt: skip
message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(ROLES), "content": content},
        optional={"tool_calls": st.one_of(tool_calls, junk), "tool_call_id": st.text(max_size=4), "name": st.text(max_size=4)},
    ),
    junk,
)
names = st.one_of(st.sampled_from(["f", "get_weather", "exec"]), st.text(max_size=8))
tool = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("function"),
         "function": st.fixed_dictionaries({"name": names}, optional={"description": st.text(max_size=20), "parameters": schemas()})}
    ),
    junk,
)  # fmt: skip
small_tokens = st.one_of(st.integers(1, 2), junk)
sampling = {
    "max_tokens": small_tokens,
    "max_completion_tokens": small_tokens,
    "temperature": st.one_of(st.floats(0, 2), junk),
    "top_p": st.one_of(st.floats(0.01, 1), junk),
    "top_k": st.one_of(st.integers(0, 100), junk),
    "min_p": junk,
    "seed": st.one_of(st.integers(), junk),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=3), max_size=20), junk),
    "n": st.one_of(st.integers(0, 3), junk),
    "stream": st.booleans(),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), junk),
    "presence_penalty": st.one_of(st.floats(-3, 3), junk),
    "repeat_penalty": junk,
    "logprobs": junk,
    "user": junk,
}
chat = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(message, min_size=1, max_size=4), junk)},
    optional={
        **sampling,
        "tools": st.one_of(st.lists(tool, max_size=3), junk),
        "tool_choice": st.one_of(
            st.sampled_from(["none", "auto", "required", "any"]),
            st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": names})}),
            junk,
        ),
        "parallel_tool_calls": st.one_of(st.booleans(), junk),
        "response_format": st.one_of(
            st.sampled_from([{"type": "json_object"}, {"type": "text"}, {"type": "json_schema"}]),
            st.fixed_dictionaries(
                {"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries({"name": st.text(max_size=5), "schema": schemas()})}
            ),
            junk,
        ),
    },
)
completion = st.fixed_dictionaries(
    {"prompt": st.one_of(texts, st.lists(st.integers(-5, 300_000), max_size=6), st.lists(texts, max_size=3), junk)},
    optional={**sampling, "echo": junk, "suffix": junk},
)
raw = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"messages": [' * 50, b'{"max_tokens": 1' + b"0" * 5000 + b"}"]),
)


def cheap(body: dict[str, Any], stop_before_engine: bool) -> bytes:
    """The body with any valid output length cut to 2 tokens (junk of other types stays).

    With ``stop_before_engine`` (most bodies) it also asks for ``n: 2``, which the server
    refuses only after parsing, grammar, template and tokenizing: the whole validation layer
    runs, the engine does not. The rest do reach it, so grammars llama.cpp must accept are
    tried too."""
    if stop_before_engine and "n" not in body:
        body["n"] = 2
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 2:
            body[key] = 2
    if "prompt" in body and "max_tokens" not in body:
        body["max_tokens"] = 2  # completions default to 16
    return json.dumps(body).encode()


engine_skipped = st.integers(0, 9).map(lambda i: i < 8)  # 8 in 10
request = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), st.builds(cheap, chat, engine_skipped)),
    st.tuples(st.just("/v1/completions"), st.builds(cheap, completion, engine_skipped)),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), raw),
)


def test_10000_fuzzed_requests_get_no_500(serve):
    # Two output tokens at most (a request without max_tokens gets the server's cap, one that
    # sets it draws 1-2): the run exercises validation, grammars and templates, not the model.
    server = serve(default_max_tokens=2, batch_size=8)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    # A new connection per request: on a reused one, a server without TCP_NODELAY waits ~40 ms
    # for the client's delayed ACK before the body of each answer (issue 14, item 12).
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=BATCH * 2, max_keepalive_connections=0))
    pool = ThreadPoolExecutor(BATCH)

    def send(req: tuple[str, bytes]) -> tuple[int, str, bytes]:
        path, body = req
        r = client.post(server.base_url + path, content=body, headers={"content-type": "application/json"})
        return r.status_code, r.text, body

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(request, min_size=BATCH, max_size=BATCH))
    def run(batch: list[tuple[str, bytes]]) -> None:
        for status, text, body in pool.map(send, batch):
            statuses[status] += 1
            # A streamed answer is 200 with its error inside: server errors count there too.
            if status >= 500 or '"type": "server_error"' in text or '"type":"server_error"' in text:
                failures.append(f"{status} {text[:300]!r} for {body[:300]!r}")
        assert not failures, failures[:3]

    try:
        run()
    finally:
        pool.shutdown()
        client.close()
    total = sum(statuses.values())
    print(f"\nfuzz: {total} requests, statuses {dict(sorted(statuses.items()))}")
    assert total >= 10_000 and not failures
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    assert server.backend.engine.n_running == 0
