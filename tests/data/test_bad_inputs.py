"""Bad inputs end in a ScratchLMError that names the problem and the fix, and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchlm.data.prepare import prepare_dataset
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import Tokenizer
from tests.data.helpers import stories_text


def assert_fails_cleanly(
    source: str, tmp_path: Path, tokenizer: Tokenizer, pattern: str, **options: object
) -> None:
    out = tmp_path / "prepared" / "out"
    settings: dict[str, object] = {"num_workers": 0, "progress": False, **options}
    with pytest.raises(ScratchLMError, match=pattern):
        prepare_dataset(source, out, tokenizer, **settings)  # type: ignore[arg-type]
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], f"half-written output left behind: {leftovers}"


def test_missing_file(tmp_path: Path, alphabet_tokenizer: Tokenizer) -> None:
    assert_fails_cleanly(
        str(tmp_path / "nope.txt"), tmp_path, alphabet_tokenizer, r"nope.txt.*does not exist"
    )


def test_empty_file(tmp_path: Path, alphabet_tokenizer: Tokenizer) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_fails_cleanly(
        str(empty), tmp_path, alphabet_tokenizer, r"empty.txt is empty; pass a file"
    )


def test_file_with_nothing_left_after_cleaning(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n<|endoftext|>\n  \n")
    assert_fails_cleanly(
        str(blank),
        tmp_path,
        alphabet_tokenizer,
        r"no documents left after cleaning.*dropped_empty 2",
    )


def test_non_utf8_file_fails_midway_without_a_half_written_dataset(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    latin1 = tmp_path / "latin1.txt"
    # Valid stories first, so shards are already being written when the bad byte turns up.
    latin1.write_bytes(
        stories_text(["A good story."] * 50).encode() + "Caf\u00e9\n".encode("latin-1")
    )
    offset = len(stories_text(["A good story."] * 50).encode()) + 3
    assert_fails_cleanly(
        str(latin1),
        tmp_path,
        alphabet_tokenizer,
        rf"not valid UTF-8.*offset {offset}.*iconv -f latin1 -t utf-8",
    )


def test_jsonl_record_without_the_text_field(tmp_path: Path, alphabet_tokenizer: Tokenizer) -> None:
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"content": "wrong field"}\n')
    assert_fails_cleanly(
        str(jsonl),
        tmp_path,
        alphabet_tokenizer,
        r"line 2 has no field 'text' \(its fields: 'content'\).*--text-field",
    )
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"text": 42}\n')
    assert_fails_cleanly(
        str(numbers), tmp_path, alphabet_tokenizer, r"line 1 has a non-string field 'text'"
    )


def test_corpus_too_small_for_a_validation_split(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("Hi.")
    assert_fails_cleanly(
        str(tiny),
        tmp_path,
        alphabet_tokenizer,
        r"too small to split off 0.1.*--val-data",
        val_fraction=0.1,
    )


def test_missing_validation_source_fails_before_the_training_pass(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    train = tmp_path / "train.txt"
    train.write_text(stories_text())
    assert_fails_cleanly(
        str(train),
        tmp_path,
        alphabet_tokenizer,
        r"valid.txt.*does not exist",
        val_source=str(tmp_path / "valid.txt"),
    )


def test_bad_options(tmp_path: Path, alphabet_tokenizer: Tokenizer) -> None:
    train = tmp_path / "train.txt"
    train.write_text(stories_text())
    assert_fails_cleanly(
        str(train),
        tmp_path,
        alphabet_tokenizer,
        r"validation fraction must be in \[0, 1\)",
        val_fraction=1.0,
    )
    archive = tmp_path / "valid.zip"
    archive.write_bytes(b"PK\x03\x04")
    assert_fails_cleanly(
        str(train), tmp_path, alphabet_tokenizer, r"unsupported file type", val_source=str(archive)
    )
    data_json = tmp_path / "data.json"
    data_json.write_text("[]")
    assert_fails_cleanly(
        str(data_json), tmp_path, alphabet_tokenizer, r"JSON array to one object per line"
    )
