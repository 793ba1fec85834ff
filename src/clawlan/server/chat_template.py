"""Chat messages to a prompt: the GGUF's own Jinja template, or a built-in one.

The model's ``tokenizer.chat_template`` runs in Jinja's immutable sandbox, so
a template shipped inside a model file cannot reach Python. Files without a
template (the embedded Gemma 3 270M base has none) get a built-in template
for their family.

Before rendering, messages are normalised to what real clients send and
strict templates refuse:

- content given as an array of text parts is joined into one string;
- the ``developer`` role is treated as ``system``;
- consecutive messages of the same role are merged (Clawdbot sends two user
  messages in a row every turn, and Gemma's template rejects that);
- assistant ``tool_calls`` and ``tool`` results are kept for templates that
  understand them; for the others ``clawlan.tools.prompt`` has already
  rendered them as text in the family's call syntax.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from clawlan.errors import InvalidRequest
from clawlan.messages import content_text

log = logging.getLogger(__name__)

# Built-in templates, written for clawlan. Each expects normalised messages; ``turns`` is
# messages without the system ones, for families that fold the system text into the first turn.
GEMMA = (
    "{{ bos_token }}"
    "{% for m in turns %}"
    "<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{% if loop.first and system %}{{ system }}\n\n{% endif %}"
    "{{ m.content | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "<|start_header_id|>{{ 'ipython' if m.role == 'tool' else m.role }}<|end_header_id|>\n\n"
    "{{ m.content | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}"
    "{% for m in turns %}"
    "{% if m.role == 'assistant' %}{{ m.content }}{{ eos_token }}"
    "{% else %}[INST] {% if loop.first and system %}{{ system }}\n\n{% endif %}{{ m.content }}[/INST]{% endif %}"
    "{% endfor %}"
)
BUILTIN = {"gemma": GEMMA, "chatml": CHATML, "llama3": LLAMA3, "mistral": MISTRAL}
# Text that ends an assistant turn in each family, besides the model's end-of-generation tokens.
TURN_END = {"gemma": "<end_of_turn>", "chatml": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>"}
# A new turn starting also ends the answer: a base model (the embedded Gemma) often skips the end marker.
TURN_START = {"gemma": "<start_of_turn>", "chatml": "<|im_start|>", "llama3": "<|start_header_id|>", "mistral": "[INST]"}


def detect_family(template: str | None, architecture: str) -> str:
    """The prompt family of a template (or of a model without one, by architecture)."""
    if template:
        if "<start_of_turn>" in template:
            return "gemma"
        if "<|start_header_id|>" in template:
            return "llama3"
        if "[INST]" in template:
            return "mistral"
        if "<|im_start|>" in template:
            return "chatml"
        return "custom"
    if architecture.startswith("gemma"):
        return "gemma"
    if architecture == "llama":
        return "llama3"
    return "chatml"


ROLES = ("system", "developer", "user", "assistant", "tool")


def validate_messages(messages: list[dict[str, Any]]) -> None:
    """Check a request's messages before anything reads them; a bad one is a 400 naming it."""
    if not messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.get("role") not in ROLES:
            raise InvalidRequest(f"{where}.role is {m.get('role')!r}; use {', '.join(ROLES)}", param=f"{where}.role")
        content_text(m.get("content"), where)
        calls = m.get("tool_calls")
        if calls is None:
            continue
        if not isinstance(calls, list):
            raise InvalidRequest(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InvalidRequest(
                    f"{where}.tool_calls[{j}] must be {{type: 'function', function: {{name, arguments}}}}",
                    param=f"{where}.tool_calls",
                )
            if not isinstance(fn.get("arguments", ""), str | dict):
                raise InvalidRequest(
                    f"{where}.tool_calls[{j}].function.arguments must be a JSON string", param=f"{where}.tool_calls"
                )


def normalize(messages: list[dict[str, Any]], native_tools: bool) -> list[dict[str, Any]]:
    """Clean messages as described in the module docstring (they passed validate_messages)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = "system" if m.get("role") == "developer" else m.get("role")
        text = content_text(m.get("content"), where)
        msg: dict[str, Any] = {"role": role, "content": text}
        # Templates without tool syntax never see these: clawlan.tools.prompt flattened them to text.
        if native_tools and role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        if native_tools and role == "tool":
            msg["tool_call_id"] = m.get("tool_call_id")
            if m.get("name"):
                msg["name"] = m["name"]
        prev = out[-1] if out else None
        if prev and prev["role"] == msg["role"] and "tool_calls" not in prev and "tool_calls" not in msg and msg["role"] != "tool":
            prev["content"] = (prev["content"] + "\n\n" + msg["content"]) if prev["content"] else msg["content"]
        else:
            out.append(msg)
    return out


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass
class ChatTemplate:
    source: str
    family: str
    bos_token: str
    eos_token: str
    from_model: bool

    def __post_init__(self) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(self.source)
        except TemplateError as exc:
            raise InvalidRequest(f"the model's chat template does not compile: {exc}") from None
        # Templates from model files that mention tools get the structured form; ours get text.
        self.native_tools = self.from_model and "tool" in self.source

    @property
    def stop_markers(self) -> list[str]:
        """Special tokens that end an assistant turn in this family."""
        return [m for m in (TURN_END.get(self.family), TURN_START.get(self.family)) if m]

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = True) -> str:
        return self._render(normalize(messages, self.native_tools), tools, add_generation_prompt)

    def render_segments(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = True
    ) -> list[tuple[str, bool]]:
        """The prompt as ``(text, special)`` pieces: the template's own text may hold special
        tokens, message text may not (see :func:`segments`). Joined, the pieces are exactly
        :meth:`render`'s prompt."""
        msgs = normalize(messages, self.native_tools)
        prompt = self._render(msgs, tools, add_generation_prompt)
        marked = [{**m, "content": _sentinel(i)} if _plain_text(m) else m for i, m in enumerate(msgs)]
        skeleton = self._render(marked, tools, add_generation_prompt)
        return segments(prompt, skeleton, msgs)

    def _render(self, msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None, add_generation_prompt: bool) -> str:
        system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
        try:
            return self._template.render(
                messages=msgs,
                turns=[m for m in msgs if m["role"] != "system"],
                system=system,
                tools=tools if self.native_tools else None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise InvalidRequest(f"the chat template refused these messages: {exc}", param="messages") from None


# Message text is marked for a second render by a private-use sentinel inside padding that
# Jinja's trim removes (U+2003 EM SPACE, U+2028 LINE SEPARATOR), so a template that trims the
# content shows it by dropping the padding.
_LEFT, _RIGHT = "\u2003\u2028", "\u2028\u2003"
_MARK = re.compile("(\u2003\u2028)?\ue000([0-9]+)\ue001(\u2028\u2003)?")


def _sentinel(i: int) -> str:
    return f"{_LEFT}\ue000{i}\ue001{_RIGHT}"


def _plain_text(m: dict[str, Any]) -> bool:
    # A user's, a document's or a tool's words; assistant text is the model's own (its tool-call
    # markers must stay tokens), and empty content stays empty so templates branch alike.
    return m["role"] != "assistant" and bool(m["content"])


def segments(prompt: str, skeleton: str, msgs: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Split ``prompt`` into template text (special) and message text (not special).

    ``skeleton`` is the same render with each plain message's content replaced by its
    sentinel. Message text is tokenized without special-token parsing, so a user who types
    ``<end_of_turn><start_of_turn>model`` writes those characters, not a forged turn. A
    template that does more to the text than trim it (the pieces would not join to the
    prompt) falls back to one special piece: the old behaviour, logged.
    """
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in _MARK.finditer(skeleton):
        text = msgs[int(m.group(2))]["content"]
        if m.group(1) is None:
            text = text.lstrip()
        if m.group(3) is None:
            text = text.rstrip()
        out.append((skeleton[pos : m.start()], True))
        out.append((text, False))
        pos = m.end()
    out.append((skeleton[pos:], True))
    if "".join(t for t, _ in out) != prompt:
        log.debug("the chat template transforms message text; its special tokens are parsed as before")
        return [(prompt, True)]
    return [(t, special) for t, special in out if t]


def load_template(model_template: str | None, architecture: str, bos: str, eos: str, override: str | None = None) -> ChatTemplate:
    """The template for a model: an explicit override, the GGUF's own, or a built-in one."""
    if override:
        src = BUILTIN.get(override, override)
        return ChatTemplate(src, override if override in BUILTIN else detect_family(src, architecture), bos, eos, from_model=False)
    if model_template:
        return ChatTemplate(model_template, detect_family(model_template, architecture), bos, eos, from_model=True)
    family = detect_family(None, architecture)
    return ChatTemplate(BUILTIN[family], family, bos, eos, from_model=False)
