"""Tools in the prompt, for templates that do not render them themselves.

A GGUF chat template may know nothing about ``tools``, ``tool_calls`` or
``role: "tool"`` (the embedded Gemma 3 has no template at all). For those,
:func:`prepare_messages` rewrites an OpenAI message list into plain
system/user/assistant text that any template renders:

* the tool list and the calling instructions are appended to the system
  message (:func:`render_tools_system_text`);
* an assistant message's ``tool_calls`` become the family's call syntax
  (:func:`tool_calls_to_text`), exactly what :mod:`clawlan.tools.parser`
  reads and :func:`clawlan.tools.grammar.tool_call_grammar` produces, so the
  model sees its own calls as it would write them;
* ``tool`` results become text (:func:`tool_result_to_text`) in the role the
  family expects (:func:`tool_result_role`).

The tool text goes *after* the caller's system prompt and the per-request
instruction (``tool_choice``) goes last, so a long, unchanging system prompt
and tool list stay a cacheable prefix from one turn to the next.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from clawlan.errors import InvalidRequest
from clawlan.messages import content_text
from clawlan.tools.grammar import FAMILIES, selected_tools

__all__ = [
    "content_text",
    "prepare_messages",
    "render_tools_system_text",
    "tool_calls_to_text",
    "tool_result_role",
    "tool_result_to_text",
]

_EXAMPLE_ARGS = {"argument": "value"}


def _syntax(family: str) -> str:
    try:
        return FAMILIES[family]
    except KeyError:
        raise InvalidRequest(f"no tool-call syntax for template family {family!r}", param="tools") from None


def _call_json(name: str, arguments: Any, args_key: str) -> str:
    # Same spacing as the grammar's and the model's own output, so a replayed
    # call tokenizes like the one the model wrote.
    if isinstance(arguments, str):
        # A non-JSON string stays a string rather than being lost.
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments) if arguments.strip() else {}
    return json.dumps({"name": name, args_key: arguments}, ensure_ascii=False)


def _example(syntax: str, name: str = "function_name") -> str:
    return tool_calls_to_text(
        [{"function": {"name": name, "arguments": json.dumps(_EXAMPLE_ARGS)}}], syntax_override=syntax
    )


def render_tools_system_text(
    tools: Sequence[Mapping[str, Any]],
    family: str,
    *,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
) -> str:
    """The text that tells the model about ``tools`` and how to call them.

    ``tool_choice`` is OpenAI's: ``"auto"``, ``"none"``, ``"required"`` or
    ``{"type": "function", "function": {"name": …}}``. Returns "" without tools.
    """
    syntax = _syntax(family)
    if not tools:
        return ""
    fns = selected_tools(tools, "auto")
    listing = "\n".join(
        json.dumps(
            {
                "name": f["name"],
                "description": f.get("description", ""),
                "parameters": f.get("parameters") or {"type": "object", "properties": {}},
            },
            ensure_ascii=False,
        )
        for f in fns
    )
    if syntax == "hermes":
        head = (
            "# Tools\n\nYou may call one or more functions to help with the user's request.\n"
            f"The functions are described in JSON Schema inside <tools></tools>:\n<tools>\n{listing}\n</tools>\n\n"
            "To call a function, write its name and arguments as JSON inside <tool_call></tool_call> tags:\n"
            f"{_example(syntax)}"
        )
    elif syntax == "llama3":
        head = (
            "You have access to the functions below. To call one, reply with only a JSON object of the form "
            f"{_example(syntax)} and nothing else; never use variables.\n\n{listing}"
        )
    elif syntax == "mistral":
        head = (
            f"[AVAILABLE_TOOLS] {listing} [/AVAILABLE_TOOLS]\n"
            f"To call functions, reply with [TOOL_CALLS] and a JSON list of calls, for example: {_example(syntax)}"
        )
    else:  # gemma
        head = (
            "You can call functions. To call one, reply with a block in exactly this form, with nothing else in it:\n"
            f"{_example(syntax)}\n"
            "The result comes back in the next turn in a ```tool_output``` block; then continue. "
            "Answer normally when no function is needed.\n\n"
            f"Available functions, with their arguments as JSON Schema:\n{listing}"
        )
    many = {
        "hermes": "You may write several <tool_call> blocks to call several functions at once.",
        "llama3": "To call several functions at once, separate the JSON objects with ';'.",
        "mistral": "You may put several calls in the list.",
        "gemma": "You may write several blocks to call several functions at once.",
    }[syntax]
    rules = [many if parallel_tool_calls else "Call at most one function per reply."]
    if tool_choice == "none":
        rules = ["Do not call any function now; answer in plain text."]
    elif tool_choice == "required":
        rules.append("You must call at least one function now.")
    elif isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name")
        rules = [f"You must call the function {name!r} now, once."]
    return head + "\n\n" + " ".join(rules)


def tool_calls_to_text(
    tool_calls: Sequence[Mapping[str, Any]], family: str = "gemma", *, syntax_override: str | None = None
) -> str:
    """An assistant message's OpenAI ``tool_calls`` in the family's call syntax."""
    syntax = syntax_override or _syntax(family)
    calls = []
    for call in tool_calls:
        fn = call.get("function") or {}
        calls.append((str(fn.get("name", "")), fn.get("arguments", "{}")))
    if syntax == "hermes":
        return "\n".join(f"<tool_call>\n{_call_json(n, a, 'arguments')}\n</tool_call>" for n, a in calls)
    if syntax == "gemma":
        return "\n".join(f"```tool_call\n{_call_json(n, a, 'arguments')}\n```" for n, a in calls)
    if syntax == "llama3":
        return "; ".join(_call_json(n, a, "parameters") for n, a in calls)
    return "[TOOL_CALLS][" + ", ".join(_call_json(n, a, "arguments") for n, a in calls) + "]"


def tool_result_role(family: str) -> str:
    """The role a tool result is rendered in: Llama 3's ``ipython``, else ``user``."""
    return "ipython" if _syntax(family) == "llama3" else "user"


def tool_result_to_text(msg: Mapping[str, Any], family: str, *, name: str | None = None) -> str:
    """A ``role: "tool"`` message as text for the family. ``name``: the function it answers."""
    syntax = _syntax(family)
    body = content_text(msg.get("content"))
    name = name or msg.get("name")
    if syntax == "hermes":
        return f"<tool_response>\n{body}\n</tool_response>"
    if syntax == "llama3":
        return body
    if syntax == "mistral":
        payload: dict[str, Any] = {"content": body}
        if name:
            payload = {"name": name, **payload}
        return f"[TOOL_RESULTS]{json.dumps(payload, ensure_ascii=False)}[/TOOL_RESULTS]"
    label = f" from {name}" if name else ""
    return f"Result{label}:\n```tool_output\n{body}\n```"


def prepare_messages(
    messages: Sequence[Mapping[str, Any]],
    family: str,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
) -> list[dict[str, Any]]:
    """Rewrite OpenAI messages so a template without tool support can render them.

    Returns new dicts with ``role`` in system/user/assistant (or ``ipython``
    for llama3) and string ``content``; other keys of plain messages are kept.
    Consecutive tool results are merged into one turn, which templates that
    insist on alternating roles need.
    """
    _syntax(family)
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for labelling results
    result_role = tool_result_role(family)
    for msg in messages:
        role = msg.get("role")
        if role == "assistant" and msg.get("tool_calls"):
            calls = msg["tool_calls"]
            for call in calls:
                if call.get("id"):
                    names[str(call["id"])] = str((call.get("function") or {}).get("name", ""))
            text = content_text(msg.get("content")).rstrip()
            calls_text = tool_calls_to_text(calls, family)
            out.append({"role": "assistant", "content": f"{text}\n{calls_text}" if text else calls_text})
        elif role == "tool":
            text = tool_result_to_text(msg, family, name=names.get(str(msg.get("tool_call_id", ""))))
            if out and out[-1].get("_tool_result") and result_role == "user":
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": result_role, "content": text, "_tool_result": True})
        else:
            new = dict(msg)
            if role in ("system", "developer"):
                new["role"] = "system"
                new["content"] = content_text(msg.get("content"))
            out.append(new)
    for m in out:
        m.pop("_tool_result", None)
    if tools and tool_choice != "none":
        text = render_tools_system_text(
            tools, family, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls
        )
        if out and out[0].get("role") == "system":
            out[0]["content"] = (
                f"{out[0]['content'].rstrip()}\n\n{text}" if out[0]["content"].strip() else text
            )
        else:
            out.insert(0, {"role": "system", "content": text})
    return out
