"""The llama.cpp wrapper: special tokens shown only when asked for."""

from __future__ import annotations

from clawlan.engine.llama import Model


def test_keep_special_renders_marker_tokens(model_info):
    # A model of its own: keep_special changes rendering for every user of the instance.
    m = Model(model_info.path)
    try:
        turn = m.token_id("<start_of_turn>")
        assert turn is not None and m.piece(turn) == b""  # control tokens render as nothing by default
        assert m.keep_special(["<start_of_turn>", "<tool_call>"]) == [turn]  # <tool_call> is no single token here
        assert m.piece(turn) == b"<start_of_turn>"
        assert m.piece(m.token_id("<end_of_turn>")) == b""  # others unchanged
    finally:
        m.close()
