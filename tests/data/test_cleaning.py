"""Cleaning: each option does its job, and the counts say what was dropped."""

from __future__ import annotations

import pytest

from scratchlm.data.cleaning import (
    CleaningCounts,
    CleaningOptions,
    clean_documents,
    clean_piece,
    clean_text,
)
from scratchlm.errors import ScratchLMError

RAW = CleaningOptions(unicode_normalization=None, normalize_whitespace=False, deduplicate=False)


def test_nfc_composes_and_nfkc_also_folds_compatibility_characters() -> None:
    decomposed = "cafe\u0301 \ufb01ne"  # e + combining acute; the "fi" ligature
    assert (
        clean_text(decomposed, CleaningOptions(unicode_normalization="NFC")) == "caf\u00e9 \ufb01ne"
    )
    assert clean_text(decomposed, CleaningOptions(unicode_normalization="NFKC")) == "caf\u00e9 fine"
    assert clean_text(decomposed, RAW) == decomposed


def test_ascii_filter_maps_typographic_punctuation_and_counts_dropped_characters() -> None:
    options = CleaningOptions(ascii_only=True)
    cleaned, dropped = clean_piece(
        "Don\u2019t \u201cgo\u201d \u2014 caf\u00e9 \u65e5\u672c", options
    )
    assert cleaned == 'Don\'t "go" - caf'
    assert dropped == 3  # é and the two CJK characters
    counts = CleaningCounts()
    assert list(clean_documents(["\u65e5\u672c", "ok \u00e9"], options, counts)) == ["ok"]
    assert counts.dropped_non_ascii_chars == 3
    assert counts.dropped_empty == 1


def test_whitespace_normalization_keeps_single_newlines() -> None:
    text = "  Hello \t  world  \r\nline two\t\n\n\n\n\npara  \n  indented\n\n"
    expected = "Hello world\nline two\n\npara\n indented"
    assert clean_text(text, CleaningOptions()) == expected
    assert clean_text(text, RAW) == text


def test_min_chars_drops_short_documents() -> None:
    counts = CleaningCounts()
    options = CleaningOptions(min_chars=10)
    kept = list(clean_documents(["tiny", "long enough text", "   ", "  ok   "], options, counts))
    assert kept == ["long enough text"]
    assert counts.to_dict() == {
        "documents_seen": 4,
        "kept": 1,
        "dropped_empty": 1,
        "dropped_short": 2,
        "dropped_duplicate": 0,
        "dropped_non_ascii_chars": 0,
    }


def test_exact_deduplication_compares_cleaned_text() -> None:
    counts = CleaningCounts()
    texts = ["The cat.", "The  cat.  ", "The dog.", "The cat."]
    assert list(clean_documents(texts, CleaningOptions(), counts)) == ["The cat.", "The dog."]
    assert counts.dropped_duplicate == 2
    counts = CleaningCounts()
    no_dedup = CleaningOptions(deduplicate=False)
    assert len(list(clean_documents(texts, no_dedup, counts))) == 4
    assert counts.dropped_duplicate == 0


def test_piecewise_cleaning_matches_whole_text_at_safe_cuts() -> None:
    text = "  Alpha  beta\t\n\n\n\ngamma \u00e9\u0301  delta\n  epsilon   \n"
    options = CleaningOptions(unicode_normalization="NFKC", ascii_only=True)
    # Cut only between an ASCII non-space and ASCII whitespace, as sources does.
    cuts = [
        index
        for index in range(1, len(text))
        if text[index - 1] in "abdmt" and text[index] in " \t\n"
    ]
    pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    cleaned = "".join(
        clean_piece(piece, options, is_first=index == 0, is_last=index == len(pieces) - 1)[0]
        for index, piece in enumerate(pieces)
    )
    assert len(pieces) > 3
    assert cleaned == clean_text(text, options)


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(ScratchLMError, match="NFC, NFKC or none"):
        CleaningOptions(unicode_normalization="NFD")  # type: ignore[arg-type]
    with pytest.raises(ScratchLMError, match="min_chars"):
        CleaningOptions(min_chars=-1)
    with pytest.raises(ScratchLMError, match="unknown cleaning options"):
        CleaningOptions.from_dict({"lowercase": True})
    assert CleaningOptions.from_dict(CleaningOptions(ascii_only=True).to_dict()).ascii_only
