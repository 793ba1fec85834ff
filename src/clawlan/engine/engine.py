"""The engine loop: ``step()`` on its own thread, ``submit`` / ``cancel`` for asyncio.

``step()`` is schedule, run, postprocess. Where the policy says ``overlap`` (a GPU: see
:mod:`clawlan.engine.policy`), "run" is launch and read, and the next step is scheduled
between them, while the device computes. Everything that touches llama.cpp
happens on the engine thread, so no native call races another; callers only
hand requests over under a lock and receive events through their event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from clawlan.engine.request import Event, Request, TokenLogprob
from clawlan.engine.runner import Runner
from clawlan.engine.scheduler import Scheduler, Step
from clawlan.engine.sequence import Sequence, Status
from clawlan.errors import ClawlanError

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]
DECODE_ALLOC_FAILED = -2  # llama_decode: the backend could not allocate the step (ggml's ALLOC_FAILED)


class Outbox:
    """Events for asyncio consumers, handed over once per engine step.

    One ``call_soon_threadsafe`` per event loop per step, instead of one per
    token per stream, keeps the HTTP thread's wake-ups (and its share of the
    CPU that llama.cpp needs) independent of the number of streams.
    """

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}

    def sink(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> Emit:
        def emit(ev: Event) -> None:
            self._items.setdefault(loop, []).append((queue, ev))

        return emit

    def flush(self) -> None:
        items, self._items = self._items, {}
        for loop, batch in items.items():
            with contextlib.suppress(RuntimeError):  # the consumer's loop closed; nobody is waiting
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue[Event], Event]]) -> None:
    for queue, ev in batch:
        queue.put_nowait(ev)


@dataclass
class Ending:
    """How a sequence ends: its last event's content, before the usage figures are added."""

    reason: str
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass
class EngineStats:
    """Counters the metrics endpoint reads (written by the engine thread only)."""

    steps: int = 0
    # Sequences per decode, most recent last. Bounded: nothing has to read it, and an unbounded
    # list grew by one entry per step for the server's lifetime (~70 MB a day at 100 steps/s).
    step_seqs: deque[int] = field(default_factory=lambda: deque(maxlen=10_000))
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_tokens: int = 0


class Engine:
    def __init__(self, scheduler: Scheduler, runner: Runner, clock: Callable[[], float] = time.monotonic) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.clock = clock
        self.stats = EngineStats()
        self._live: dict[str, tuple[Sequence, Emit]] = {}
        self._inbox: list[tuple[Sequence, Emit]] = []
        self._cancels: list[str] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._outbox = Outbox()
        self.context: Any = None  # the llama.cpp context, freed by stop(); None with a fake runner
        self._t0 = 0.0  # when the step being run was launched, for on_step
        self.on_step: Callable[[Step, float], None] | None = None
        self.overlap = scheduler.policy.overlap  # prepare the next step while one computes

    # -- called from any thread ----------------------------------------------
    def add(self, request: Request, emit: Emit) -> None:
        with self._cond:
            self._inbox.append((Sequence(request, self.clock()), emit))
            self._cond.notify()

    def cancel(self, request_id: str) -> None:
        with self._cond:
            self._cancels.append(request_id)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="clawlan-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread:
            self._thread.join()
        if self.context is not None:
            self.context.close()  # the KV cache can be gigabytes: give it back with the engine

    @property
    def n_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def n_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # -- asyncio side ----------------------------------------------------------
    async def submit(self, request: Request) -> AsyncIterator[Event]:
        """Run ``request``; yield its events. Leaving the loop early cancels it."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.add(request, self._outbox.sink(asyncio.get_running_loop(), queue))
        done = False
        try:
            while True:
                ev = await queue.get()
                if ev.finish_reason is not None:
                    done = True
                yield ev
                if done:
                    return
        finally:
            if not done:
                self.cancel(request.request_id)

    # -- engine thread ---------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._inbox or self._cancels or self.scheduler.has_work() or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    break
            self._drain()
            wait = self.scheduler.wait_time(self.clock())
            if wait > 0:
                self._outbox.flush()
                with self._cond:
                    if not self._inbox and not self._cancels:
                        self._cond.wait(wait)  # an arrival wakes us early; wait_time is re-checked
                continue
            try:
                self.step()
            except Exception as exc:  # never let the engine thread die
                log.exception("engine step failed")
                self._fail_all(f"engine error: {exc}")
            self._outbox.flush()
        self._fail_all("server shutting down")
        self._outbox.flush()

    def _drain(self) -> None:
        with self._cond:
            inbox, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
        for seq, emit in inbox:
            if not seq.tokens:
                # An empty prompt has no position to sample from: the scheduler would never
                # schedule it and has_work() would stay true forever (a busy loop).
                emit(Event(seq.request_id, finish_reason="error", error="the prompt is empty"))
                continue
            try:
                self.runner.prepare(seq)
            except Exception as exc:  # a bad grammar or sampler fails this request, not the engine
                if not isinstance(exc, ClawlanError):
                    log.exception("preparing %s failed", seq.request_id)
                emit(Event(seq.request_id, finish_reason="error", error=str(exc), prompt_tokens=seq.n_prompt))
                continue
            self._live[seq.request_id] = (seq, emit)
            self.scheduler.add(seq)
        for rid in cancels:
            if rid in self._live:
                self._end(self._live[rid][0], Ending("cancelled"))

    def step(self) -> None:
        """One decode: schedule, run, postprocess; with overlap, the next step is scheduled
        between launching this one and reading it. A failure is charged to the requests it can
        be attributed to: a sampling or detokenizing error to its sequence alone, a failed
        decode to the step's sequences; the rest keep running."""
        step = self.scheduler.schedule(self.clock())
        self._report_dropped()
        if step and self._launch(step):
            if self.overlap:
                self._prepare_next(step)  # while the device computes ``step``
            self._postprocess(step, self._read(step))

    def _launch(self, step: Step) -> bool:
        """Start ``step``'s decode; False when it failed (its requests are dealt with)."""
        self._t0 = self.clock()
        try:
            status = self.runner.decode(step)
        except Exception as exc:
            log.exception("llama_decode raised")
            self.scheduler.rollback(step)
            self._end_step(step, f"engine error: {exc}")
            return False
        if status in (1, DECODE_ALLOC_FAILED):
            alone = self.scheduler.on_out_of_memory(step, status)
            if alone is not None:
                self._end(alone, Ending("error", error="llama_decode has no room even for one sequence"))
            return False
        if status != 0:
            self.scheduler.rollback(step)
            self._end_step(step, f"llama_decode failed with status {status}")
            return False
        return True

    def _prepare_next(self, step: Step) -> None:
        """Schedule the step after ``step`` and write its batch but for the tokens being sampled."""
        nxt = self.scheduler.prepare_next(step, self.clock())
        if nxt is not None:
            self.runner.stage(nxt)

    def _read(self, step: Step) -> dict[Sequence, list[int]]:
        """Sample every chunk that samples (on a GPU this waits for the step) and commit the
        step; a sequence whose sampling fails ends here, alone."""
        sampled: dict[Sequence, list[int]] = {}
        failed: dict[Sequence, Exception] = {}
        for c in step.chunks:
            if c.n_logits:
                try:
                    sampled[c.seq] = self.runner.sample(c)
                except Exception as exc:  # a sampler or grammar error is its sequence's alone
                    failed[c.seq] = exc
        self.scheduler.commit(step, sampled)
        for seq, exc in failed.items():
            if not isinstance(exc, ClawlanError):
                log.error("sampling %s failed", seq.request_id, exc_info=exc)
            self._end(seq, Ending("error", error=f"engine error: {exc}"))
        return sampled

    def _end_step(self, step: Step, error: str) -> None:
        for c in step.chunks:
            if c.seq.status is Status.RUNNING:
                self._end(c.seq, Ending("error", error=error))

    def _postprocess(self, step: Step, sampled: dict[Sequence, list[int]]) -> None:
        # A prompt chunk is progress too: a 15k-token prompt must not look stalled to timeout_ms.
        for c in step.chunks:
            if not c.wants_logits:
                self._emit(c.seq, Event(c.seq.request_id))
        self.stats.steps += 1
        self.stats.step_seqs.append(len(step.chunks))
        if self.on_step:
            self.on_step(step, self.clock() - self._t0)
        now = self.clock()
        for seq, tokens in sampled.items():
            try:
                self._take(seq, tokens, now)
            except Exception as exc:  # e.g. a token that will not render: this request's error alone
                log.exception("postprocessing %s failed", seq.request_id)
                self._end(seq, Ending("error", error=f"engine error: {exc}"))
        self._outbox.flush()  # first tokens go out before the housekeeping below
        self.scheduler.offload_idle()

    def _take(self, seq: Sequence, tokens: list[int], now: float) -> None:
        """Append a sequence's sampled tokens, emit its text, end it where it is done."""
        if seq.first_token_time is None:
            seq.first_token_time = now
            self.stats.prompt_tokens += seq.n_prompt
            self.stats.cached_tokens += seq.n_cached or 0
        text, emitted = "", []
        # the runner's log probabilities, one per sampled token, when the request asked
        sampled_lps, seq.logprobs = seq.logprobs, []
        lps = [] if seq.params.logprobs is not None else None
        for k, token in enumerate(tokens):  # several when a draft held: one event carries them all
            reason = self.scheduler.append_token(seq, token, self.runner.is_eog(token))
            if reason != "stop":
                self.stats.generated_tokens += 1
                emitted.append(token)
                if lps is not None and k < len(sampled_lps):
                    lps.append(sampled_lps[k])
                text += seq.text.feed(self.runner.piece(token))
                if seq.text.stopped:
                    reason = "stop"
            if reason:
                # An end-of-generation token is not output; a stop string's token is (its text is cut).
                self._end(seq, Ending(reason, text=text, tokens=emitted, logprobs=lps))
                break
        else:
            self._emit(seq, Event(seq.request_id, text=text, token_ids=emitted, logprobs=lps))

    def _end(self, seq: Sequence, ending: Ending) -> None:
        if seq.status is Status.FINISHED:
            return
        self.scheduler.finish(seq, ending.reason, self.clock())
        self._notify(seq, ending)

    def _notify(self, seq: Sequence, ending: Ending) -> None:
        """Free a finished sequence's sampler and send its last event, with usage."""
        text = ending.text + seq.text.flush()
        self.runner.release(seq)
        _, emit = self._live.pop(seq.request_id, (seq, None))
        if emit is not None:
            emit(
                Event(
                    seq.request_id,
                    text=text,
                    token_ids=ending.tokens,
                    finish_reason=ending.reason,
                    error=ending.error,
                    prompt_tokens=seq.n_prompt,
                    cached_tokens=seq.n_cached or 0,
                    completion_tokens=seq.n_generated,
                    logprobs=ending.logprobs,
                )
            )

    def _emit(self, seq: Sequence, ev: Event) -> None:
        entry = self._live.get(seq.request_id)
        if entry:
            entry[1](ev)

    def _report_dropped(self) -> None:
        for seq in self.scheduler.dropped:  # the scheduler already finished them
            self._notify(seq, Ending("length", error="the KV cache cannot hold this request"))
        self.scheduler.dropped.clear()

    def _fail_all(self, message: str) -> None:
        for seq, _ in list(self._live.values()):
            if seq.status is Status.FINISHED:
                continue
            if seq.status is Status.RUNNING or seq in self.scheduler.waiting:
                self._end(seq, Ending("error", error=message))
        self._live.clear()


@dataclass
class EngineConfig:
    batch_size: int = 8
    max_wait_ms: int = 50
    kv_tokens: int = 8192  # KV cells shared by all sequences
    max_seq_tokens: int = 4096  # one request's context
    token_budget: int = 512  # tokens per llama_decode (chunked prefill)
    # Prompt-lookup drafts (speculative decoding): at most this many guessed tokens per sequence
    # and step, 0 turns drafting off. The rows of a decode step are capped at 2 x batch_size:
    # on a CPU every extra output row costs about half a decode row, so one decoder alone
    # drafts deep and a full batch about one token each (docs/benchmarks.md has the costs).
    draft_tokens: int = 8
    # Host RAM for idle prefix-cache entries moved out of the KV cache (see host_cache.py);
    # 0 keeps them in the KV cache, where they slow every decode's attention.
    host_cache_mb: int = 2048
    # Prompt chunks and decode tokens in the same llama_decode (see scheduler.py: slower on CPU).
    mix_prefill: bool = False
    threads: int = 2
    # Idle prefix-cache entries kept (finished conversations). A slot is only a sequence id, so
    # keep many: KV cells, not slots, should decide what is evicted. Default: 4 x batch, at least 32.
    # (Unified layout only: with one stream per sequence, idle entries beyond the streams live in
    # host RAM.)
    cache_slots: int | None = None
    # KV layout: "streams" (one per sequence, llama-server's; prompts ~8% cheaper) needs every
    # sequence's whole context in its own stream, kv_tokens >= batch_size x max_seq_tokens;
    # "unified" lets sequences share all cells (one long prompt may use most of them).
    # "auto": streams where they fit, unified otherwise.
    kv_layout: str = "auto"
    # The vocabulary matrix's GGUF type (ModelInfo.output_type, from the metadata the server has
    # read anyway: read_metadata took 8.2 s on the embedded model). On a CPU it decides whether
    # output rows are rounded to fours (policy.py). The default is the embedded model's; None: unknown, not rounded.
    output_type: str | None = "Q8_0"
    # Greedy argmax inside llama.cpp's graph (policy.py): None lets the policy decide (on a GPU
    # without drafts); True works on a CPU too (the tests), where it gains nothing measured.
    device_greedy: bool | None = None
    # Schedule the next step while one computes (policy.py): None lets the policy decide (on a GPU
    # without drafts); True works on a CPU too (the tests), where the decode is synchronous and
    # nothing is gained. Needs draft_tokens 0.
    overlap: bool | None = None


def use_streams(cfg: EngineConfig) -> bool:
    if cfg.kv_layout not in ("auto", "streams", "unified"):
        raise ValueError(f"kv_layout {cfg.kv_layout!r}: use auto, streams or unified")
    fits = cfg.kv_tokens >= cfg.batch_size * cfg.max_seq_tokens
    return cfg.kv_layout == "streams" or (cfg.kv_layout == "auto" and fits)


def build_engine(model: object, cfg: EngineConfig) -> Engine:
    """The real engine: one llama.cpp context over ``model`` (a loaded :class:`~clawlan.engine.llama.Model`)."""
    from clawlan.engine.host_cache import HostCache
    from clawlan.engine.kv_cache import KVCache
    from clawlan.engine.llama import Context, Model
    from clawlan.engine.policy import choose
    from clawlan.engine.runner import LlamaRunner

    if cfg.overlap and cfg.draft_tokens:
        raise ValueError("overlap needs draft_tokens 0: a draft is looked up from the tokens being sampled")
    assert isinstance(model, Model)
    streams = use_streams(cfg)
    cache_slots = max(32, 4 * cfg.batch_size) if cfg.cache_slots is None else cfg.cache_slots
    n_slots = min(256, cfg.batch_size + max(1, cache_slots))  # llama.cpp allows at most 256 sequence ids
    if streams:
        n_slots = cfg.batch_size  # each sequence id is a stream of kv_tokens / n_slots cells
    # A step carries one token per decoding sequence at least, and llama.cpp reserves one output
    # row per sequence id (GGML_ASSERT(n_outputs_max <= n_batch) in output_reserve). With
    # token_budget < n_slots (e.g. --prefill-chunk 16 --batch-size 16) llama.cpp aborted the process.
    budget = max(cfg.token_budget, cfg.batch_size)
    ctx = Context(
        model,
        n_ctx=cfg.kv_tokens,
        n_batch=max(budget, n_slots),
        n_seq=n_slots,
        threads=cfg.threads,
        unified=not streams,
    )
    policy = choose(streams, model.gpu_layers, cfg.output_type, draft_tokens=cfg.draft_tokens)
    if cfg.device_greedy:  # one output row per sequence: no padding rows, no fillers
        policy = replace(policy, device_greedy=True, fillers=False, quantum=1)
    elif cfg.device_greedy is not None:
        policy = replace(policy, device_greedy=False)
    if cfg.overlap is not None:
        policy = replace(policy, overlap=cfg.overlap)
    log.info("step policy: %s", policy)
    host = HostCache(cfg.host_cache_mb << 20) if cfg.host_cache_mb > 0 else None
    kv = KVCache(ctx.n_ctx, n_slots, ctx, host, streams=streams)
    sched = Scheduler(
        kv,
        batch_size=cfg.batch_size,
        token_budget=budget,
        max_wait_s=cfg.max_wait_ms / 1000.0,
        max_seq_tokens=min(cfg.max_seq_tokens, ctx.n_ctx // n_slots if streams else ctx.n_ctx),
        draft_tokens=cfg.draft_tokens,
        draft_rows=2 * cfg.batch_size,
        mix_prefill=cfg.mix_prefill,
        policy=policy,
    )
    engine = Engine(sched, LlamaRunner(model, ctx, policy))
    engine.context = ctx
    return engine
