"""The corpus itself: stories in TinyStories' file format, the same ones for the same seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from scratchlm.data.stories.grammar import render_story, sample_story_plan
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_open

END_OF_TEXT = "<|endoftext|>"
# TinyStories file format: every story is followed by a line that is exactly "<|endoftext|>".
DOCUMENT_SEPARATOR = f"\n{END_OF_TEXT}\n"

# Bump when the generated text changes (the golden digest in tests/data/test_stories.py will
# fail): corpora are cached by this version, size and seed.
GENERATOR_VERSION = 1


def generate_stories(num_stories: int | None = None, *, seed: int = 0) -> Iterator[str]:
    """Yield `num_stories` stories (endlessly when None), the same ones for the same seed."""
    if num_stories is not None and num_stories < 0:
        raise ScratchLMError(
            f"num_stories must be 0 or more, got {num_stories}; pass a count or None for endless."
        )
    rng = random.Random(seed)
    count = 0
    while num_stories is None or count < num_stories:
        yield render_story(sample_story_plan(rng), rng)
        count += 1


def write_synthetic_corpus(path: Path, target_bytes: int, seed: int = 0) -> Path:
    """Write stories to `path` until it holds at least `target_bytes` bytes; return `path`.

    Every story is followed by "\\n<|endoftext|>\\n", so the file ends at a story boundary (the first
    one at or after `target_bytes`). The file is written atomically: it appears complete or not at all.
    """
    if target_bytes <= 0:
        raise ScratchLMError(
            f"target_bytes must be a positive number of bytes, got {target_bytes}; for example 10_000_000 for 10 MB."
        )
    path = Path(path)
    written = 0
    chunk: list[bytes] = []
    chunk_bytes = 0
    with atomic_open(path) as handle:
        for story in generate_stories(seed=seed):
            document = (story + DOCUMENT_SEPARATOR).encode("utf-8")
            chunk.append(document)
            chunk_bytes += len(document)
            written += len(document)
            # Write in ~1 MB pieces: few system calls, little memory, whatever the target size.
            if written >= target_bytes or chunk_bytes >= 1 << 20:
                handle.write(b"".join(chunk))
                chunk.clear()
                chunk_bytes = 0
            if written >= target_bytes:
                break
    return path
