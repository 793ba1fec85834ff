"""Which sequences run in each engine step.

Policy, in order:

1. **Admission** is FCFS. A waiting sequence is admitted while fewer than
   ``batch`` sequences run and the KV cache can hold its uncomputed tokens
   (counting cells that evicting idle cache entries would free).
2. **Decoding sequences first**: each gets one token per step, so a long
   prompt arriving never freezes running streams.
3. **Chunked prefill** fills the rest of the step's token budget with prompt
   chunks, oldest request first. With ``mix_prefill`` off (the default),
   prompt chunks and decoders take turns in separate steps instead: in one
   unified KV cache, a decode row inside a prefill chunk makes the whole
   chunk's attention span every sequence's cells, and on 2 CPU cores a mixed
   step (7 decoders + 250 prompt tokens) took 362 ms against 59 + 256 ms
   apart. Decoders still get a token every other step during a long prompt.
4. **KV pressure**: idle prefix-cache entries are evicted first; if cells
   still run out, the newest running sequence is preempted. It keeps its
   tokens and is recomputed when readmitted, so it resumes where it stopped.
5. **max_wait_ms**: when the engine is idle and a request arrives, it waits
   up to that long (or until a full batch is waiting) so arrivals prefill
   together; not for a prompt that fills a step alone or is mostly cached.
6. **Out of memory**: when ``llama_decode`` finds no KV slot (status 1), idle
   cache entries go first; with none left the effective batch drops by one
   (the seed's "lower batch_size step by step from 8") and the newest
   sequence is preempted, its KV dropped. When the device cannot allocate the
   step's buffers (status -2, ggml's ALLOC_FAILED: "CUDA out of memory"), the
   effective batch is halved (down to 1; alone, the prompt chunk is halved).
   The step is retried. (-3 is a failed computation, not memory: its step's
   requests end with an error.)
7. **Drafts** (speculative decoding): a decoder whose recent text repeats
   earlier text gets a guess at its next tokens (:mod:`clawlan.engine.draft`)
   fed in the same step. Every drafted token adds an output row through the
   vocabulary projection, the dearest part of a decode step on a CPU, so the
   rows of a step are capped at ``draft_rows``: one decoder alone drafts up
   to ``draft_tokens``, a full batch of eight about one each. A sequence whose
   guesses fail drafts less, one whose guesses hold drafts more.
8. **One KV stream per sequence** (``KVCache.streams``, when every sequence's
   context fits a stream of its own): llama.cpp runs a batch as one
   micro-batch only when its sequences are consecutive ids in id order with
   equal token counts; otherwise it splits it, and each part pays a step's
   fixed cost (8 sequences x 2 tokens: 56 ms in order, 154 ms shuffled). So a
   step's chunks are put in id order, every decoder drafts the same number of
   tokens (the median of their own drafts' lengths, rounded so that output rows
   come in fours; each decoder fills it with its best guess, down to a one-token
   match), and prompt chunks ride in the decode step (llama.cpp runs them as a micro-batch of their own; mixing
   costs nothing here, 304 ms against 296 ms apart). What of this a backend
   gets (fillers and rounded rows on a CPU only) is :mod:`clawlan.engine.policy`'s.
9. **Overlap** (the policy's ``overlap``, a GPU's): while step N computes, step N+1 is
   scheduled as if N's tokens were in (:meth:`Scheduler.prepare_next`): each sequence
   sampling in N holds ``PENDING`` for its token while that is scheduled, and so do the
   prepared step's chunk and cell for it until ``append_token`` puts the real token in. A
   sequence that ends at N (stop, length, cancel, error) leaves the prepared step before it is
   decoded, and one that reaches its length limit at N is not put in it at all. Preparing never preempts: where it
   would have to, nothing is prepared and N+1 is scheduled after N's read, as without overlap.
   Sequences admitted by the prepared step took slots freed before N's read: one freed by a
   sequence ending at N is refilled a step later.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from clawlan.engine.draft import NGRAM_MIN, NGRAM_SHORTEST, NgramIndex
from clawlan.engine.kv_cache import KVCache
from clawlan.engine.policy import StepPolicy, cpu_policy
from clawlan.engine.sequence import Sequence, Status

log = logging.getLogger(__name__)

PENDING = -1  # the token of a sequence sampling in the step now computing (overlap): known after its read


@dataclass
class Chunk:
    seq: Sequence
    start: int  # position of the first token fed
    n: int  # tokens fed, the draft included
    draft: list[int] = field(default_factory=list)  # guessed tokens fed after the sequence's own

    # Fixed when the chunk is made (the sequence's tokens grow only after the step): read
    # several times per chunk and step, at 64 sequences a property's recomputation adds up.
    wants_logits: bool = field(init=False)  # it ends at the sequence's last token: it samples the next
    n_logits: int = field(init=False)  # output rows: one to sample from, plus one per drafted token

    def __post_init__(self) -> None:
        self.wants_logits = self.start + self.n - len(self.draft) == len(self.seq.tokens)
        self.n_logits = len(self.draft) + 1 if self.wants_logits else 0

    @property
    def tokens(self) -> list[int]:
        own = self.seq.tokens[self.start : self.start + self.n - len(self.draft)]
        # In a step prepared while the one before computes (overlap), its token being sampled.
        return own + [PENDING] * (self.n - len(self.draft) - len(own)) + self.draft


@dataclass
class Step:
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(c.n for c in self.chunks)

    def __bool__(self) -> bool:
        return bool(self.chunks)


class Scheduler:
    def __init__(
        self,
        kv: KVCache,
        batch_size: int,
        token_budget: int,
        max_wait_s: float,
        max_seq_tokens: int,
        draft_tokens: int = 0,
        draft_rows: int = 0,
        mix_prefill: bool = False,
        policy: StepPolicy | None = None,
    ) -> None:
        self.kv = kv
        self.batch_size = batch_size
        self.effective_batch = batch_size
        # Every decoding sequence takes one token of the budget each step, before any prefill, so
        # the budget must hold a full batch of decoders; otherwise a step outgrows llama_batch.
        self.token_budget = max(token_budget, batch_size)
        self.max_wait_s = max_wait_s
        self.max_seq_tokens = max_seq_tokens
        self.draft_tokens = draft_tokens
        self.draft_rows = draft_rows
        # How steps are shaped for the backend (policy.py); the CPU's unless told otherwise.
        self.policy = policy if policy is not None else cpu_policy(kv.streams)
        assert self.policy.streams == kv.streams, "the policy and the KV cache disagree on the layout"
        self.mix_prefill = mix_prefill or kv.streams
        self._prefill_turn = True  # without mixing: whose turn it is when both kinds wait
        self._offload_due = False  # work was admitted: move idle entries out after this step
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0
        self.oom_events = 0
        self.drafted = 0  # draft tokens fed
        self.accepted = 0  # of them, the ones the model agreed with
        # Sequences the scheduler itself ended (too big for the whole cache); the engine reports them.
        self.dropped: list[Sequence] = []
        assert not (self.policy.overlap and draft_tokens), "overlap needs draft_tokens 0: a draft is looked up from N's tokens"
        self.prepared: Step | None = None  # the next step, scheduled while the last one computed
        self._preparing = False
        self._short = False  # preparing needed a preemption: the next step is scheduled after the read
        self.unprepared = 0  # steps scheduled after the read for that reason

    # -- queue ----------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def wait_time(self, now: float) -> float:
        """Seconds to hold an idle engine so that more arrivals join the first batch."""
        if self.running or not self.waiting or self.max_wait_s <= 0:
            return 0.0
        if len(self.waiting) >= self.effective_batch:
            return 0.0
        head = self.waiting[0]
        # Waiting only pays when arrivals can share a prompt step: not for a prompt that fills a
        # step by itself, nor for a follow-up turn whose prompt is mostly cached (a few tokens to
        # compute; the wait would be most of its time to first token).
        if len(head.tokens) >= self.token_budget or 2 * self.kv.cached_len(head.tokens) >= len(head.tokens):
            return 0.0
        return max(0.0, head.arrival + self.max_wait_s - now)

    # -- the step -------------------------------------------------------
    def schedule(self, now: float) -> Step:
        step, self.prepared = self.prepared, None
        if step is not None:
            # Sequences that ended since (a stop at the step read meanwhile, a cancel) leave it;
            # ending trimmed the cells reserved for them.
            step.chunks = [c for c in step.chunks if c.seq.status is Status.RUNNING]
            if step:
                return step
        self._admit(now)
        decoders = sorted((s for s in self.running if s.decoding), key=lambda s: s.order)
        prompts = sorted((s for s in self.running if not s.decoding), key=lambda s: s.order)
        if decoders and prompts and not self.mix_prefill:
            self._prefill_turn = not self._prefill_turn
            if self._prefill_turn:
                decoders = []
            else:
                prompts = []
        step = Step()
        budget = self._add_decoders(step, decoders, self.token_budget)
        self._add_prompt_chunks(step, prompts, budget)
        if self.policy.ordered:
            step.chunks.sort(key=lambda c: c.seq.seq_id or 0)  # one micro-batch: ids in order
        return step

    def prepare_next(self, step: Step, now: float) -> Step | None:
        """``step``'s decode is launched and computing: schedule the next step now (point 9),
        for :meth:`schedule` to return. None when nothing could be prepared without preempting."""
        sampling = [c.seq for c in step.chunks if c.wants_logits]
        for c in step.chunks:
            c.seq.n_computed = c.start + c.n  # as commit() will have it: no drafts here
        for seq in sampling:
            seq.tokens.append(PENDING)  # scheduled as if it were in: it decodes next
        self._preparing, self._short = True, False
        try:
            nxt = self.schedule(now)
        finally:
            self._preparing = False
            for seq in sampling:
                seq.tokens.pop()  # the real token comes through append_token, after the read
        if self._short:
            self.rollback(nxt)
            self.unprepared += 1
            return None
        self.prepared = nxt if nxt else None
        return self.prepared

    def offload_idle(self) -> None:
        """After a step that admitted work: idle entries leave the KV cache (for host RAM, if
        there is one), so running sequences' attention scans only their own cells. Called once
        the step's events are on their way: saving a 12k-token conversation (~45 MB per state,
        its prompt and shared beginnings saved too) must not delay the new request's first token."""
        if self._offload_due:
            self._offload_due = False
            self.kv.offload_idle([s.tokens for s in self.waiting])

    def _add_decoders(self, step: Step, decoders: list[Sequence], budget: int) -> int:
        """Oldest first: each decoder's pending token, plus a draft where one is worth it.
        Returns the token budget left."""
        spare = max(0, self.draft_rows - len(decoders))
        even = self._even_drafts(decoders, budget) if self.policy.ordered else None
        for i, seq in enumerate(decoders):
            if seq.status is not Status.RUNNING:
                continue  # preempted while making room for an older one
            if seq.n_generated >= seq.params.max_tokens or len(seq.tokens) >= self.max_seq_tokens:
                continue  # its token being sampled (PENDING) is its last: it ends by length
            left = len(decoders) - i  # decoders still to place, this one included: one token each
            draft = even[i] if even is not None else self._draft(seq, min(spare // left, budget - left))
            if len(draft) + left > self.kv.n_free:
                draft = []  # drafting must never evict a cache entry or preempt a sequence
            chunk = Chunk(seq, seq.n_computed, 1 + len(draft), draft)
            if not self._reserve(seq, chunk.tokens, step):
                continue
            step.chunks.append(chunk)
            budget -= 1 + len(draft)
            spare -= len(draft)
        return budget

    def _even_drafts(self, decoders: list[Sequence], budget: int) -> list[list[int]]:
        """Drafts of one length for every decoder, within the row cap: unequal counts would split
        the step (see point 8 above). The length is the median of what the decoders would draft
        on their own; every decoder then fills it with its best guess, down to a match of its
        last token alone, since the rows are paid for anyway. A decoder with no guess at all is
        padded with its last token, a row that will almost surely be rejected. A drafted row
        costs about a third of a decode row, so this pays while most rows hold a real guess (on
        2 cores, 8 decoders: 56 ms feeding 2 tokens each, 42 ms feeding 1).

        The length also fits every decoder's context: one decoder drafting less than the others
        would split the step."""
        n = len(decoders)
        if not n or self.draft_tokens <= 0:
            return [[] for _ in decoders]
        each = min(max(0, self.draft_rows - n) // n, (budget - n) // n)
        # Only a decoder's own draft (a match of 2+ tokens) votes: a guess from one token is too
        # weak to buy rows with, only good enough to fill rows bought anyway.
        own = [self._draft(seq, each) for seq in decoders]
        k = sorted(len(d) for d in own)[(n - 1) // 2]
        k = min([k] + [self.max_seq_tokens - len(seq.tokens) - 1 for seq in decoders])  # all must fit
        spare = len(self.kv.slots) - len(self.running)  # free streams, for fillers (policy.py)
        k = max(0, self.policy.draft_tokens(n, 1 + k, spare) - 1)  # e.g. output rows in fours on a CPU
        # An own draft at least k long is already the best guess (the same lookup, longer match first).
        guesses = [
            d if len(d) >= k else self._guess(seq, k, shortest=NGRAM_SHORTEST)
            for d, seq in zip(own, decoders, strict=True)
        ]
        return [(g + [g[-1] if g else seq.tokens[-1]] * k)[:k] for g, seq in zip(guesses, decoders, strict=True)]

    def _add_prompt_chunks(self, step: Step, prompts: list[Sequence], budget: int) -> None:
        """Oldest first, prompt chunks within the remaining budget."""
        for seq in prompts:
            if budget <= 0:
                break
            if seq.status is not Status.RUNNING:
                continue
            n = min(seq.n_pending, budget)
            self.kv.evict(n)
            n = min(n, self.kv.n_free)
            if n <= 0:
                if not step.chunks and not self._make_room(seq, 1, step):
                    continue
                n = min(seq.n_pending, budget, self.kv.n_free)
                if n <= 0:
                    continue
            chunk = Chunk(seq, seq.n_computed, n)
            self._allocate(seq, chunk.tokens)
            step.chunks.append(chunk)
            budget -= n

    def _admit(self, now: float) -> None:
        admitted = False
        while self.waiting and len(self.running) < self.effective_batch:
            seq = self.waiting[0]
            # Admit only what the cache can hold, or admission and preemption would thrash.
            # Running sequences' uncomputed tokens are only allocated later in this step, so
            # count them as taken: otherwise a burst admitted together overcommits the cache
            # and the newest are preempted right after their first prefill chunk.
            committed = sum(s.n_pending for s in self.running)
            if self.running and self.kv.reclaimable() - committed < seq.n_pending + 1:
                break
            got = self.kv.acquire(seq.tokens, now)
            if got is None:
                break
            self.waiting.popleft()
            seq.seq_id, seq.n_computed = got
            if seq.n_cached is None:
                seq.n_cached = min(seq.n_computed, seq.n_prompt)
            seq.status = Status.RUNNING
            self.running.append(seq)
            admitted = True
        if admitted:
            self._offload_due = True

    def _allocate(self, seq: Sequence, tokens: list[int]) -> None:
        assert seq.seq_id is not None
        ok = self.kv.allocate(seq.seq_id, tokens)
        assert ok, "cells were checked before allocating"

    def _reserve(self, seq: Sequence, tokens: list[int], step: Step) -> bool:
        if not self.kv.evict(len(tokens)) and not self._make_room(seq, len(tokens), step):
            return False
        self._allocate(seq, tokens)
        return True

    def _draft_room(self, seq: Sequence, rows: int) -> int:
        """How many tokens ``seq`` should draft this step, at most ``rows``; 0 when it should not."""
        if seq.draft_len is None:
            seq.draft_len = self.draft_tokens
        # A sequence whose guesses mostly fail stops guessing: each wrong row costs about a third
        # of a decode row. Its text is not repeating itself, and lookups would only add cost.
        if seq.draft_tries >= 8 and seq.draft_hits < seq.draft_tries // 4:
            return 0
        return max(
            0,
            min(
                rows,
                seq.draft_len,  # never above draft_tokens
                seq.params.max_tokens - seq.n_generated - 1,  # tokens past max_tokens would be thrown away
                self.max_seq_tokens - len(seq.tokens) - 1,
            ),
        )

    def _guess(self, seq: Sequence, rows: int, shortest: int = NGRAM_MIN) -> list[int]:
        """``seq``'s guess at its next ``rows`` tokens (shorter, or none, where its text has no match)."""
        if rows <= 0 or self.draft_tokens <= 0:
            return []
        if seq.ngrams is None:
            seq.ngrams = NgramIndex()
        return seq.ngrams.propose(seq.tokens, rows, shortest)

    def _draft(self, seq: Sequence, rows: int) -> list[int]:
        """A guess at ``seq``'s next tokens, at most ``rows`` long; empty when drafting is off or idle."""
        return self._guess(seq, self._draft_room(seq, rows))

    def _make_room(self, seq: Sequence, n: int, step: Step) -> bool:
        """Preempt newest running sequences until ``n`` cells are free for ``seq``."""
        if self._preparing and self.kv.n_free < n:
            # A victim may be in the step computing now: schedule the next step after its read.
            self._short = True
            return False
        while self.kv.n_free < n:
            victims = [s for s in self.running if s is not seq and not any(c.seq is s for c in step.chunks)]
            if not victims:
                if len(self.running) == 1 and not step.chunks:
                    # Alone and still too big: the cache cannot hold this sequence at all.
                    self.finish(seq, "length", now=seq.arrival)
                    self.dropped.append(seq)
                else:
                    self.preempt(seq)
                return False
            victim = max(victims, key=lambda s: s.order)
            if victim.order < seq.order:
                self.preempt(seq)  # seq is the newest: it yields, not an older one
                return False
            self.preempt(victim)
            self.kv.evict(n)
        return True

    def preempt(self, seq: Sequence, keep: bool = True) -> None:
        """Free a running sequence's KV; it waits at the head of the queue to be recomputed."""
        log.info("preempting %s to free KV cells", seq.request_id)
        assert seq.seq_id is not None
        # Its KV becomes an idle entry: evicted first under pressure, reused on readmission if it survives.
        self.kv.release(seq.seq_id, now=seq.arrival, keep=keep)
        self.running.remove(seq)
        seq.seq_id = None
        seq.n_computed = 0
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    # -- after the step -------------------------------------------------
    def commit(self, step: Step, sampled: dict[Sequence, list[int]]) -> None:
        """The decode succeeded: the chunks' tokens are in the KV cache.

        A draft's tokens stay only as far as the model agreed with them (the
        runner samples until the first disagreement): the rest leave the KV
        cache, and the sequence's next draft grows or shrinks accordingly.
        """
        for c in step.chunks:
            c.seq.n_computed = c.start + c.n
            if not c.draft:
                continue
            # Every sampled token but the last matched the draft; none if sampling failed.
            accepted = max(0, len(sampled.get(c.seq, ())) - 1)
            self.drafted += len(c.draft)
            self.accepted += accepted
            if accepted < len(c.draft):
                assert c.seq.seq_id is not None
                self.kv.trim(c.seq.seq_id, c.start + 1 + accepted)
                c.seq.n_computed = c.start + 1 + accepted
            seq = c.seq
            assert seq.draft_len is not None  # set by _draft before any draft exists
            seq.draft_tries += len(c.draft)
            seq.draft_hits += accepted
            if accepted == len(c.draft):
                seq.draft_len = min(seq.draft_len + 1, self.draft_tokens)
            elif accepted == 0:
                seq.draft_len = max(1, seq.draft_len // 2)

    def rollback(self, step: Step) -> None:
        """The decode failed: forget the cells reserved for this step."""
        for c in step.chunks:
            if c.seq.seq_id is not None:
                self.kv.trim(c.seq.seq_id, c.start)

    def on_out_of_memory(self, step: Step, status: int = 1) -> Sequence | None:
        """``llama_decode`` failed for lack of memory; make the retry smaller. Status 1 (no KV
        slot: llama.cpp's cells ran out before our accounting's): idle entries go, else the
        effective batch drops by one. Status -2 (the device could not allocate the step's
        buffers): the effective batch is halved. Returns a sequence that cannot run even alone
        (the caller ends it), else None."""
        self.rollback(step)
        self.oom_events += 1
        kv_short = status == 1
        if kv_short and any(not s.busy and s.tokens for s in self.kv.slots):
            self.kv.evict(self.kv.n_cells)
            log.warning("llama_decode found no KV slot: idle cache entries dropped")
            return None
        live = min(self.effective_batch, len(self.running))
        if live <= 1:
            seq = self.running[0] if self.running else None
            if not kv_short and step.n_tokens > 1 and self.token_budget > 1:
                self.token_budget //= 2  # a lone prompt chunk: try half of it
                self.effective_batch = min(self.effective_batch, self.token_budget)  # decoders must fit
                log.warning("device out of memory: step budget lowered to %d tokens", self.token_budget)
                return None
            return seq
        self.effective_batch = live - 1 if kv_short else max(1, live // 2)
        log.warning(
            "llama_decode out of memory (status %d): batch lowered to %d", status, self.effective_batch
        )
        while len(self.running) > self.effective_batch:
            # No KV slot: llama.cpp's cells are short, so the victim's KV goes too.
            self.preempt(max(self.running, key=lambda s: s.order), keep=not kv_short)
        return None

    def append_token(self, seq: Sequence, token: int, is_eog: bool) -> str | None:
        """Add a sampled token; return a finish reason if the sequence is done."""
        seq.tokens.append(token)
        if seq.seq_id is not None:  # a prepared step reserved its cell holding PENDING
            self.kv.fill(seq.seq_id, len(seq.tokens) - 1, token)
        p = seq.params
        if (is_eog and not p.ignore_eos) or token in p.stop_token_ids:
            seq.tokens.pop()  # the end-of-generation token is not part of the answer
            return "stop"
        if seq.n_generated >= p.max_tokens or len(seq.tokens) >= self.max_seq_tokens:
            return "length"
        return None

    def finish(self, seq: Sequence, reason: str, now: float) -> None:
        """Take a sequence out of the engine; its KV stays as a prefix-cache entry."""
        seq.finish_reason = reason
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
            assert seq.seq_id is not None
            # Keep the tokens actually in KV: the last sampled token was never fed, and a
            # draft's accepted tokens past a stop were fed but are not part of the answer.
            self.kv.trim(seq.seq_id, min(seq.n_computed, len(seq.tokens)))
            self.kv.release(seq.seq_id, now, keep=True, mark=seq.n_prompt)
        elif seq.status is Status.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED
        seq.seq_id = None
