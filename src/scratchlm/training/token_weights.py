"""Rare-token loss re-weighting: per-token-id weights from the training split's token frequencies.

With `--token-weighting inverse-freq --token-weighting-power a`, each target token t contributes
to the training loss with weight

    w_t = c * (count_t + 1) ** (-a),   clipped to at most `max_weight`,

where count_t is how often t occurs in the training split and c is chosen so that the
frequency-weighted mean weight is exactly 1 (sum_t p_t * w_t = 1, p_t = count_t / total). So an
average batch keeps the loss scale (and the learning rate that suits it) of unweighted training,
while rare tokens pull harder and frequent ones (spaces, "the", EOS) less. a = 0 is plain
cross-entropy; a = 1 approaches class-balanced weighting. docs/training.md says when it helps
(rare-token loss) and what it costs (overall perplexity).

Counts are computed once per prepared dataset with bounded memory and cached beside it as
`token_counts.npy` (plus `token_counts.json`, which records the manifest it belongs to).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scratchlm.data.shards import TokenShards
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_open, atomic_write_json

logger = logging.getLogger(__name__)

COUNTS_FILE = "token_counts.npy"
COUNTS_KEY_FILE = "token_counts.json"
DEFAULT_MAX_WEIGHT = 10.0


def token_counts(
    shards: TokenShards, vocab_size: int, *, chunk_tokens: int = 1 << 24
) -> np.ndarray:
    """How often each token id occurs in the split: int64 array of shape (vocab_size,).

    Reads `chunk_tokens` tokens at a time (64 MiB of uint32 at the default), so memory stays
    bounded whatever the split's size; uint16 and uint32 shards both work.
    """
    if chunk_tokens < 1:
        raise ScratchLMError(f"chunk_tokens must be positive (got {chunk_tokens})")
    if vocab_size < 1:
        raise ScratchLMError(f"vocab_size must be positive (got {vocab_size})")
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, shards.num_tokens, chunk_tokens):
        chunk = shards.read(start, min(chunk_tokens, shards.num_tokens - start))
        # bincount widens uint16/uint32 to intp itself; minlength keeps ids that do not occur.
        chunk_counts = np.bincount(chunk, minlength=vocab_size)
        if len(chunk_counts) > vocab_size:
            largest = int(chunk.max())
            raise ScratchLMError(
                f"{shards.directory} holds token id {largest}, outside a vocabulary of "
                f"{vocab_size}; prepare the data with this model's tokenizer"
            )
        counts += chunk_counts
    return counts


def inverse_frequency_weights(
    counts: np.ndarray,
    padded_vocab_size: int,
    power: float,
    *,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> torch.Tensor:
    """Per-token loss weights, float32 of shape (padded_vocab_size,), for `weighted_cross_entropy`.

    w_t = c * (count_t + 1) ** (-power), with c such that sum_t p_t * w_t = 1 (p the empirical
    token frequency) after clipping at `max_weight`. Why clip: with power 1 a token seen once
    would weigh half as much as all occurrences of the most frequent token together, so one rare
    token in a batch would decide the whole gradient (a noisy, high-variance loss). Clipping
    bounds any single target's influence to `max_weight` times an average token's.

    The clip is applied as w_t = min(c * raw_t, max_weight) with c solved so the mean stays
    exactly 1 (clipping then scaling again would push clipped tokens above the cap). Rows past
    `len(counts)` (the padding that rounds the vocabulary up) get weight 0: they never occur as
    targets. power 0 gives weight 1 to every real token.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or len(counts) == 0:
        raise ScratchLMError(f"counts must be a non-empty 1-D array (got shape {counts.shape})")
    if len(counts) > padded_vocab_size:
        raise ScratchLMError(
            f"the data has {len(counts)} token ids but the model's output layer has "
            f"{padded_vocab_size} rows; use a model whose vocabulary covers the data"
        )
    if power < 0:
        raise ScratchLMError(
            f"--token-weighting-power must be >= 0 (got {power}); 0 = unweighted, 0.5 is a "
            "mild boost of rare tokens, 1 is class-balanced"
        )
    if max_weight < 1:
        raise ScratchLMError(
            f"the maximum token weight must be >= 1 (got {max_weight}): the weights average 1"
        )
    total = int(counts.sum())
    if total <= 0:
        raise ScratchLMError("the training split holds no tokens; token weights need counts")
    frequencies = counts.astype(np.float64) / total  # p_t, sums to 1
    raw = (counts.astype(np.float64) + 1.0) ** (-power)  # +1: unseen tokens get a finite weight
    scale = _mean_one_scale(raw, frequencies, max_weight)
    weights = np.zeros(padded_vocab_size, dtype=np.float64)
    weights[: len(counts)] = np.minimum(scale * raw, max_weight)
    return torch.from_numpy(weights.astype(np.float32))


def _mean_one_scale(raw: np.ndarray, frequencies: np.ndarray, max_weight: float) -> float:
    """c with sum_t p_t * min(c * raw_t, max_weight) = 1.

    The left side is continuous and non-decreasing in c, so a fixed point exists when
    max_weight >= 1. Iterate: the tokens clipped at c contribute max_weight * (their mass), the
    rest scale with c; solve for c and repeat until the clipped set stops growing (it only
    grows, so this ends within len(raw) rounds; in practice two or three).
    """
    clipped = np.zeros(len(raw), dtype=bool)
    for _ in range(len(raw) + 1):
        free_mass = float((frequencies * raw)[~clipped].sum())
        clipped_mass = float(frequencies[clipped].sum())
        if free_mass <= 0.0:
            # Every occurring token is clipped: the weights are max_weight / mean (cannot happen
            # with max_weight >= 1, kept as a guard against a zero division).
            return max_weight / max(float(raw.max()), 1e-300)
        scale = (1.0 - max_weight * clipped_mass) / free_mass
        newly_clipped = (scale * raw > max_weight) & ~clipped
        if not newly_clipped.any():
            return scale
        clipped |= newly_clipped
    raise AssertionError("the clipped set grows monotonically, so this loop ends")


def counts_cache_key(shards: TokenShards) -> str:
    """Identifies the split the counts come from: its manifest record, dtype, vocabulary and
    tokenizer, and when it was prepared (a re-prepared dataset gets new counts)."""
    manifest = shards.manifest
    material: dict[str, Any] = {
        "split": shards.split,
        "record": manifest["splits"][shards.split],
        "dtype": manifest.get("dtype"),
        "vocab_size": manifest.get("vocab_size"),
        "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"),
        "created": manifest.get("created"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def cached_token_counts(data_dir: Path, shards: TokenShards) -> np.ndarray:
    """`token_counts(shards, shards.vocab_size)`, cached in `data_dir` (computed once per dataset).

    Two files: `token_counts.npy` (the counts) and `token_counts.json` (the cache key and the
    SHA-256 of the .npy bytes). Each is written atomically; the digest catches a crash between the
    two writes. A read-only data directory just means the counts are computed every time.
    """
    data_dir = Path(data_dir)
    counts_path, key_path = data_dir / COUNTS_FILE, data_dir / COUNTS_KEY_FILE
    key = counts_cache_key(shards)
    cached = _read_cached_counts(counts_path, key_path, key, shards.vocab_size)
    if cached is not None:
        return cached
    counts = token_counts(shards, shards.vocab_size)
    try:
        with atomic_open(counts_path) as handle:
            np.save(handle, counts, allow_pickle=False)
        digest = hashlib.sha256(counts_path.read_bytes()).hexdigest()
        atomic_write_json(key_path, {"key": key, "split": shards.split, "sha256": digest})
    except OSError as error:
        logger.info("token counts not cached in %s (%s); computed in memory", data_dir, error)
    return counts


def _read_cached_counts(
    counts_path: Path, key_path: Path, key: str, vocab_size: int
) -> np.ndarray | None:
    try:
        record = json.loads(key_path.read_text(encoding="utf-8"))
        data = counts_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    if record.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    try:
        counts = np.load(counts_path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if counts.dtype != np.int64 or counts.shape != (vocab_size,):
        return None
    return counts


def cached_token_weights(
    data_dir: Path,
    shards: TokenShards,
    padded_vocab_size: int,
    power: float,
    *,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> torch.Tensor:
    """Inverse-frequency weights (see `inverse_frequency_weights`) of the training split in
    `data_dir`, with the counts cached beside the data. float32 (padded_vocab_size,) on CPU."""
    counts = cached_token_counts(data_dir, shards)
    return inverse_frequency_weights(counts, padded_vocab_size, power, max_weight=max_weight)


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """The training loss: cross-entropy of logits (..., V) against targets (...), -100 ignored.

    With `weights` (V,) each target y counts w[y] times and the loss is
    sum(w[y] * nll) / sum(w[y]) over the non-ignored targets (PyTorch's normalization for
    `weight=`), so a batch's loss stays a weighted mean. `weights=None` is the plain mean,
    computed exactly as before (bit-identical to unweighted training).

    Only the training loss is weighted: validation loss, perplexity and bits per byte stay
    unweighted, so runs with and without re-weighting (or with different powers) compare on the
    same scale, the true likelihood of the data.
    """
    vocab = logits.shape[-1]
    # float32 for the softmax under bf16/fp16 autocast; (B, T, V) -> (B*T, V), targets (B*T,)
    flat_logits = logits.float().reshape(-1, vocab)
    flat_targets = targets.reshape(-1)
    if weights is None:
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=-100)
    if weights.shape != (vocab,):
        raise ScratchLMError(
            f"token weights have shape {tuple(weights.shape)} but the logits have {vocab} "
            "columns; compute the weights with the model's padded_vocab_size"
        )
    return F.cross_entropy(
        flat_logits,
        flat_targets,
        weight=weights.to(device=flat_logits.device, dtype=torch.float32),
        ignore_index=-100,
    )
