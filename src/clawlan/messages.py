"""OpenAI chat messages: the helpers both the server and the tool-calling code read.

Both :mod:`clawlan.server.chat_template` (rendering a prompt) and :mod:`clawlan.tools.prompt`
(tool calls and results as text) need a message's content as one string, with the same
refusal of parts this text-only server cannot read; it lives here, below both, so neither
imports the other.
"""

from __future__ import annotations

from typing import Any

from clawlan.errors import InvalidRequest


def content_text(content: Any, where: str = "message") -> str:
    """A message's content as one string: a string, null, or an array of text parts.

    Any other part (an image, audio) is a 400 naming it, ``where`` being the message's place
    in the request (``messages[2]``).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(
                    f"{where}.content[{i}] has type {kind!r}; this model accepts only text parts",
                    param=f"{where}.content",
                )
        return "\n".join(parts)
    raise InvalidRequest(f"{where}.content must be a string or an array of text parts", param=f"{where}.content")
