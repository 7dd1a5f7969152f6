from __future__ import annotations

import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe, train_char

TRICKY = [
    "plain ascii text",
    "emoji 😀👍🏽 and flags 🇫🇷",
    "中文字符 and 日本語のテキスト, 한국어",
    "odd   whitespace\t\ttabs\n\n\nnewlines \r\n crlf  ",
    "café naïve Ångström",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trip(bpe_tokenizer: Tokenizer, text: str) -> None:
    assert bpe_tokenizer.decode(bpe_tokenizer.encode(text)) == text


def test_char_round_trip_and_unknown(char_tokenizer: Tokenizer) -> None:
    text = "Tom loved to play.\nThe end."
    assert char_tokenizer.decode(char_tokenizer.encode(text)) == text
    ids = char_tokenizer.encode("Tom 😀")
    assert ids[-1] == char_tokenizer.unk_id


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_special_token_spelling_stays_plain_text(
    kind: str, bpe_tokenizer: Tokenizer, char_tokenizer: Tokenizer
) -> None:
    tokenizer = bpe_tokenizer if kind == "bpe" else char_tokenizer
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(f"a {token} b")
        assert not any(tokenizer.is_special(i) and i != tokenizer.unk_id for i in ids), token
    if kind == "bpe":
        text = "say <|endoftext|> and <|user|>"
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_have_fixed_ids(bpe_tokenizer: Tokenizer) -> None:
    assert [bpe_tokenizer.special_id(token) for token in SPECIAL_TOKENS] == list(
        range(len(SPECIAL_TOKENS))
    )
    assert bpe_tokenizer.eos_id == SPECIAL_TOKENS.index("<|endoftext|>")
    assert bpe_tokenizer.decode([bpe_tokenizer.eos_id]) == "<|endoftext|>"
    assert bpe_tokenizer.decode([bpe_tokenizer.eos_id], skip_special=True) == ""


def test_save_load_keeps_ids_and_kind(
    tmp_path, bpe_tokenizer: Tokenizer, char_tokenizer: Tokenizer
) -> None:  # type: ignore[no-untyped-def]
    for tokenizer in (bpe_tokenizer, char_tokenizer):
        path = tmp_path / f"{tokenizer.kind}.json"
        tokenizer.save(path)
        loaded = Tokenizer.load(path)
        assert loaded.kind == tokenizer.kind and loaded.vocab_size == tokenizer.vocab_size
        assert loaded.encode(TRICKY[1]) == tokenizer.encode(TRICKY[1])
        assert loaded.fingerprint() == tokenizer.fingerprint()


def test_bpe_vocab_size_is_respected_and_pieces_readable(bpe_tokenizer: Tokenizer) -> None:
    assert bpe_tokenizer.vocab_size <= 400
    pieces = [bpe_tokenizer.id_to_piece(i) for i in bpe_tokenizer.encode(" Tom loved")]
    assert "".join(pieces) == " Tom loved"
    # a lone byte of a multi-byte character is shown escaped, never as mojibake
    emoji_pieces = [bpe_tokenizer.id_to_piece(i) for i in bpe_tokenizer.encode("😀")]
    assert len(emoji_pieces) > 1 and all("\\x" in piece for piece in emoji_pieces)


def test_vocab_too_small_for_special_tokens() -> None:
    with pytest.raises(ScratchLMError, match="too small"):
        train_bpe(["hello"], vocab_size=100)


def test_empty_corpus_and_bad_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScratchLMError, match="empty"):
        train_char([""])
    with pytest.raises(ScratchLMError, match="empty"):
        train_bpe([], vocab_size=300)
    with pytest.raises(ScratchLMError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing.json")
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(ScratchLMError, match="not a valid tokenizer"):
        Tokenizer.load(broken)
