"""Step shaping per backend (engine/policy.py): the choice, what each policy does to a step, and
the scheduler building steps by it (over the fake llama.cpp of conftest.py)."""

from __future__ import annotations

import random

from engine_fakes import repetitive_token
from test_microbatch import decoders, output_rows

from clawlan.engine.microbatch import pad, rounded_tokens
from clawlan.engine.policy import choose, contiguous_runs, cpu_policy, gpu_policy, row_quantum


def test_the_policy_follows_the_library_and_the_offload() -> None:
    # a GPU policy only where layers are offloaded to a library that can offload them
    assert choose(True, -1, gpu_capable=True).kind == "gpu"
    assert choose(True, 12, gpu_capable=True).kind == "gpu"
    assert choose(True, 0, gpu_capable=True).kind == "cpu"  # --gpu-layers 0 on a CUDA build
    assert choose(True, -1, gpu_capable=False).kind == "cpu"  # asked for, but a CPU-only library
    cpu = choose(True, 0, "Q8_0", gpu_capable=False)
    assert (cpu.fillers, cpu.quantum, cpu.ordered) == (True, 4, True)
    gpu = choose(True, -1, "Q8_0", gpu_capable=True)
    assert (gpu.fillers, gpu.quantum, gpu.ordered) == (False, 1, True)  # ids in order: split_equal is everywhere
    # greedy argmax on the device only where no step carries drafts (one output row per sequence)
    assert choose(True, -1, gpu_capable=True, draft_tokens=0).device_greedy
    assert not choose(True, -1, gpu_capable=True, draft_tokens=8).device_greedy
    assert not choose(True, 0, gpu_capable=False, draft_tokens=0).device_greedy
    unified = cpu_policy(streams=False)
    assert (unified.fillers, unified.quantum, unified.ordered) == (False, 4, False)
    import llama_cpp

    # this machine's library: the pip wheel is CPU-only, so even --gpu-layers -1 gets the CPU policy
    assert choose(True, -1).kind == ("gpu" if llama_cpp.llama_supports_gpu_offload() else "cpu")


def test_the_gpu_policy_decodes_steps_as_they_are() -> None:
    gap = decoders([0, 1, 2, 4, 5, 6, 7], 2)
    shaped = gpu_policy(streams=True).shape(
        list(reversed(gap)), n_seq=8, n_batch=512, stream_cells=1000, next_pos=lambda s: 40
    )
    assert shaped == gap  # in id order, no filler in the gap, no padding rows
    assert output_rows(shaped) == 6  # the gap splits the step: 0-2 are the first micro-batch
    assert gpu_policy(streams=True).draft_tokens(1, 9, 7) == 9  # no rounding of draft lengths
    assert cpu_policy(streams=True).draft_tokens(1, 9, 7) == 8
    # the CPU policy pads the same step
    cpu = cpu_policy(streams=True).shape(gap, n_seq=8, n_batch=512, stream_cells=1000, next_pos=lambda s: 40)
    assert cpu[3].filler and output_rows(cpu) == 16


def test_rows_are_left_unrounded_where_the_kernel_does_not_tile_them() -> None:
    # a Q6_K vocabulary matrix, or one on a GPU: rows cost the same one by one, fillers still
    # keep the decoders one micro-batch
    assert row_quantum("Q8_0", 0) == 4 and row_quantum("Q6_K", 0) == 1 and row_quantum("Q8_0", -1) == 1
    assert cpu_policy(True, "Q6_K").quantum == 1 and cpu_policy(True, None).quantum == 1
    gap = decoders([0, 1, 2, 4, 5, 6, 7], 2)
    out = pad(gap, streams=True, n_seq=8, n_ubatch=512, next_pos=lambda s: 40, stream_cells=1000, quantum=1)
    assert out[3].filler and out[3].n_head == 0 and output_rows(out) == 14
    q6k = cpu_policy(True, "Q6_K").shape(gap, n_seq=8, n_batch=512, stream_cells=1000, next_pos=lambda s: 40)
    assert q6k == out
    seven = decoders(list(range(7)), 1)
    assert pad(seven, streams=True, n_seq=8, n_ubatch=512, next_pos=lambda s: 40, stream_cells=1000, quantum=1) == seven
    assert rounded_tokens(1, 9, 7, quantum=1) == 9


def test_contiguous_runs_counts_micro_batches() -> None:
    assert contiguous_runs([True, True, False, True]) == 2
    assert contiguous_runs([False, True, True, True]) == 1
    assert contiguous_runs([False] * 4) == 0


def test_streams_steps_run_as_one_micro_batch(make_harness):
    # One KV stream per sequence: llama.cpp splits a batch unless its sequences are in id order and
    # decoders feed equal token counts; every step must be built that way, outputs unchanged.

    h = make_harness(batch_size=4, draft_tokens=4, model=repetitive_token, streams=True, token_budget=64)
    seen: list[list[tuple[int, int, int, int, str]]] = []
    h.engine.on_step = lambda step, s: seen.append(
        [(c.seq.seq_id, c.start, c.n, len(c.draft), c.seq.request_id) for c in step.chunks]
    )
    rng = random.Random(4)
    rids = [h.submit([2] + [rng.randint(200, 260) for _ in range(rng.randint(10, 40))], max_tokens=30) for _ in range(7)]
    h.run()
    for rid in rids:
        h.check_reference(rid, 30)
    assert h.sched.mix_prefill and h.sched.accepted > 0
    mixed = 0
    for chunks in seen:
        ids = [c[0] for c in chunks]
        assert ids == sorted(ids), f"chunks out of id order: {ids}"
        decoders = [c for c in chunks if c[1] >= len(h.prompts[c[4]])]
        assert len({c[3] for c in decoders}) <= 1, f"unequal drafts in one step: {decoders}"
        mixed += bool(decoders) and len(decoders) < len(chunks)
    assert mixed, "no step carried a prompt chunk beside decoders: the mixed path is untested"


def test_streams_decoders_fill_the_step_draft_length_with_their_best_guess(make_harness):
    # With one stream per sequence every decoder feeds the step's draft length (the rows are paid
    # for anyway): a decoder whose text only repeats its last token guesses from that token rather
    # than padding with a row that is sure to be rejected.
    from clawlan.engine.request import Request
    from clawlan.engine.sequence import Sequence

    h = make_harness(batch_size=3, draft_tokens=4, streams=True, draft_rows=15)
    looping = [Sequence(Request([2, 10, i, 12, 10, i]), arrival=0.0) for i in (11, 13)]  # "10 i" repeats
    single = Sequence(Request([2, 20, 21, 22, 23, 20]), arrival=0.0)  # only "20" repeats: guess 21 22 23
    for s in [*looping, single]:
        s.n_computed = len(s.tokens) - 1
    # each may draft 4 (15 rows for 3 decoders); the loops vote 4, the single-token match does not
    # vote; 3 x 5 rows would not come in fours, 3 x 4 do
    assert h.sched._even_drafts([*looping, single], budget=64) == [[12, 10, 11], [12, 10, 13], [21, 22, 23]]
    # a lone decoder with only a single-token match drafts nothing: nobody pays for its rows
    h = make_harness(batch_size=1, draft_tokens=4, streams=True, draft_rows=8)
    assert h.sched._even_drafts([single], budget=64) == [[]]
    # six decoders voting for 2-token drafts, every stream busy: 6 x 3 = 18 rows would not come
    # in fours and no stream is free for a filler row, so they feed 2 each (12 rows)
    seqs = [Sequence(Request([2, 10 + i, 11, 12, 10 + i, 11]), arrival=0.0) for i in range(6)]
    h = make_harness(batch_size=6, draft_tokens=4, streams=True, draft_rows=18)
    h.sched.running = list(seqs)
    assert [len(d) for d in h.sched._even_drafts(seqs, budget=64)] == [1] * 6
    h = make_harness(batch_size=8, draft_tokens=4, streams=True, draft_rows=18)  # two streams free
    h.sched.running = list(seqs)
    assert [len(d) for d in h.sched._even_drafts(seqs, budget=64)] == [2] * 6


def test_gpu_policy_steps_keep_id_order_and_unrounded_even_drafts(make_harness):
    # On a GPU the split rule still holds (ids in order, one draft length), without the CPU's
    # rounding: one decoder drafting 4 feeds 5 tokens, where the CPU policy would feed 4 (rows in fours).
    from clawlan.engine.request import Request
    from clawlan.engine.sequence import Sequence

    loop = Sequence(Request([2, 10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10]), arrival=0.0)
    loop.n_computed = len(loop.tokens) - 1
    gpu = make_harness(batch_size=1, draft_tokens=4, streams=True, draft_rows=8, gpu=True)
    cpu = make_harness(batch_size=1, draft_tokens=4, streams=True, draft_rows=8)
    assert gpu.sched._even_drafts([loop], budget=64) == [[11, 12, 13, 14]]
    assert cpu.sched._even_drafts([loop], budget=64) == [[11, 12, 13]]
    h = make_harness(batch_size=4, draft_tokens=4, model=repetitive_token, streams=True, gpu=True)
    seen: list[list[tuple[int, int]]] = []
    h.engine.on_step = lambda step, s: seen.append([(c.seq.seq_id, len(c.draft)) for c in step.chunks])
    rng = random.Random(5)
    rids = [h.submit([2] + [rng.randint(200, 260) for _ in range(rng.randint(10, 40))], max_tokens=20) for _ in range(6)]
    h.run()
    for rid in rids:
        h.check_reference(rid, 20)
    assert all([i for i, _ in c] == sorted(i for i, _ in c) for c in seen)
