"""OpenAI request bodies, validated with pydantic.

Unknown fields are ignored (clients send many, such as ``store`` or
``metadata``), but every field we use is type- and range-checked, and a bad
one becomes a 400 whose message and ``param`` name it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clawlan.errors import InvalidRequest


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(1.0, gt=0.0)
    n: int = Field(1, ge=1)
    ignore_eos: bool = False  # as llama-server: generate to max_tokens (benchmarks, tests)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 16:
            raise InvalidRequest("stop accepts at most 16 strings", param="stop")
        return stops


class ChatRequest(Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)  # OpenAI's range

    @property
    def output_limit(self) -> int | None:
        # max_completion_tokens is the newer name; either is accepted, the newer wins.
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_k(self) -> int | None:
        """None: no log probabilities; k: each token's and the k most likely beside it."""
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's completions default
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)  # OpenAI's range for the legacy endpoint
    suffix: str | None = None

    # Refused rather than ignored: a client that asks for them would get a silently different answer.
    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported; the response holds the completion only")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        return v

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens

    @property
    def logprobs_k(self) -> int | None:
        return self.logprobs


# Deeper JSON than any real request (a tool schema nested 16 subschemas deep is about 40
# levels); beyond it a body is refused before anything walks it recursively.
MAX_JSON_DEPTH = 100


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return deepest


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """Parse and validate a JSON body, or raise InvalidRequest naming the field."""
    try:
        data = json.loads(raw or b"null")
    except RecursionError:
        raise InvalidRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        # JSONDecodeError, and ValueError for a number past Python's 4,300-digit limit.
        raise InvalidRequest(f"the request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        got = json.dumps(err.get("input"), default=str)
        if len(got) > 80:
            got = got[:77] + "..."
        msg = err["msg"] if err["type"] != "missing" else "Field required"
        raise InvalidRequest(f"invalid value for '{loc}': {msg} (got {got})", param=loc) from None

