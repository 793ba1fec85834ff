"""What a benchmark sends: the workload's shape and prompts that share no prefix.

Every prompt is new from its first token on (a unique id leads it, then random words): a server
with a prefix cache would otherwise answer later rounds from the cache, and the numbers would
measure the cache, not the batching.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

# Short, common English words: each is one token (with its leading space) in the usual
# tokenizers, so N words make a prompt of about N tokens.
_WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health person "
    "art war history party result change morning reason research girl guy moment air teacher force education"
)
WORDS = _WORDS.split()


@dataclass
class Workload:
    input_tokens: int = 250
    output_tokens: int = 64
    requests_per_client: int = 2
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    endpoint: str = "completions"  # or "chat"
    model: str | None = None  # None: the first id from /v1/models
    api_key: str | None = None
    timeout: float = 600.0
    seed: int = 0
    # context switch: one long conversation, other sessions in between, then a follow-up turn
    switch_history_tokens: int = 1500
    switch_other_sessions: int = 3
    switch_output_tokens: int = 16


class PromptMaker:
    """Fresh prompts, distinct from their first token on.

    The first word is drawn without replacement from the word list in three spellings (300
    distinct first tokens before any repeats), then a run-unique id and the counter follow, so
    even after 300 prompts two never share more than one token of prefix.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.salt = uuid.uuid4().hex[:8]
        self.first = [w for word in WORDS for w in (word, word.title(), word.upper())]
        self.rng.shuffle(self.first)
        self.n = 0

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def prompt(self, tokens: int) -> str:
        lead = self.first[self.n % len(self.first)]
        self.n += 1
        head = f"{lead} {self.n}-{self.salt}. Write a long story using these words:"
        return f"{head} {self.words(max(tokens - 16, 1))}."
