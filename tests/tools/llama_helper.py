"""A tiny self-contained llama.cpp loop for grammar tests: parse a GBNF, and
greedy-decode under it on the embedded model.

The engine has its own batched loop; this one exists so the grammar tests do
not depend on it and stay small (one sequence, greedy, no KV reuse).
"""

from __future__ import annotations

import codecs
import ctypes
import functools
from collections.abc import Callable
from typing import Any

llama_cpp = __import__("pytest").importorskip("llama_cpp")


def _quiet() -> None:
    # llama.cpp logs every tensor at load; keep test output readable.
    @llama_cpp.llama_log_callback
    def _sink(level: int, text: bytes, user_data: Any) -> None:
        return None

    _quiet.cb = _sink  # type: ignore[attr-defined]  # keep a reference alive
    llama_cpp.llama_log_set(_sink, ctypes.c_void_p())


@functools.cache
def model_path() -> str:
    # The store's embedded path skips resolve()'s metadata read (seconds on a
    # 262k-token vocabulary); the file is the same checked one.
    from clawlan.model.store import embedded_model_path

    return str(embedded_model_path())


@functools.cache
def vocab_model() -> Any:
    """The embedded model's vocabulary only: fast to load, enough to parse grammars."""
    _quiet()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(model_path().encode(), params)
    assert model, "could not load the embedded model's vocabulary"
    return model


def grammar_parses(gbnf: str) -> bool:
    """True when llama.cpp accepts ``gbnf`` (its parser returns NULL on an error)."""
    vocab = llama_cpp.llama_model_get_vocab(vocab_model())
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


@functools.cache
def _full_model() -> tuple[Any, Any]:
    _quiet()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(model_path().encode(), params)
    assert model
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 2048
    cparams.n_batch = 2048
    cparams.n_threads = 2
    cparams.n_threads_batch = 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    assert ctx
    return model, ctx


def generate(prompt: str, gbnf: str | None, max_tokens: int = 200) -> tuple[str, bool]:
    """Greedy decode ``prompt`` under ``gbnf``; (text, whether it stopped on its own)."""
    text, stopped, _ = generate_tokens(prompt, gbnf, max_tokens)
    return text, stopped


def generate_tokens(
    prompt: str,
    gbnf: str | None,
    max_tokens: int = 200,
    stop: Callable[[str], bool] | None = None,
    triggers: list[str] | None = None,
) -> tuple[str, bool, list[str]]:
    """Like :func:`generate`, plus the text of each token as it came (for stream tests).

    ``stop(piece)`` is called with each token's text; True ends generation
    there (stopped is then True), as the server does when the parser asks.
    ``triggers`` makes the grammar lazy (tool_choice "auto").

    Checking all 262k tokens against the grammar at every step is slow on two
    cores, so this first checks only the unconstrained best token and falls
    back to the full grammar pass when the grammar rejects it (as llama.cpp's
    own common sampler does). The result is the same greedy path.
    """
    import numpy as np

    model, ctx = _full_model()
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    raw = prompt.encode()
    buf = (llama_cpp.llama_token * (len(raw) + 16))()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, True)
    assert n > 0
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    grammar = None
    if gbnf is not None:
        if triggers:
            pats = (ctypes.c_char_p * len(triggers))(*[t.encode() for t in triggers])
            grammar = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
                vocab, gbnf.encode(), b"root", pats, len(triggers), None, 0
            )
        else:
            grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        assert grammar, "llama.cpp rejected the grammar"
        llama_cpp.llama_sampler_chain_add(chain, grammar)  # the chain owns it now
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    batch = llama_cpp.llama_batch_get_one(buf, n)
    out = bytearray()
    pieces: list[str] = []
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    piece = (ctypes.c_char * 256)()
    stopped = False
    try:
        for _ in range(max_tokens):
            assert llama_cpp.llama_decode(ctx, batch) == 0
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))
            fast = grammar is None
            if grammar is not None:
                one = (llama_cpp.llama_token_data * 1)(
                    llama_cpp.llama_token_data(tok, float(logits[tok]), 0.0)
                )
                arr = llama_cpp.llama_token_data_array(one, 1, -1, False)
                llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
                fast = one[0].logit != float("-inf")
            if fast:
                llama_cpp.llama_sampler_accept(chain, tok)
            else:
                tok = llama_cpp.llama_sampler_sample(chain, ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                stopped = True
                break
            k = llama_cpp.llama_token_to_piece(vocab, tok, piece, len(piece), 0, True)
            out += piece.raw[:k]
            pieces.append(decoder.decode(piece.raw[:k]))
            if stop is not None and stop(pieces[-1]):
                stopped = True
                break
            batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(tok), 1)
    finally:
        llama_cpp.llama_sampler_free(chain)
    return out.decode("utf-8", errors="replace"), stopped, pieces
