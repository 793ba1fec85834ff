"""Tool calls as OpenAI sends them: the call, the parsed message, and the deltas of a stream.

:class:`CallWriter` is the writing half of :class:`clawlan.tools.parser.ToolCallStreamParser`:
the parser decides what the text is (content, a call's name, a piece of its arguments), and
the writer keeps the result and turns each decision into OpenAI ``delta`` dicts in OpenAI's
exact shape, holding a later call back until it ends so that a repeat is dropped before any of
it is sent.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clawlan.tools.json_scan import WS

# The characters of a call id (``call_`` + 24 of them; Mistral's ``[CALL_ID]`` uses the same).
ID_CHARS = string.ascii_letters + string.digits


def new_call_id() -> str:
    """An OpenAI-looking call id: ``call_`` and 24 alphanumerics."""
    return "call_" + "".join(secrets.choice(ID_CHARS) for _ in range(24))


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI's function.arguments

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ParsedOutput:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class CallWriter:
    """Content and calls found so far, and the OpenAI deltas not yet taken.

    After the parser's ``finish()``, :attr:`content`, :attr:`tool_calls` and :attr:`errors`
    hold the whole result. ``id_factory`` makes call ids (tests pass a counter).
    """

    def __init__(self, id_factory: Callable[[], str] = new_call_id) -> None:
        self._id = id_factory
        self._held_ws = ""  # trailing whitespace of content, released only before more content
        self._content: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.errors: list[str] = []
        self._out: list[dict[str, Any]] = []
        # Set when the model repeated a call it already made: it is looping,
        # and the caller should stop generating (finish_reason "tool_calls").
        self.stop_requested = False
        self._pending: ToolCall | None = None

    @property
    def content(self) -> str | None:
        text = "".join(self._content)
        return text if text.strip() or (text and not self.tool_calls) else None

    def result(self) -> ParsedOutput:
        return ParsedOutput(self.content, list(self.tool_calls), list(self.errors))

    def _take(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out

    def _emit_content(self, text: str) -> None:
        if not text:
            return
        body = text.rstrip(WS)
        if not body:
            self._held_ws += text
            return
        text, self._held_ws = self._held_ws + body, text[len(body) :]
        self._content.append(text)
        if self._out and "content" in self._out[-1]:
            self._out[-1]["content"] += text
        else:
            self._out.append({"content": text})

    def _start_call(self, name: str) -> None:
        self._held_ws = ""  # whitespace before a call is layout, not content
        call = ToolCall(self._id(), name, "")
        if self.tool_calls:
            # Later calls are held until they end: a small model under a
            # grammar tends to repeat its call, and a repeat must be dropped
            # before any of it has been sent.
            self._pending = call
            return
        self.tool_calls.append(call)
        self._send_header(call)

    def _send_header(self, call: ToolCall) -> None:
        index = len(self.tool_calls) - 1
        self._out.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )

    def _end_call(self, *, truncated: bool = False) -> None:
        """A call's text is complete (or cut off): release a held call unless it repeats one."""
        call, self._pending = self._pending, None
        if call is None:
            return
        for c in self.tool_calls:
            same = _canonical(c.arguments) == _canonical(call.arguments)
            if c.name == call.name and (same or (truncated and c.arguments.startswith(call.arguments))):
                self.errors.append(f"repeated call to {call.name!r} dropped")
                self.stop_requested = True
                return
        self.tool_calls.append(call)
        self._send_header(call)
        if call.arguments:
            index = len(self.tool_calls) - 1
            self._out.append({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]})

    def _emit_args(self, text: str) -> None:
        if not text:
            return
        if self._pending is not None:
            self._pending.arguments += text
            return
        call = self.tool_calls[-1]
        call.arguments += text
        index = len(self.tool_calls) - 1
        last = self._out[-1] if self._out else None
        # The header delta keeps arguments "" as OpenAI sends it; fragments follow.
        if (
            last
            and "tool_calls" in last
            and "id" not in last["tool_calls"][0]
            and last["tool_calls"][0]["index"] == index
        ):
            last["tool_calls"][0]["function"]["arguments"] += text
        else:
            self._out.append({"tool_calls": [{"index": index, "function": {"arguments": text}}]})

    def _final(self) -> None:
        # End of text: trailing whitespace is content only in a message without calls.
        if self._held_ws and not self.tool_calls:
            text, self._held_ws = self._held_ws, ""
            self._content.append(text)
            self._out.append({"content": text})
        self._held_ws = ""


def _canonical(arguments: str) -> str:
    # Arguments compare as JSON values: a repeat with other spacing or key order is a repeat.
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments
