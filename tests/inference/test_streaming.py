from __future__ import annotations

import random

from scratchlm.inference.streaming import IncrementalDecoder
from scratchlm.tokenizer import Tokenizer, _bytes_to_unicode


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


def byte_token(tokenizer: Tokenizer, value: int) -> int:
    """The id of the byte-level token that stands for one byte."""
    token_id = tokenizer.backend.token_to_id(_bytes_to_unicode()[value])
    assert token_id is not None
    return int(token_id)


def test_stray_bytes_do_not_hold_the_text_back(bpe_tokenizer: Tokenizer) -> None:
    """Bytes that can never be a character (an untrained model samples them) come out as U+FFFD
    at once: only the last replacement character waits, in case it is the start of a character.
    A character split over tokens after them still comes out whole."""
    decoder = IncrementalDecoder(bpe_tokenizer)
    stray = byte_token(bpe_tokenizer, 0x80)  # a continuation byte with nothing to continue
    pieces = [decoder.push(stray) for _ in range(20)]
    assert pieces[0] == "" and all(piece == "\ufffd" for piece in pieces[1:])
    euro = [byte_token(bpe_tokenizer, value) for value in "€".encode()]  # e2 82 ac
    pieces = [decoder.push(token) for token in [byte_token(bpe_tokenizer, 0xFF), *euro]]
    assert pieces == ["\ufffd", "\ufffd", "", "€"]
    tail = [decoder.push(token) for token in bpe_tokenizer.encode(" done")]
    assert "".join(tail) + decoder.flush() == " done"


def test_pieces_add_up_to_the_whole_decode(bpe_tokenizer: Tokenizer) -> None:
    """Random token sequences (stray and split bytes included): the streamed pieces and the flush
    are exactly the decode of all tokens at once."""
    generator = random.Random(0)
    for _ in range(200):
        ids = [
            generator.randrange(bpe_tokenizer.vocab_size) for _ in range(generator.randint(1, 40))
        ]
        decoder = IncrementalDecoder(bpe_tokenizer)
        streamed = "".join(decoder.push(token) for token in ids) + decoder.flush()
        assert streamed == bpe_tokenizer.decode(ids, skip_special=True)
