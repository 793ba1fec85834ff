"""One call for the chat endpoint: what a request's tools and formats mean for decoding.

:func:`plan_request` reads ``tools``, ``tool_choice``, ``parallel_tool_calls``
and ``response_format`` from a chat-completions body, validates them (a bad
value is an :class:`~clawlan.errors.InvalidRequest`, an inexpressible schema
an :class:`~clawlan.tools.grammar.UnsupportedSchemaFeature`, both 400s) and
returns a :class:`ToolPlan`: the grammar for the sampler, whether it is lazy,
what to put in the prompt and whether to parse calls out of the output.

Decoding per case:

=====================  ===================================  =============
tool_choice            grammar                              parse calls
=====================  ===================================  =============
no tools               ``response_format``'s, if any        no
``none``               ``response_format``'s, if any        only to drop them
``auto``               lazy tool-call grammar (triggered    yes
                       by the family's call opener), or
                       ``response_format``'s if one is set
``required``           tool-call grammar, from the start    yes
named function         that function's call, exactly once   yes
=====================  ===================================  =============

With ``auto`` a tool whose schema cannot be enforced does not fail the
request: nothing was promised, so the call is parsed unconstrained and the
reason is in :attr:`ToolPlan.warnings`. With ``required`` or a named function
the same schema is a 400, since the promise is schema-valid arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clawlan.errors import InvalidRequest
from clawlan.tools.grammar import (
    FAMILIES,
    GrammarLimits,
    UnsupportedSchemaFeature,
    response_format_grammar,
    tool_call_grammar,
    tool_call_triggers,
)
from clawlan.tools.parser import ToolCallStreamParser
from clawlan.tools.prompt import prepare_messages

__all__ = ["ToolPlan", "plan_request"]

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function names


@dataclass
class ToolPlan:
    family: str
    tools: list[dict[str, Any]]  # the tools to describe in the prompt ([] when none may be called)
    tool_choice: Any  # "none" | "auto" | "required" | {"type": "function", "function": {"name": …}}
    parallel: bool
    grammar: str | None = None  # GBNF for llama_sampler_init_grammar(vocab, grammar, b"root")
    # Non-empty: the grammar is lazy; pass these to llama_sampler_init_grammar_lazy_patterns.
    grammar_triggers: list[str] = field(default_factory=list)
    parse_tool_calls: bool = False
    # Parse calls only to drop them (tool_choice "none" after a history of calls): never leaked, never returned.
    drop_calls: bool = False
    warnings: list[str] = field(default_factory=list)

    def new_parser(self) -> ToolCallStreamParser | None:
        """A fresh streaming parser for one choice's output, or None when calls are not parsed."""
        return ToolCallStreamParser(self.family) if self.parse_tool_calls else None

    def prompt_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Messages rewritten for a template that does not render tools itself."""
        return prepare_messages(
            messages,
            self.family,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel,
        )

    @staticmethod
    def finish_reason(parser: ToolCallStreamParser | None, engine_reason: str) -> str:
        """OpenAI's ``finish_reason``: ``tool_calls`` once any call was made, else the engine's."""
        return "tool_calls" if parser is not None and parser.tool_calls else engine_reason


def _validate_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be an array of function tools", param="tools")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type", "function") != "function"
            or not isinstance(fn, Mapping)
        ):
            raise InvalidRequest(f"tools[{i}] must be {{type: 'function', function: {{...}}}}", param="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-'", param="tools"
            )
        if name in seen:
            raise InvalidRequest(f"tools has two functions named {name!r}", param="tools")
        seen.add(name)
        params = fn.get("parameters")
        if params is not None and not isinstance(params, Mapping | bool):
            raise InvalidRequest(
                f"tools[{i}].function.parameters must be a JSON Schema object", param="tools"
            )
    return list(tools)


def _normalize_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    if choice is None:
        return "auto" if tools else "none"
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools:
            raise InvalidRequest("tool_choice 'required' needs at least one tool", param="tool_choice")
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        fn = choice.get("function")
        # {"type": "function", "name": …} is the Responses API's spelling; accept it too.
        name = fn.get("name") if isinstance(fn, Mapping) else choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("tool_choice.function.name is required", param="tool_choice")
        if name not in {t["function"]["name"] for t in tools}:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        return {"type": "function", "function": {"name": name}}
    raise InvalidRequest(
        "tool_choice must be 'none', 'auto', 'required' or {type: 'function', function: {name}}",
        param="tool_choice",
    )


def plan_request(body: Mapping[str, Any], family: str, limits: GrammarLimits | None = None) -> ToolPlan:
    """The decoding plan for a chat-completions ``body`` rendered with template ``family``.

    ``limits`` bound the grammar build (the server passes its config's).
    """
    tools = _validate_tools(body.get("tools"))
    choice = _normalize_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    fmt_grammar = response_format_grammar(body.get("response_format"), limits)

    if not tools:
        return ToolPlan(family, [], "none", parallel, grammar=fmt_grammar)
    if choice == "none":
        # A model that saw calls in the history may write one anyway: parse it out and drop it, so
        # call syntax never reaches the content (unless a response_format grammar already rules it out).
        known = family in FAMILIES and fmt_grammar is None
        return ToolPlan(family, [], choice, parallel, grammar=fmt_grammar, parse_tool_calls=known, drop_calls=known)
    if family not in FAMILIES:
        # Only a request that may call tools needs a call syntax; plain chat
        # works with any template.
        raise InvalidRequest(
            f"tools are not supported with chat template family {family!r} "
            f"(supported: {', '.join(sorted(FAMILIES))})",
            param="tools",
        )
    plan = ToolPlan(family, tools, choice, parallel, parse_tool_calls=True)
    if choice == "auto":
        if fmt_grammar is not None:
            # The output must be the requested JSON; a call could not match it.
            plan.grammar, plan.parse_tool_calls = fmt_grammar, False
            return plan
        try:
            plan.grammar = tool_call_grammar(tools, family, tool_choice="required", parallel=parallel, limits=limits)
            plan.grammar_triggers = tool_call_triggers(family)
        except UnsupportedSchemaFeature as exc:
            plan.warnings.append(f"tool calls are parsed without a grammar: {exc.message}")
        return plan
    plan.grammar = tool_call_grammar(tools, family, tool_choice=choice, parallel=parallel, limits=limits)
    return plan
