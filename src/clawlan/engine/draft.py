"""Prompt-lookup drafting: guess a sequence's next tokens from its own earlier text.

Answers repeat their context: a summary quotes the document, an edited function
repeats most of the original, a list repeats its own markup. If the last few
tokens appeared before, the tokens that followed them then are a cheap guess at
what follows now. The engine feeds the guess (the *draft*) with the sequence's
pending token in one ``llama_decode`` and keeps the longest run the model agrees
with (speculative decoding; see the scheduler and runner). A wrong guess costs
only the extra rows of that step, and the output is what plain decoding gives.

No second model is involved, so this works on any GGUF; vLLM calls it ``ngram``
speculation, llama.cpp ``ngram-simple``.
"""

from __future__ import annotations

NGRAM_MAX = 3  # longest suffix looked up; longer matches predict better
NGRAM_MIN = 2  # a single repeated token predicts too little to be worth a row of its own...
# ...but it beats a row that is paid for anyway: with one KV stream per sequence every decoder
# feeds the step's draft length (the scheduler's even drafts), and a guess from the last token
# alone is right far more often than padding.
NGRAM_SHORTEST = 1


class NgramIndex:
    """Where each short n-gram of a token list last occurred, kept up to date incrementally.

    ``_next[g]`` is the position just after the latest occurrence of n-gram ``g``
    that ends before the list's last token, so a lookup never finds the suffix
    itself. Appending a token costs ``NGRAM_MAX`` dict writes; a 15k-token
    prompt is indexed once, on its first decode step.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[int, ...], int] = {}
        self._upto = 0  # n-grams ending before this position are indexed

    def _sync(self, tokens: list[int]) -> None:
        end = len(tokens) - 1  # the last token's n-grams are the query, not the index
        nxt = self._next
        for i in range(self._upto, end):
            for n in range(NGRAM_SHORTEST, NGRAM_MAX + 1):
                if i + 1 >= n:
                    nxt[tuple(tokens[i + 1 - n : i + 1])] = i + 1
        self._upto = max(self._upto, end)

    def propose(self, tokens: list[int], k: int, shortest: int = NGRAM_MIN) -> list[int]:
        """``k`` tokens that followed the longest earlier match of the list's suffix, a match
        of at least ``shortest`` tokens.

        When the match is recent, fewer than ``k`` tokens follow it: the text since then is
        taken as a loop and repeated (a list's markup, a repeated phrase). Without that, a
        loop of period ``p`` could never be drafted more than ``p`` tokens ahead, and loops
        are where drafts hold longest.
        """
        if k <= 0:
            return []
        self._sync(tokens)
        for n in range(NGRAM_MAX, max(shortest, NGRAM_SHORTEST) - 1, -1):
            if len(tokens) <= n:
                continue
            at = self._next.get(tuple(tokens[-n:]))
            if at is not None:
                period = len(tokens) - at
                return [tokens[at + j % period] for j in range(k)]
        return []
