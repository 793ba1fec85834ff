"""Request shaping, off the event loop: a body becomes a validated request, its tool plan, its
prompt tokens and the engine's sampling parameters, or a 400 that names the field."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from clawlan.config import Settings
from clawlan.engine.request import SamplingParams
from clawlan.errors import ContextLengthExceeded, InvalidRequest
from clawlan.server.backend import Backend
from clawlan.server.chat_template import content_text, validate_messages
from clawlan.server.schemas import ChatRequest, CompletionRequest, Sampling, parse
from clawlan.tools.grammar import FAMILIES, GrammarLimits
from clawlan.tools.plan import ToolPlan, plan_request
from clawlan.tools.prompt import prepare_messages

log = logging.getLogger(__name__)
DEFAULT_TOP_K = 40  # as llama-server: sampling over Gemma's 262k vocabulary is slow without it


class Shaper:
    """Turns request bodies into engine requests for one :class:`Backend`."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend

    @staticmethod
    def warnings(plan: ToolPlan | None, endpoint: str) -> dict[str, str]:
        """What the tool plan could not do as asked (with tool_choice auto, a schema it cannot
        enforce is parsed unconstrained): a log line for the operator and an ``X-Clawlan-Warning``
        header for the client, since the request itself succeeds."""
        if plan is None or not plan.warnings:
            return {}
        text = "; ".join(plan.warnings)
        log.warning("%s request: %s", endpoint, text)
        # a header value is one line of latin-1: schema names may be anything
        value = " ".join(text.encode("ascii", "backslashreplace").decode().split())
        return {"X-Clawlan-Warning": value[:1000]}

    def prepare(self, raw: bytes, chat: bool) -> tuple[Any, ToolPlan | None, list[int]]:
        """Body → validated request, tool plan and prompt tokens (on a worker thread)."""
        body = parse(ChatRequest if chat else CompletionRequest, raw)
        if not chat:
            return body, None, self._completion_tokens(body)
        plan = self._tool_plan(body)
        messages = self._prompt_messages(body, plan)
        self._check_prompt_chars(sum(len(content_text(m.get("content"))) for m in messages))
        pieces = self.backend.template.render_segments(messages)
        self._check_prompt_chars(sum(len(t) for t, _ in pieces))
        return body, plan, self.backend.tokenize_segments(pieces)

    def _check_prompt_chars(self, n: int) -> None:
        limit = self.settings.server.max_prompt_chars
        if n > limit:
            raise InvalidRequest(
                f"the prompt is {n} characters; this server accepts at most {limit} (server.max_prompt_chars)",
                param="messages",
                code="prompt_too_long",
            )

    def _tool_plan(self, body: ChatRequest) -> ToolPlan | None:
        """Tools, tool_choice and response_format as a grammar, prompt text and output parser."""
        if not body.tools and not body.response_format and body.tool_choice is None:
            return None
        s = self.settings.server
        family = self.backend.template.family
        fields = {"tools", "tool_choice", "parallel_tool_calls", "response_format"}
        spec = body.model_dump(include=fields, exclude_none=True)
        size = len(json.dumps([spec.get("tools"), spec.get("response_format")]))
        if size > s.max_schema_bytes:
            raise InvalidRequest(
                f"tools and response_format are {size} bytes of JSON; this server accepts at most "
                f"{s.max_schema_bytes} (server.max_schema_bytes)",
                param="tools" if spec.get("tools") else "response_format",
                code="schema_too_large",
            )
        limits = GrammarLimits(
            max_depth=s.max_schema_depth,
            max_grammar_bytes=s.max_grammar_bytes,
            deadline=time.monotonic() + s.grammar_timeout_ms / 1000.0,
        )
        return plan_request(spec, family if family in FAMILIES else "chatml", limits)

    def _prompt_messages(self, body: ChatRequest, plan: ToolPlan | None) -> list[dict[str, Any]]:
        """Messages for the template; tool calls and results become text where it has no tool syntax."""
        validate_messages(body.messages)
        template = self.backend.template
        if plan is not None:
            return plan.prompt_messages(body.messages) if plan.tools or not template.native_tools else body.messages
        has_tools = any(m.get("role") == "tool" or m.get("tool_calls") for m in body.messages)
        if has_tools and not template.native_tools:
            family = template.family if template.family in FAMILIES else "chatml"
            return prepare_messages(body.messages, family, tools=[], tool_choice="none")
        return body.messages

    def _completion_tokens(self, body: CompletionRequest) -> list[int]:
        p = body.prompt
        if isinstance(p, list) and not p:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        if isinstance(p, list) and all(isinstance(t, int) for t in p):
            n_vocab = self.backend.model.n_vocab
            bad = next((t for t in p if not 0 <= t < n_vocab), None)  # type: ignore[operator]
            if bad is not None:
                raise InvalidRequest(f"prompt token id {bad} is outside the vocabulary (0..{n_vocab - 1})", param="prompt")
            return list(p)  # type: ignore[arg-type]
        if isinstance(p, list):
            if len(p) != 1:
                raise InvalidRequest("prompt arrays with more than one prompt are not supported", param="prompt")
            p = p[0]
        self._check_prompt_chars(len(str(p)))
        return self.backend.tokenize_prompt(str(p))

    def params(self, body: Sampling, limit: int | None, n_prompt: int) -> SamplingParams:
        ctx = self.backend.plan.max_context
        if n_prompt >= ctx or (limit is not None and n_prompt + limit > ctx):
            want = n_prompt + (limit or 0)
            raise ContextLengthExceeded(
                f"This model's maximum context length is {ctx} tokens. However, you requested {want} tokens "
                f"({n_prompt} in the messages, {limit or 0} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="messages",
            )
        if body.n != 1:
            raise InvalidRequest("n > 1 is not supported; send n separate requests", param="n")
        stop = body.stop_list()
        if limit is None:
            # No max_tokens: the server's cap (server.default_max_tokens), so a model that never
            # stops cannot hold a slot for a whole context; 0 means the context is the cap.
            cap = self.settings.server.default_max_tokens
            limit = min(cap, ctx - n_prompt) if cap else ctx - n_prompt
        return SamplingParams(
            max_tokens=limit,
            temperature=body.temperature,
            top_k=body.top_k or DEFAULT_TOP_K,
            top_p=body.top_p,
            min_p=body.min_p,
            seed=body.seed,
            repeat_penalty=body.repeat_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            stop=stop,
            stop_token_ids=[] if body.ignore_eos else list(self.backend.end_of_turn),
            ignore_eos=body.ignore_eos,
            logprobs=body.logprobs_k,
        )
