"""Token shards on disk: raw little-endian token arrays plus a JSON manifest, and their reader.

A prepared dataset directory holds `train_000000.bin`, `train_000001.bin`, ..., `val_000000.bin`, ...
(uint16 when every id fits, else uint32; at most `shard_max_tokens` tokens each) and `manifest.json`:

    {"format_version": 1, "dtype": "uint16", "vocab_size": ..., "tokenizer_fingerprint": "...",
     "tokenizer_kind": "bpe", "eos_id": ..., "source": ..., "val_source": ..., "validation": ...,
     "text_field": ..., "doc_separator": ..., "cleaning": {"options": {...}, "counts": {...}},
     "splits": {"train": {"tokens", "documents", "bytes", "shards": [{"file", "tokens"}]},
                "val": {...}},
     "created": "<ISO 8601 UTC>"}

`bytes` is the UTF-8 size of the split's cleaned text (EOS not counted), for bits-per-byte metrics.
The writer writes into the (temporary) directory that `prepare` renames into place when complete, so
a reader never sees a half-written dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from scratchlm.errors import ScratchLMError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")
DEFAULT_SHARD_MAX_TOKENS = 100_000_000
# The largest vocabulary stored as uint16. Ids then stay below 65535, which leaves the all-ones
# value unused (nanoGPT's convention), so a stray -1 cast to uint16 can never pass for a real token.
_UINT16_MAX_VOCAB = 65535


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when the vocabulary fits (half the disk and memory bandwidth), else uint32."""
    if vocab_size <= 0:
        raise ScratchLMError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= _UINT16_MAX_VOCAB else np.dtype("<u4")


def shard_file_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


@dataclass
class ShardInfo:
    file: str
    tokens: int


class ShardWriter:
    """Appends tokens to `split_000000.bin`, `split_000001.bin`, ... in `directory`, rolling over
    every `shard_max_tokens` tokens. Supports truncating back to an earlier position (used to drop a
    document already written and to carve the validation tail off the training split)."""

    def __init__(
        self, directory: Path, split: str, dtype: np.dtype[Any], shard_max_tokens: int
    ) -> None:
        if shard_max_tokens <= 0:
            raise ScratchLMError(f"shard_max_tokens must be positive, got {shard_max_tokens}")
        self.directory = Path(directory)
        self.split = split
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.shard_max_tokens = shard_max_tokens
        self.shards: list[ShardInfo] = []
        self.position = 0  # tokens written in all
        self._handle: BinaryIO | None = None

    def append(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens)
        if tokens.dtype != self.dtype:
            tokens = tokens.astype(self.dtype)
        start = 0
        while start < len(tokens):
            if not self.shards or self.shards[-1].tokens >= self.shard_max_tokens:
                self._open_new_shard()
            handle = self._current_handle()
            room = self.shard_max_tokens - self.shards[-1].tokens
            part = tokens[start : start + room]
            handle.write(part.tobytes())
            self.shards[-1].tokens += len(part)
            self.position += len(part)
            start += len(part)

    def truncate(self, position: int) -> None:
        """Drop every token at or after `position` (files past it are deleted)."""
        assert 0 <= position <= self.position, "truncate only shortens"
        if position == self.position:
            return
        self._close_handle()
        kept_tokens = 0
        kept_shards: list[ShardInfo] = []
        for shard in self.shards:
            if kept_tokens >= position:
                (self.directory / shard.file).unlink()
                continue
            keep = min(shard.tokens, position - kept_tokens)
            if keep < shard.tokens:
                with open(self.directory / shard.file, "r+b") as handle:
                    handle.truncate(keep * self.dtype.itemsize)
                shard.tokens = keep
            kept_shards.append(shard)
            kept_tokens += keep
        self.shards = kept_shards
        self.position = position

    def close(self) -> list[ShardInfo]:
        """Flush and fsync the open shard; return the shard list (safe to call more than once)."""
        self._close_handle()
        return list(self.shards)

    def _open_new_shard(self) -> None:
        self._close_handle()
        name = shard_file_name(self.split, len(self.shards))
        self._handle = open(self.directory / name, "wb")  # noqa: SIM115 (open across appends)
        self.shards.append(ShardInfo(name, 0))

    def _current_handle(self) -> BinaryIO:
        if self._handle is None:
            # Reopen the last shard after a truncate or close, to append to it.
            self._handle = open(self.directory / self.shards[-1].file, "ab")  # noqa: SIM115
        return self._handle

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a prepared dataset directory, checked for the format version."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ScratchLMError(
            f"{directory} is not a prepared dataset (no {MANIFEST_NAME}); prepare it with "
            f"`scratchlm data prepare SOURCE --out {directory}` or pass the raw data with --data"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ScratchLMError(
            f"{path} is unreadable ({error}); delete {directory} and prepare the data again"
        ) from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ScratchLMError(
            f"{path} has format version {version!r}, this scratchlm reads version {FORMAT_VERSION}; "
            f"prepare the data again with this version (delete {directory} first)"
        )
    assert isinstance(manifest, dict)
    return manifest


class TokenShards:
    """The tokens of one split of a prepared dataset, memory-mapped shard by shard."""

    def __init__(self, directory: Path, split: str, manifest: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.split = split
        self.manifest = manifest
        split_record = manifest["splits"][split]
        self.dtype: np.dtype[Any] = np.dtype(manifest["dtype"]).newbyteorder("<")
        self.vocab_size: int = int(manifest["vocab_size"])
        self.eos_id: int = int(manifest["eos_id"])
        self.num_tokens: int = int(split_record["tokens"])
        self.bytes: int = int(split_record["bytes"])
        self.documents: int = int(split_record["documents"])
        self.shards: list[np.memmap] = []
        # starts[i] is the global position of shard i's first token; starts[-1] == num_tokens.
        starts = [0]
        for shard in split_record["shards"]:
            path = self.directory / shard["file"]
            expected_bytes = int(shard["tokens"]) * self.dtype.itemsize
            actual_bytes = path.stat().st_size if path.is_file() else -1
            if actual_bytes != expected_bytes:
                found = "is missing" if actual_bytes < 0 else f"has {actual_bytes} bytes"
                raise ScratchLMError(
                    f"shard {path} {found}, the manifest expects {expected_bytes}; the dataset is "
                    f"damaged: delete {self.directory} and prepare the data again"
                )
            if expected_bytes == 0:
                continue
            self.shards.append(np.memmap(path, dtype=self.dtype, mode="r"))
            starts.append(starts[-1] + int(shard["tokens"]))
        if starts[-1] != self.num_tokens:
            raise ScratchLMError(
                f"{self.directory}: the {split} shards hold {starts[-1]} tokens but the manifest "
                f"says {self.num_tokens}; delete {self.directory} and prepare the data again"
            )
        self._starts = np.asarray(starts, dtype=np.int64)

    @classmethod
    def open(
        cls,
        directory: Path | str,
        split: str = "train",
        *,
        tokenizer_fingerprint: str | None = None,
        vocab_size: int | None = None,
    ) -> TokenShards:
        """Open a split, checking the manifest (and, when given, the tokenizer it was made with)."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if split not in manifest.get("splits", {}):
            available = ", ".join(manifest.get("splits", {})) or "none"
            raise ScratchLMError(
                f"{directory} has no {split!r} split (it has: {available}); prepare it again with "
                "a validation source or a non-zero validation fraction"
            )
        if tokenizer_fingerprint is not None and manifest["tokenizer_fingerprint"] != (
            tokenizer_fingerprint
        ):
            raise ScratchLMError(
                f"{directory} was tokenized with a different tokenizer (fingerprint "
                f"{manifest['tokenizer_fingerprint'][:12]}, this one is {tokenizer_fingerprint[:12]}); "
                "prepare the data again with this tokenizer, or use the tokenizer it was made with"
            )
        if vocab_size is not None and int(manifest["vocab_size"]) > vocab_size:
            raise ScratchLMError(
                f"{directory} holds token ids up to {int(manifest['vocab_size']) - 1} but the model's "
                f"vocabulary has {vocab_size}; use a model whose vocab_size is at least "
                f"{manifest['vocab_size']} or prepare the data with this model's tokenizer"
            )
        return cls(directory, split, manifest)

    def __len__(self) -> int:
        return self.num_tokens

    def document_starts(self) -> np.ndarray:
        """The position of every document's first token (int64, ascending, starting with 0): 0 and
        each position after an end-of-document token, short of the end of the split."""
        found = [np.zeros(1, dtype=np.int64)]
        for shard, start in zip(self.shards, self._starts[:-1], strict=True):
            # Scan in pieces: a flatnonzero over a whole memmap would build a boolean copy of it.
            for offset in range(0, len(shard), 1 << 24):
                piece = shard[offset : offset + (1 << 24)]
                found.append(np.flatnonzero(piece == self.eos_id) + (int(start) + offset + 1))
        starts = np.concatenate(found)
        return starts[starts < self.num_tokens]

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as a new array (may span several shards)."""
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(
                f"read({start}, {length}) is outside the {self.num_tokens} tokens of {self.split}"
            )
        if length == 0:
            return np.empty(0, dtype=self.dtype)
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        offset = start - int(self._starts[shard])
        first = self.shards[shard][offset : offset + length]
        if len(first) == length:
            return np.array(first)
        parts = [first]
        remaining = length - len(first)
        while remaining > 0:
            shard += 1
            part = self.shards[shard][:remaining]
            parts.append(part)
            remaining -= len(part)
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return (
            f"TokenShards({str(self.directory)!r}, {self.split!r}, tokens={self.num_tokens}, "
            f"dtype={self.dtype.name})"
        )
