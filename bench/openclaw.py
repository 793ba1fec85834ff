"""OpenClaw-shaped turns against clawlan: cold first turn, then the cached second turn.

    .venv/bin/python bench/openclaw.py [--chars 41000]

Starts a clawlan server in-process on the embedded model at its default context,
sends a ~41k-character system prompt, two user messages (one as text parts) and 12
tools with ``tool_choice: "required"``, then the second turn OpenClaw would send
(assistant tool call with a rewritten id, the tool result, a user message; same
system prompt and tools, ``tool_choice: "auto"``). Prints TTFT, prompt and cached
tokens of both turns.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def turn(client: openai.OpenAI, messages: list, tools: list, choice: str) -> dict:
    t0 = time.perf_counter()
    ttft = None
    calls: dict[int, dict] = {}
    usage = None
    stream = client.chat.completions.create(
        model="m", messages=messages, tools=tools, tool_choice=choice, parallel_tool_calls=False, stream=True,
        stream_options={"include_usage": True}, max_completion_tokens=300, temperature=0,
    )
    for ch in stream:
        if ch.usage:
            usage = ch.usage
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        if ttft is None and (d.content or d.tool_calls):
            ttft = time.perf_counter() - t0
        for tc in d.tool_calls or []:
            c = calls.setdefault(tc.index, {"name": tc.function.name, "arguments": ""})
            c["arguments"] += tc.function.arguments or ""
    return {"ttft_ms": round((ttft or 0) * 1000), "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.prompt_tokens_details.cached_tokens, "calls": list(calls.values())}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=41_000, help="system prompt size in characters (OpenClaw: ~41k)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from clawlan.server.backend import Backend
    from clawlan.server.serving import RunningServer
    from conftest import make_settings

    tools_mod = load("openclaw_tools", ROOT / "tests" / "tools" / "openclaw_tools.py")
    shape = load("openclaw_shape", ROOT / "tests" / "server" / "test_tools.py")
    settings = make_settings(max_context_tokens=None, kv_tokens=None, batch_size=8)
    server = RunningServer(settings, Backend(settings), port=0).start()
    try:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="k", max_retries=0, timeout=900)
        print(f"default context: {server.backend.plan.max_context} tokens, batch 8")
        messages = [
            {"role": "system", "content": shape.openclaw_system_prompt(args.chars)},
            {"role": "user", "content": "Please read the file notes/todo.md and summarise it."},
            {"role": "user", "content": [{"type": "text", "text": "[context] workspace: /home/staff/project"}]},
        ]
        first = turn(client, messages, tools_mod.TOOLS, "required")
        print("turn 1:", json.dumps(first, ensure_ascii=False))
        call = first["calls"][0]
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "abc123", "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
            {"role": "tool", "tool_call_id": "abc123", "content": "- buy printer paper\n- renew the VPN certificate"},
            {"role": "user", "content": "Thanks. What is on the list?"},
        ]
        second = turn(client, messages, tools_mod.TOOLS, "auto")
        print("turn 2:", json.dumps(second, ensure_ascii=False))
        print(f"cached share {second['cached_tokens'] / second['prompt_tokens']:.3f}, "
              f"TTFT ratio {second['ttft_ms'] / first['ttft_ms']:.3f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
