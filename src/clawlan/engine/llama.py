"""llama.cpp through llama-cpp-python's low-level bindings: one model, one context.

Only the C API is used (``llama_batch``, ``llama_decode``, ``llama_memory_seq_*``,
samplers), never the binding's ``Llama`` class, because our scheduler decides
what goes into every decode. ctypes releases the GIL for each native call.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as L
import numpy as np

from clawlan.engine.microbatch import Part
from clawlan.errors import EngineError, ModelFileError

log = logging.getLogger(__name__)

GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE, DEBUG, INFO, WARN, ERROR
_backend_lock = threading.Lock()
_backend_ready = False


@L.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp prints every tensor at load; keep only errors, through logging.
    if level == GGML_LOG_LEVEL_ERROR:
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def init_backend(verbose: bool = False) -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            if not verbose:
                L.llama_log_set(_quiet_log, ctypes.c_void_p())
            L.llama_backend_init()
            _backend_ready = True


class Model:
    """Weights and vocabulary, loaded once and shared by any number of contexts."""

    def __init__(self, path: str | Path, gpu_layers: int = 0, verbose: bool = False) -> None:
        init_backend(verbose)
        self.path = Path(path)
        self.gpu_layers = gpu_layers  # as asked (-1: all); the step policy depends on it
        params = L.llama_model_default_params()
        params.n_gpu_layers = 999 if gpu_layers < 0 else gpu_layers
        self.ptr = L.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.ptr:
            raise ModelFileError(f"llama.cpp could not load {self.path}; check it with: clawlan doctor")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(self.ptr)
        self.size_bytes = L.llama_model_size(self.ptr)
        self.bos = L.llama_vocab_bos(self.vocab)
        self.eos = L.llama_vocab_eos(self.vocab)
        self.add_bos = self.bos >= 0 and bool(L.llama_vocab_get_add_bos(self.vocab))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._banned: np.ndarray | None = None
        self._keep_special: set[int] = set()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for; control tokens render as nothing unless kept (see keep_special)."""
        got = self._pieces.get(token)
        if got is None:
            special = token in self._keep_special
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
            got = self._pieces[token] = buf.raw[:n]
        return got

    def token_text(self, token: int) -> str:
        """A token's text in the vocabulary, control tokens included (``<eos>``, ``</s>``): what a
        chat template writes for ``bos_token``/``eos_token``. "" for no token."""
        if token < 0:
            return ""
        return (L.llama_vocab_get_text(self.vocab, token) or b"").decode("utf-8", "replace")

    def keep_special(self, texts: list[str]) -> list[int]:
        """Render these special tokens as their text (tool-call markers such as ``<tool_call>``
        or ``[TOOL_CALLS]``), so the tool-call parser sees them; returns the ids found."""
        ids = [t for t in (self.token_id(x) for x in texts) if t is not None]
        for t in ids:
            self._keep_special.add(t)
            self._pieces.pop(t, None)
        return ids

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        got = self._eog.get(token)
        if got is None:
            got = self._eog[token] = bool(L.llama_vocab_is_eog(self.vocab, token))
        return got

    def token_id(self, text: str) -> int | None:
        """The id of a special token such as ``<end_of_turn>``, if the vocabulary has it as one token."""
        ids = self.tokenize(text, add_special=False, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def banned_in_grammar(self) -> np.ndarray:
        """Control tokens that do not end generation (e.g. ``<start_of_turn>``).

        llama.cpp's grammar matches a token by its text, so such a token could pass
        as literal characters inside a JSON string; a constrained answer must never
        contain one. Computed once per model.
        """
        if self._banned is None:
            ids = [
                t
                for t in range(self.n_vocab)
                if L.llama_vocab_is_control(self.vocab, t) and not L.llama_vocab_is_eog(self.vocab, t)
            ]
            self._banned = np.zeros(self.n_vocab, dtype=bool)
            self._banned[ids] = True
        return self._banned

    def chat_template(self) -> str | None:
        raw = L.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8") if raw else None

    def close(self) -> None:
        if self.ptr:
            L.llama_model_free(self.ptr)
            self.ptr = None


@dataclass
class Batch:
    """A batch written into a :class:`Context`'s arrays: its size, the batch indices of the
    rows the caller reads, and each batch index's row in llama_get_logits."""

    n_tokens: int
    rows: list[int]
    out_row: np.ndarray


class Context:
    """One llama.cpp context whose KV cache holds ``n_seq`` sequence ids: a thin binding.

    How a step is shaped for the backend (id order, fillers, padding rows) is decided before
    :meth:`decode` by :mod:`clawlan.engine.policy`; this class only writes the batch it is given.
    """

    def __init__(
        self, model: Model, n_ctx: int, n_batch: int, n_seq: int, threads: int, unified: bool = True
    ) -> None:
        """``unified=False`` gives every sequence id a KV stream of its own (``n_ctx / n_seq``
        cells), llama-server's layout: a prompt's attention then never scans other sequences'
        cells (a 256-token prompt beside 7 running sequences: 238 ms instead of 258 ms), but a
        batch runs as one micro-batch only when its sequences are consecutive ids, in id order,
        with equal token counts (see :mod:`clawlan.engine.policy`)."""
        self.model = model
        p = L.llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = n_batch
        p.n_ubatch = n_batch
        p.n_seq_max = n_seq
        p.n_threads = threads
        p.n_threads_batch = threads
        # Unified: one cache for all sequences, so seq_cp shares cells instead of copying them.
        p.kv_unified = unified
        # Keep sliding-window layers' KV for every position; otherwise old cells are pruned
        # and a cached prefix longer than the window could not be reused. (Measured: no slower.)
        p.swa_full = True
        p.no_perf = True
        self.ptr = L.llama_init_from_model(model.ptr, p)
        if not self.ptr:
            raise EngineError(
                f"llama.cpp could not create a context of {n_ctx} tokens; lower --ctx or --batch-size"
            )
        self.n_ctx = L.llama_n_ctx(self.ptr)
        self.n_batch = n_batch
        self.n_seq = n_seq
        self.unified = unified
        self.memory = L.llama_get_memory(self.ptr)
        # The batch's arrays are numpy's, written a slice per part instead of a token at a time.
        # Each token has one sequence id; seq_id[i] points at _seq[i] once and for all.
        self._tok = np.zeros(n_batch, dtype=np.int32)
        self._pos = np.zeros(n_batch, dtype=np.int32)
        self._nseq = np.ones(n_batch, dtype=np.int32)
        self._seq = np.zeros(n_batch, dtype=np.int32)
        self._logits = np.zeros(n_batch, dtype=np.int8)
        seq_t = ctypes.POINTER(L.llama_seq_id)
        base = self._seq.ctypes.data
        self._seq_ptrs = (seq_t * n_batch)(*[ctypes.cast(base + 4 * i, seq_t) for i in range(n_batch)])
        self.batch = L.llama_batch(
            n_tokens=0,
            token=self._tok.ctypes.data_as(ctypes.POINTER(L.llama_token)),
            embd=None,
            pos=self._pos.ctypes.data_as(ctypes.POINTER(L.llama_pos)),
            n_seq_id=self._nseq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_ptrs,
            logits=self._logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self._vocab = model.n_vocab
        self._out_row = np.zeros(0, dtype=np.int32)
        self._all: np.ndarray | None = None  # every output row's logits, made on first use after a decode
        self._greedy: dict[int, ctypes.c_void_p] = {}  # device greedy chains by sequence id (borrowed by llama.cpp)

    # MemoryOps for the KV cache accounting
    def seq_rm(self, seq_id: int, p0: int, p1: int) -> None:
        L.llama_memory_seq_rm(self.memory, seq_id, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        L.llama_memory_seq_cp(self.memory, src, dst, p0, p1)

    def seq_pos_max(self, seq_id: int) -> int:
        """The last position stream/sequence ``seq_id`` holds (-1: none)."""
        return int(L.llama_memory_seq_pos_max(self.memory, seq_id))

    def seq_save(self, seq_id: int) -> np.ndarray | None:
        """The sequence's KV as bytes (sliding-window layers: their last window only)."""
        n = L.llama_state_seq_get_size(self.ptr, seq_id)
        buf = np.empty(n, dtype=np.uint8)
        got = L.llama_state_seq_get_data(self.ptr, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), n, seq_id)
        return buf[:got] if got else None

    def seq_load(self, seq_id: int, data: np.ndarray) -> bool:
        """Put a saved state into ``seq_id``; False if llama.cpp found no room (it then holds nothing)."""
        ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        return L.llama_state_seq_set_data(self.ptr, ptr, data.shape[0], seq_id) != 0

    def decode(self, parts: list[Part] | list[tuple[int, int, list[int], int]]) -> tuple[int, list[int]]:
        """Decode ``parts`` (or ``(seq_id, start, tokens, n_logits)`` tuples) in one batch, in the given order.

        A part's last ``n_logits`` tokens get output rows (1 to sample the next token, more to
        check a draft), its first ``n_head`` too (rows nobody reads, for a faster shape).
        Returns llama_decode's status and the batch indices of the ``n_logits`` rows, in the
        parts' order.
        """
        batch = self.write([q if isinstance(q, Part) else Part(*q) for q in parts])
        return self.launch(batch), batch.rows

    def write(self, parts: list[Part]) -> Batch:
        """Write ``parts`` into the batch's arrays, for :meth:`launch`. Safe while an earlier
        decode computes: llama_decode copies the batch before it returns (llama_batch_compat)."""
        i = 0
        rows: list[int] = []
        for p in parts:
            n = len(p.tokens)
            if i + n > self.n_batch:
                # Writing past the batch corrupts memory and llama.cpp aborts the process.
                raise EngineError(f"a step of more than {self.n_batch} tokens does not fit the batch")
            self._tok[i : i + n] = p.tokens
            self._pos[i : i + n] = np.arange(p.start, p.start + n, dtype=np.int32)
            self._seq[i : i + n] = p.seq_id
            self._logits[i : i + n] = 0
            self._logits[i : i + p.n_head] = 1
            i += n
            if p.n_logits:
                self._logits[i - p.n_logits : i] = 1
                rows.extend(range(i - p.n_logits, i))
        # Output rows are stored in batch order (llama.h): batch index -> row of llama_get_logits.
        return Batch(i, rows, np.cumsum(self._logits[:i], dtype=np.int32) - 1)

    def write_tokens(self, parts: list[Part]) -> None:
        """Rewrite only the token column of the batch :meth:`write` made of the same parts
        (overlap: the tokens being sampled were not known when it was written)."""
        flat = [t for p in parts for t in p.tokens]
        self._tok[: len(flat)] = flat

    def launch(self, batch: Batch) -> int:
        """``llama_decode`` of the written batch. On a GPU it returns once the step is queued;
        reading an output (logits, a sampled token) waits for it."""
        self.batch.n_tokens = batch.n_tokens
        self._out_row = batch.out_row
        self._all = None
        return int(L.llama_decode(self.ptr, self.batch))

    def logits(self, index: int) -> np.ndarray:
        """Row ``index``'s logits, a view of llama.cpp's buffer (valid until the next decode)."""
        ptr = L.llama_get_logits_ith(self.ptr, index)
        return np.ctypeslib.as_array(ptr, shape=(self._vocab,))

    def logits_rows(self, index: int, n: int) -> np.ndarray:
        """The logits of output rows at batch indices ``index .. index + n - 1`` (all output
        rows, as a chunk's are), as one ``(n, n_vocab)`` view: one numpy call per chunk instead
        of a pointer lookup and a view per row. Valid until the next decode."""
        if self._all is None:
            n_out = int(self._out_row[-1]) + 1
            self._all = np.ctypeslib.as_array(L.llama_get_logits(self.ptr), shape=(n_out, self._vocab))
        first = int(self._out_row[index])
        return self._all[first : first + n]

    def device_greedy(self, seq_id: int, on: bool) -> bool:
        """Take ``seq_id``'s argmax inside llama.cpp's graph (or stop); whether it is now on.
        Then only the sampled token comes back (:meth:`sampled`), not the logits row. At most
        one output row per such sequence and step, or llama_decode fails with -1."""
        if on == (seq_id in self._greedy):
            return on
        if on:
            chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            if not L.llama_set_sampler(self.ptr, seq_id, chain):
                L.llama_sampler_free(chain)
                return False
            self._greedy[seq_id] = chain
            return True
        chain = self._greedy.pop(seq_id)
        L.llama_set_sampler(self.ptr, seq_id, None)  # detached before it is freed: llama.cpp borrows it
        L.llama_sampler_free(chain)
        return False

    def sampled(self, index: int) -> int:
        """The token llama.cpp sampled on the device for output row ``index`` (-1: none)."""
        return int(L.llama_get_sampled_token_ith(self.ptr, index))

    def clear(self) -> None:
        L.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.ptr:
            for seq_id in list(self._greedy):
                self.device_greedy(seq_id, False)
            L.llama_free(self.ptr)
            self.ptr = None


TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # struct llama_token_data
GRAMMAR_TOP_N = 512


class Sampler:
    """A llama.cpp sampler chain for one sequence (penalties, top-k/p, temperature), plus a grammar.

    The grammar is kept out of the chain: checking all of Gemma's 262k tokens
    against a grammar takes most of a second per token. It is applied to the
    model's top candidates first, and to the whole vocabulary only when none
    of them is allowed; the result is the same as constraining everything.
    """

    def __init__(self, model: Model, params: object) -> None:
        from clawlan.engine.request import SamplingParams

        assert isinstance(params, SamplingParams)
        self.grammar = None
        self.banned = model.banned_in_grammar() if params.grammar is not None else None
        self.ptr = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        add = lambda s: L.llama_sampler_chain_add(self.ptr, s)  # noqa: E731
        if params.grammar is not None:
            if params.grammar_triggers:
                trig = params.grammar_triggers
                pats = (ctypes.c_char_p * len(trig))(*[t.encode() for t in trig])
                self.grammar = L.llama_sampler_init_grammar_lazy_patterns(
                    model.vocab, params.grammar.encode(), b"root", pats, len(trig), None, 0
                )
            else:
                self.grammar = L.llama_sampler_init_grammar(model.vocab, params.grammar.encode(), b"root")
            if not self.grammar:
                self.close()
                raise EngineError("llama.cpp rejected the grammar (GBNF or trigger parse error)")
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            add(
                L.llama_sampler_init_penalties(
                    model.n_vocab,
                    params.penalty_last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.greedy:
            add(L.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(L.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(L.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(L.llama_sampler_init_min_p(params.min_p, 1))
            add(L.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else int(np.random.randint(0, 2**31 - 1))
            add(L.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Context, index: int) -> int:
        if self.grammar is None:
            return int(L.llama_sampler_sample(self.ptr, ctx.ptr, index))
        logits = ctx.logits(index)
        top = np.argpartition(logits, -GRAMMAR_TOP_N)[-GRAMMAR_TOP_N:]
        cand = self._constrain(top, logits)
        if cand is None:  # none of the top candidates fits the grammar: check them all
            cand = self._constrain(np.arange(logits.shape[0]), logits)
        if cand is None:
            raise EngineError("the grammar allows no token here")
        buf, arr = cand
        L.llama_sampler_apply(self.ptr, ctypes.byref(arr))
        token = int(buf["id"][arr.selected])
        L.llama_sampler_accept(self.grammar, token)
        L.llama_sampler_accept(self.ptr, token)
        return token

    def _constrain(self, ids: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, object] | None:
        """Apply the grammar to candidates ``ids``; the allowed ones as a token-data array, or None."""
        if self.banned is not None:
            ids = ids[~self.banned[ids]]
        buf = np.zeros(ids.shape[0], dtype=TOKEN_DATA)
        buf["id"] = ids
        buf["logit"] = logits[ids]
        arr = L.llama_token_data_array(
            buf.ctypes.data_as(ctypes.POINTER(L.llama_token_data)), buf.shape[0], -1, False
        )
        L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        keep = np.isfinite(buf["logit"][: arr.size])
        if not keep.any():
            return None
        buf = np.ascontiguousarray(buf[: arr.size][keep])
        arr = L.llama_token_data_array(
            buf.ctypes.data_as(ctypes.POINTER(L.llama_token_data)), buf.shape[0], -1, False
        )
        return buf, arr

    def close(self) -> None:
        if self.grammar:
            L.llama_sampler_free(self.grammar)
            self.grammar = None
        if self.ptr:
            L.llama_sampler_free(self.ptr)
            self.ptr = None
