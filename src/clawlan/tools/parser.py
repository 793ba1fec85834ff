"""Tool calls out of generated text, streamed or whole.

Each chat-template family has its own call syntax (see docs/tools.md):

* ``hermes`` (ChatML, Qwen, Hermes): ``<tool_call>{"name": …, "arguments": …}</tool_call>``,
  one block per call.
* ``llama3``: ``{"name": …, "parameters": …}`` as the whole message, optionally after
  ``<|python_tag|>``; several calls separated by ``;``.
* ``mistral``: ``[TOOL_CALLS][{"name": …, "arguments": …}, …]`` or the newer
  ``[TOOL_CALLS]name[ARGS]{…}``.
* ``gemma``: a fenced block per call, ```` ```tool_call\\n{"name": …, "arguments": …}\\n``` ````
  (Gemma 3 has no tool tokens; this is what :mod:`clawlan.tools.prompt` asks it for).

:class:`ToolCallStreamParser` takes text deltas and returns OpenAI ``delta``
dicts: ``{"content": …}`` or ``{"tool_calls": […]}``, in OpenAI's exact shape.
Text that may be the start of a call is held back until it is known to be one
or not, so call syntax never leaks into content. :func:`parse_tool_calls` is
the same machine run over the whole text, so streamed and whole results agree
by construction. Every decision depends only on the text seen so far, which
makes the output independent of how the text is split into deltas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from clawlan.tools.calls import ID_CHARS, CallWriter, ParsedOutput, ToolCall, new_call_id
from clawlan.tools.grammar import FAMILIES
from clawlan.tools.json_scan import WS, JsonScanner, unescape_json_string

__all__ = ["ParsedOutput", "ToolCall", "ToolCallStreamParser", "new_call_id", "parse_tool_calls"]

# The call object with its name first: once this much is seen the call is
# certain, its header can go out and the arguments can stream.
_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')

_OPENERS = {
    "hermes": ["<tool_call>"],
    "gemma": ["```tool_call"],
    "mistral": ["[TOOL_CALLS]"],
    "llama3": ["<|python_tag|>"],
}
_CLOSERS = {"hermes": "</tool_call>", "gemma": "```"}


class ToolCallStreamParser(CallWriter):
    """Splits a family's generated text into content and tool-call deltas.

    This is the reading half, a state machine over the family's call syntax; what it finds goes
    out through :class:`~clawlan.tools.calls.CallWriter`'s methods (``_emit_content``,
    ``_start_call``, ``_emit_args``, ``_end_call``).

    ``feed(text)`` and ``finish()`` return lists of OpenAI delta dicts. After
    ``finish()``, :attr:`content`, :attr:`tool_calls` and :attr:`errors` hold
    the whole result. ``id_factory`` makes call ids (tests pass a counter).
    """

    def __init__(self, family: str, *, id_factory: Callable[[], str] = new_call_id) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown template family {family!r}")
        self.syntax = FAMILIES[family]
        super().__init__(id_factory)
        self._openers = _OPENERS[self.syntax]
        self._buf = ""
        self._state = "text"
        self._finished = False
        # Per-call state.
        self._scan: JsonScanner | None = None
        self._args_from = 0  # start of the arguments text not yet emitted
        self._committed = False
        self._string_args: bool | None = None  # None until the value's first character is seen
        self._after_args = "object_tail"
        self._in_array = False
        self._bare = False
        self._opener = ""  # the opener that began the current call syntax

    # -- public -----------------------------------------------------------
    def feed(self, text: str) -> list[dict[str, Any]]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._buf += text
        while self._step():
            pass
        return self._take()

    def finish(self) -> list[dict[str, Any]]:
        if not self._finished:
            self._finished = True
            while self._step():
                pass
            self._final()
        return self._take()

    # -- the machine --------------------------------------------------------
    def _step(self) -> bool:
        """Advance one decision; True when something changed and another step may help."""
        return getattr(self, "_st_" + self._state)()

    def _st_text(self) -> bool:
        buf = self._buf
        if not buf:
            return False
        if self.syntax == "llama3" and not self._content and not self.tool_calls:
            # Llama 3 writes a bare JSON call as the whole message.
            stripped = buf.lstrip(WS)
            if not stripped:
                return self._wait_or(lambda: self._flush_text(len(buf)))
            if stripped[0] == "{":
                self._buf = stripped
                self._begin_object(bare=True)
                return True
        hit, opener = -1, ""
        for op in self._openers:
            i = buf.find(op)
            if i >= 0 and (hit < 0 or i < hit):
                hit, opener = i, op
        if hit >= 0:
            self._emit_content(buf[:hit])
            self._buf = buf[hit + len(opener) :]
            self._opener = opener
            self._state = "after_opener"
            return True
        keep = 0 if self._finished else _partial_suffix(buf, self._openers)
        return self._flush_text(len(buf) - keep)

    def _flush_text(self, upto: int) -> bool:
        if upto <= 0:
            return False
        self._emit_content(self._buf[:upto])
        self._buf = self._buf[upto:]
        return False

    def _wait_or(self, action: Callable[[], bool]) -> bool:
        return action() if self._finished else False

    def _not_a_call(self) -> bool:
        """The opener was prose after all: give it back as content and look further."""
        self._emit_content(self._opener)
        self._in_array = False
        self._state = "text"
        return True

    def _st_after_opener(self) -> bool:
        stripped = self._buf.lstrip(WS)
        if not stripped:
            return self._wait_or(self._drop_unfinished)
        if self.syntax == "mistral":
            if stripped[0] == "[":
                self._buf = stripped[1:]
                self._in_array = True
                self._state = "array_item"
                return True
            if stripped[0].isalnum() or stripped[0] == "_":
                self._buf = stripped
                self._state = "mistral_name"
                return True
            return self._not_a_call()
        if stripped[0] != "{":
            return self._not_a_call()
        self._buf = stripped
        self._begin_object(bare=False)
        return True

    def _begin_object(self, *, bare: bool) -> None:
        self._bare = bare
        self._committed = False
        self._after_args = "object_tail"
        self._scan = JsonScanner(0)
        self._state = "object"

    def _st_object(self) -> bool:
        """A call object ``{"name": …, "arguments": …}`` at the start of the buffer."""
        assert self._scan is not None
        if not self._committed:
            head = _HEAD.match(self._buf)
            if head:
                self._start_call(unescape_json_string(head.group(1)))
                self._committed = True
                self._args_from = head.end()
                self._string_args = None
                self._scan = JsonScanner(head.end())
                self._state = "args"
                return True
            self._scan.advance(self._buf)
            if self._scan.bad:
                return self._object_failed("not a JSON object")
            if self._scan.end is None:
                return self._wait_or(self._drop_unfinished)
            end = self._scan.end
            try:
                obj = json.loads(self._buf[:end])
            except ValueError:
                return self._object_failed("invalid JSON")
            name, args = _call_fields(obj)
            if name is None:
                return self._object_failed("a JSON object that is not a call")
            self._start_call(name)
            self._emit_args(args)
            self._end_call()
            self._buf = self._buf[end:]
            self._state = "after_object"
            return True
        return False

    def _st_args(self) -> bool:
        """Stream the arguments value; then skip to the call object's closing brace."""
        assert self._scan is not None
        if self._string_args is None:
            # Skip the whitespace before the value, however the deltas split it.
            rest = self._buf[self._args_from :]
            value = rest.lstrip(WS)
            if not value:
                return self._wait_or(self._drop_unfinished)
            self._args_from += len(rest) - len(value)
            self._string_args = value.startswith('"')
        self._scan.advance(self._buf)
        if self._scan.bad:
            self.errors.append("tool call arguments are not valid JSON")
            self._emit_args(self._buf[self._args_from : self._scan.pos - 1])
            self._end_call()
            self._buf = self._buf[self._scan.pos :]
            self._state = "text"
            return True
        if self._scan.end is None:
            if not self._string_args and self._scan.started:
                # Stream what is here; a string value waits to be decoded whole.
                self._emit_args(self._buf[self._args_from : self._scan.pos])
                self._args_from = self._scan.pos
            return self._wait_or(self._drop_unfinished)
        end = self._scan.end
        raw = self._buf[self._args_from : end]
        if self._string_args:
            try:
                raw = json.loads(raw.strip())
            except ValueError:
                self.errors.append("tool call arguments are an invalid JSON string")
        self._emit_args(raw.strip() if self._string_args else raw)
        if self._after_args == "text":  # Mistral's name[ARGS]{…} has no object around it
            self._end_call()
            self._buf = self._buf[end:]
            self._state = "text"
            return True
        # The rest of the call object (maybe an "id" key) up to its closing brace.
        self._scan = JsonScanner(end, depth=1)
        self._state = "object_tail"
        return True

    def _st_object_tail(self) -> bool:
        assert self._scan is not None
        self._scan.advance(self._buf)
        if self._scan.bad:
            self.errors.append("tool call object is not valid JSON after its arguments")
            self._end_call()
            self._buf = self._buf[self._scan.pos :]
            self._state = "text"
            return True
        if self._scan.end is None:
            return self._wait_or(self._drop_unfinished)
        self._end_call()
        self._buf = self._buf[self._scan.end :]
        self._state = "after_object"
        return True

    def _st_after_object(self) -> bool:
        """Framing after a call: a closer, the next array item, or the next Llama call."""
        stripped = self._buf.lstrip(WS)
        if self._in_array:
            if not stripped:
                return self._wait_or(self._end_frame)
            self._buf = stripped[1:]
            if stripped[0] == ",":
                self._state = "array_item"
            else:
                if stripped[0] != "]":
                    self._buf = stripped
                    self.errors.append("[TOOL_CALLS] array not closed")
                self._in_array = False
                self._state = "text"
            return True
        if self.syntax == "llama3":
            if not stripped:
                return self._wait_or(self._end_frame)
            if stripped[0] == ";":
                stripped = stripped[1:].lstrip(WS)
                if not stripped:
                    self._buf = ";"
                    return self._wait_or(self._end_frame)
            if stripped[0] == "{":
                self._buf = stripped
                self._begin_object(bare=True)
                return True
            self._state = "text"
            return True
        closer = _CLOSERS.get(self.syntax)
        if closer:
            if stripped.startswith(closer):
                self._buf = stripped[len(closer) :]
                self._state = "text"
                return True
            if closer.startswith(stripped) and not self._finished:
                return False
        self._state = "text"
        return True

    def _st_array_item(self) -> bool:
        stripped = self._buf.lstrip(WS)
        if not stripped:
            return self._wait_or(self._drop_unfinished)
        self._buf = stripped
        if stripped[0] == "]":
            self._buf = stripped[1:]
            self._in_array = False
            self._state = "text"
            return True
        if stripped[0] != "{":
            self.errors.append("[TOOL_CALLS] array holds something other than call objects")
            self._in_array = False
            self._state = "text"
            return True
        self._begin_object(bare=False)
        return True

    def _st_mistral_name(self) -> bool:
        m = re.match(r"([A-Za-z0-9_.\-]+)(?:\[CALL_ID\][A-Za-z0-9]*)?\[ARGS\]", self._buf)
        if m:
            self._start_call(m.group(1))
            self._committed = True
            self._args_from = m.end()
            self._string_args = None
            self._scan = JsonScanner(m.end())
            self._state = "args"
            self._after_args = "text"
            return True
        rest = self._buf[re.match(r"[A-Za-z0-9_.\-]*", self._buf).end() :]  # type: ignore[union-attr]
        if rest.startswith("[CALL_ID]"):
            rest = rest[9:].lstrip(ID_CHARS)
        if "[ARGS]".startswith(rest) or "[CALL_ID]".startswith(rest):
            return self._wait_or(self._drop_unfinished)
        return self._not_a_call()

    def _object_failed(self, why: str) -> bool:
        if self._bare:
            # Llama 3's bare JSON that is not a call is an ordinary JSON answer.
            # Only the object itself goes out here, so what follows it is read
            # the same way whatever the split.
            assert self._scan is not None
            upto = self._scan.end if self._scan.end is not None else self._scan.pos
            self._state = "text"
            self._bare = False
            text, self._buf = self._buf[:upto], self._buf[upto:]
            self._emit_content(text)
            return True
        self.errors.append(f"text after {self._opener!r} is {why}")
        return self._not_a_call()

    def _drop_unfinished(self) -> bool:
        """End of text inside call syntax: keep what streamed, never leak the rest."""
        if self._state == "object" and self._bare and not self._committed:
            text, self._buf = self._buf, ""
            self._emit_content(text)
        elif self._state in ("args",) and not self._string_args:
            self.errors.append("tool call cut off before its arguments ended")
        elif self._buf.strip() or self._state != "after_opener":
            self.errors.append("text ended inside a tool call")
        if self._state != "object" or not self._bare:
            self._held_ws = ""  # layout before the dropped call syntax
        self._end_call(truncated=True)
        self._buf = ""
        self._state = "done"
        return False

    def _end_frame(self) -> bool:
        if self._buf.strip(WS) == ";":  # a trailing Llama separator
            self._buf = ""
        self._in_array = False
        self._state = "text"
        return True

    def _st_done(self) -> bool:
        return False


def _partial_suffix(text: str, openers: list[str]) -> int:
    """Length of the longest tail of ``text`` that begins some opener."""
    best = 0
    for op in openers:
        for n in range(min(len(op) - 1, len(text)), best, -1):
            if op.startswith(text[-n:]):
                best = n
                break
    return best


def _call_fields(obj: Any) -> tuple[str | None, str]:
    """(name, arguments JSON text) of a parsed call object, or (None, "") if it is not one."""
    if not isinstance(obj, dict):
        return None, ""
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return None, ""
    for key in ("arguments", "parameters"):
        if key in fn:
            args = fn[key]
            if isinstance(args, str):
                return name, args
            return name, json.dumps(args, ensure_ascii=False)
    return None, ""


def parse_tool_calls(text: str, family: str, *, id_factory: Callable[[], str] = new_call_id) -> ParsedOutput:
    """Content and tool calls of a whole generated message."""
    parser = ToolCallStreamParser(family, id_factory=id_factory)
    parser.feed(text)
    parser.finish()
    return parser.result()
