from __future__ import annotations

from scratchlm.inference.streaming import IncrementalDecoder
from scratchlm.tokenizer import Tokenizer


def test_streaming_never_yields_broken_utf8(bpe_tokenizer: Tokenizer) -> None:
    text = "emoji 😀👍🏽 中文字符 café 🇫🇷 done"
    ids = bpe_tokenizer.encode(text)
    decoder = IncrementalDecoder(bpe_tokenizer)
    pieces = [decoder.push(token_id) for token_id in ids]
    pieces.append(decoder.flush())
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text
    # the emoji is split over several byte-level tokens, so some pushes must have held text back
    assert any(piece == "" for piece in pieces)
