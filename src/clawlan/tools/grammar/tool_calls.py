"""Tool-call grammars: each template family's call syntax around the tools' argument schemas,
and the trigger patterns that make the grammar lazy for ``tool_choice: "auto"``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from clawlan.errors import InvalidRequest
from clawlan.tools.grammar.gbnf import _json_literal
from clawlan.tools.grammar.limits import _MALFORMED, GrammarLimits, _malformed
from clawlan.tools.grammar.schema import _Builder

# Template families whose tool-call syntax we can write and read. Aliases map
# onto the syntax they share (Qwen 2.5+ and NousResearch Hermes use ChatML).
FAMILIES = {
    "gemma": "gemma",
    "chatml": "hermes",
    "hermes": "hermes",
    "qwen": "hermes",
    "llama3": "llama3",
    "mistral": "mistral",
}

# A grammar that lets the model emit calls forever would let a small model
# loop until max_tokens; 16 calls in one turn is far above what agents use.
MAX_PARALLEL_CALLS = 16


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), Mapping):
        raise InvalidRequest("each tool must be {type: 'function', function: {...}}", param="tools")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidRequest("each tool function needs a name", param="tools")
    return fn


def selected_tools(tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> list[Mapping[str, Any]]:
    """The tools a ``tool_choice`` allows (all for auto/required, one when named)."""
    fns = [_function(t) for t in tools]
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [f for f in fns if f["name"] == name]
        if not chosen:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        return chosen
    return fns


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]],
    family: str,
    *,
    tool_choice: Any = "required",
    parallel: bool = True,
    limits: GrammarLimits | None = None,
) -> str:
    """GBNF that makes the model write tool calls in ``family``'s syntax.

    ``tools`` are OpenAI tool objects. ``tool_choice`` is ``"required"`` (any
    of the tools) or ``{"type": "function", "function": {"name": ...}}``.
    With ``parallel``, 1 to :data:`MAX_PARALLEL_CALLS` calls; else exactly
    one (a named function is always exactly one, as OpenAI does).
    """
    syntax = FAMILIES.get(family)
    if syntax is None:
        raise InvalidRequest(f"no tool-call syntax for template family {family!r}", param="tools")
    fns = selected_tools(tools, tool_choice)
    if not fns:
        raise InvalidRequest("tool_choice requires at least one tool", param="tools")
    if isinstance(tool_choice, Mapping):
        parallel = False
    b = _Builder("tools", None, "tools", limits)
    ws = b.primitive("ws")
    args_key = "parameters" if syntax == "llama3" else "arguments"
    calls = []
    for fn in fns:
        name = fn["name"]
        # No parameters means a function that takes none: arguments are {}.
        schema = fn.get("parameters") or {"type": "object", "properties": {}, "additionalProperties": False}
        b.new_schema(f"tool {name!r}", schema)  # each tool's $refs point into its own schema
        try:
            args = b.visit(schema, "#", f"{name}-args")
        except _MALFORMED as exc:
            raise _malformed(b.owner, "tools", exc) from None
        calls.append(
            b.add(
                f"call-{name}",
                f'"{{" {ws} "\\"name\\"" {ws} ":" {ws} {_json_literal(name)} {ws} "," {ws} '
                f'"\\"{args_key}\\"" {ws} ":" {ws} {args} {ws} "}}"',
            )
        )
    call = b.add("call", " | ".join(calls))
    more = MAX_PARALLEL_CALLS - 1 if parallel else 0
    if syntax == "hermes":
        one = b.add("tool-call", f'"<tool_call>\\n" {call} "\\n</tool_call>"')
        root = f'{one} ( "\\n" {one} ){{0,{more}}}' if more else one
    elif syntax == "gemma":
        one = b.add("tool-call", f'"```tool_call\\n" {call} "\\n```"')
        root = f'{one} ( "\\n" {one} ){{0,{more}}}' if more else one
    elif syntax == "llama3":
        root = f'{call} ( ";" {ws} {call} ){{0,{more}}}' if more else call
    else:  # mistral
        root = (
            f'"[TOOL_CALLS][" {call} ( "," {ws} {call} ){{0,{more}}} "]"'
            if more
            else f'"[TOOL_CALLS][" {call} "]"'
        )
    return b.render(root)


def tool_call_triggers(family: str) -> list[str]:
    """Trigger patterns for a *lazy* tool-call grammar (``tool_choice: "auto"``).

    For ``llama_sampler_init_grammar_lazy_patterns``: the sampler leaves the
    model free until the text generated so far fully matches one pattern,
    then constrains from the pattern's first group on with
    :func:`tool_call_grammar`'s grammar. A call the model chooses to make is
    then schema-valid too, while a plain answer stays unconstrained.
    """
    syntax = FAMILIES.get(family)
    if syntax is None:
        raise InvalidRequest(f"no tool-call syntax for template family {family!r}", param="tools")
    anywhere = r"[\s\S]*?({})[\s\S]*"
    if syntax == "hermes":
        return [anywhere.format(re.escape("<tool_call>"))]
    if syntax == "gemma":
        return [anywhere.format(re.escape("```tool_call"))]
    if syntax == "mistral":
        return [anywhere.format(re.escape("[TOOL_CALLS]"))]
    # Llama 3: a JSON call object as the whole message, or after <|python_tag|>.
    return [r'\s*(\{)\s*"name"[\s\S]*', r"[\s\S]*?<\|python_tag\|>\s*(\{)[\s\S]*"]
