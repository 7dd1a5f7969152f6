"""Helpers for the data pipeline tests: small corpora and token-stream checks."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np

from scratchlm.data.shards import FORMAT_VERSION, MANIFEST_NAME, ShardWriter, TokenShards

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

STORIES = [
    "Once upon a time there was a little cat.\nThe cat liked milk.",
    "Tom had a red ball. He played with it every day.",
    "The sun was hot. Lily went to the park with her mom.",
    "A small bird sang a song in the big green tree.",
    "Ben and Sue built a tall tower of blocks.\n\nThen it fell down!",
    "The dog ran fast. It wanted to catch the ball.",
    "Mia found a shiny stone by the river.",
    "The old owl told the children a story about the moon.",
]

# Characters the tests use; anything else encodes as <|unk|> with the character tokenizer.
ALPHABET = string.printable + "éèüñçÅ’“”—…日本語ﬁ\u00a0"


def stories_text(stories: list[str] = STORIES) -> str:
    """TinyStories layout: each story followed by a line holding <|endoftext|>."""
    return "".join(f"{story}\n<|endoftext|>\n" for story in stories)


def split_tokens(directory: Path, split: str) -> list[int]:
    shards = TokenShards.open(directory, split)
    return shards.read(0, shards.num_tokens).tolist()


def documents_of(tokens: list[int], eos_id: int) -> list[list[int]]:
    """Token lists of the documents in a stream that ends every document with EOS."""
    assert tokens and tokens[-1] == eos_id, "every document ends with EOS"
    documents: list[list[int]] = [[]]
    for token in tokens[:-1]:
        if token == eos_id:
            documents.append([])
        else:
            documents[-1].append(token)
    return documents


def write_token_shards(
    directory: Path, tokens: np.ndarray, *, shard_max_tokens: int, split: str = "train"
) -> TokenShards:
    """A minimal prepared dataset holding exactly `tokens`, for loader tests."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(directory, split, np.dtype("<u2"), shard_max_tokens)
    writer.append(tokens)
    shards = writer.close()
    manifest = {
        "format_version": FORMAT_VERSION,
        "dtype": "uint16",
        "vocab_size": 65535,
        "tokenizer_fingerprint": "test",
        "eos_id": 2,
        "splits": {
            split: {
                "tokens": len(tokens),
                "documents": 1,
                "bytes": len(tokens),
                "shards": [{"file": shard.file, "tokens": shard.tokens} for shard in shards],
            }
        },
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return TokenShards.open(directory, split)


def shared_data_file(name: str) -> Path:
    """A real corpus from ../shared/data, or skip the test when that folder is absent."""
    import pytest

    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not available (the shared corpora sit beside the repository)")
    return path
