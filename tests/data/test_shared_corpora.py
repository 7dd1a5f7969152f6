"""The real corpora in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

from scratchlm.data.cleaning import CleaningOptions, clean_text
from scratchlm.data.prepare import prepare_dataset
from scratchlm.data.shards import read_manifest
from scratchlm.data.sources import iter_documents, sample_text
from scratchlm.tokenizer import train_bpe, train_char
from tests.data.helpers import shared_data_file, split_tokens


def test_tinyshakespeare_is_one_document_split_like_nanogpt(tmp_path: Path) -> None:
    path = shared_data_file("tinyshakespeare.txt")
    text = path.read_text(encoding="utf-8")
    tokenizer = train_char([text])
    out = prepare_dataset(str(path), tmp_path / "out", tokenizer, num_workers=0, progress=False)
    manifest = read_manifest(out)
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    total = train["tokens"] + val["tokens"]
    assert total == len(clean_text(text, CleaningOptions())) + 1  # one EOS at the end
    assert train["tokens"] == int(total * 0.9)  # the last 10%, cut mid-text
    assert train["documents"] == val["documents"] == 1
    assert train["bytes"] + val["bytes"] == total - 1  # ASCII: one byte per character
    val_text = tokenizer.decode(split_tokens(out, "val"), skip_special=True)
    assert val_text == clean_text(text, CleaningOptions())[train["tokens"] :]


def test_tinystories_valid_has_one_eos_per_story(tmp_path: Path) -> None:
    path = shared_data_file("tinystories_valid.txt")
    stories = sum(
        1 for line in path.read_text(encoding="utf-8").splitlines() if line == "<|endoftext|>"
    )
    assert sum(1 for _ in iter_documents(str(path))) == stories == 300
    tokenizer = train_bpe(sample_text(str(path), max_chars=100_000), 512)
    out = prepare_dataset(str(path), tmp_path / "out", tokenizer, num_workers=0, progress=False)
    manifest = read_manifest(out)
    counts = manifest["cleaning"]["counts"]["train"]
    tokens = split_tokens(out, "train") + split_tokens(out, "val")
    assert tokens.count(tokenizer.eos_id) == counts["kept"] == stories - counts["dropped_duplicate"]
    assert (
        manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"]
        == counts["kept"]
    )
    assert tokens[-1] == tokenizer.eos_id


def test_wikitext_tokens_file_reads_as_plain_text(tmp_path: Path) -> None:
    path = shared_data_file("wikitext2_valid.tokens.txt")
    sample = "".join(sample_text(str(path), max_chars=50_000))
    assert len(sample) == 50_000 and "= " in sample
