"""The engine's token log probabilities in OpenAI's two response shapes.

Chat (``logprobs: true, top_logprobs: k``): ``choices[].logprobs.content[]`` with ``token``,
``logprob``, ``bytes`` and ``top_logprobs[]``. Legacy completions (``logprobs: k``): parallel
lists ``tokens``, ``token_logprobs``, ``top_logprobs`` (one ``{token: logprob}`` per token) and
``text_offset`` (each token's character offset in the completion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clawlan.engine.request import TokenLogprob

Piece = Callable[[int], bytes]  # a token id's bytes (the model's detokenizer)


def token_text(piece: Piece, token: int) -> tuple[str, list[int]]:
    """A token as text and bytes; a token that holds part of a UTF-8 character shows U+FFFD,
    as OpenAI's does, and its ``bytes`` keep the exact value."""
    raw = piece(token)
    return raw.decode("utf-8", errors="replace"), list(raw)


def chat_content(lps: list[TokenLogprob], piece: Piece) -> list[dict[str, Any]]:
    out = []
    for lp in lps:
        text, raw = token_text(piece, lp.token)
        top = []
        for t, v in lp.top:
            tt, tb = token_text(piece, t)
            top.append({"token": tt, "logprob": v, "bytes": tb})
        out.append({"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top})
    return out


class CompletionLogprobs:
    """Builds the legacy shape across a stream's chunks (``text_offset`` runs on)."""

    def __init__(self, piece: Piece) -> None:
        self.piece = piece
        self.offset = 0

    def block(self, lps: list[TokenLogprob]) -> dict[str, Any]:
        tokens, values, tops, offsets = [], [], [], []
        for lp in lps:
            text = token_text(self.piece, lp.token)[0]
            tokens.append(text)
            values.append(lp.logprob)
            tops.append({token_text(self.piece, t)[0]: v for t, v in lp.top})
            offsets.append(self.offset)
            self.offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
