from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchlm.data.shards import FORMAT_VERSION, MANIFEST_NAME, ShardWriter, TokenShards
from scratchlm.errors import ScratchLMError
from scratchlm.training.token_weights import (
    COUNTS_FILE,
    COUNTS_KEY_FILE,
    cached_token_counts,
    cached_token_weights,
    inverse_frequency_weights,
    token_counts,
    weighted_cross_entropy,
)


def prepared_split(
    directory: Path, tokens: np.ndarray, *, dtype: str, vocab_size: int, shard_max_tokens: int
) -> TokenShards:
    """A prepared dataset directory holding exactly `tokens` as its train split."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(directory, "train", np.dtype(dtype), shard_max_tokens)
    writer.append(tokens)
    shards = writer.close()
    manifest = {
        "format_version": FORMAT_VERSION,
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab_size,
        "tokenizer_fingerprint": "test",
        "eos_id": 0,
        "created": "2026-01-01T00:00:00Z",
        "splits": {
            "train": {
                "tokens": len(tokens),
                "documents": 1,
                "bytes": len(tokens),
                "shards": [{"file": shard.file, "tokens": shard.tokens} for shard in shards],
            }
        },
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return TokenShards.open(directory, "train")


def zipf_tokens(vocab_size: int, length: int, seed: int = 0) -> np.ndarray:
    """Zipf-like token ids (id 0 most frequent), with the last ids never occurring."""
    generator = np.random.default_rng(seed)
    ranks = np.arange(1, vocab_size - 3, dtype=np.float64)
    probabilities = (1.0 / ranks) / (1.0 / ranks).sum()
    return generator.choice(len(ranks), size=length, p=probabilities)


@pytest.mark.parametrize(("dtype", "vocab_size"), [("<u2", 300), ("<u4", 70_000)])
def test_counts_match_bincount_over_shards_and_chunks(
    tmp_path: Path, dtype: str, vocab_size: int
) -> None:
    tokens = zipf_tokens(vocab_size, 5000)
    tokens[::97] = vocab_size - 5  # a high id, beyond uint16 in the uint32 case
    shards = prepared_split(
        tmp_path / "data", tokens, dtype=dtype, vocab_size=vocab_size, shard_max_tokens=1234
    )
    assert len(shards.shards) == 5  # spans shard boundaries
    expected = np.bincount(tokens, minlength=vocab_size)
    for chunk_tokens in (1 << 24, 1000, 7, 1):
        counts = token_counts(shards, vocab_size, chunk_tokens=chunk_tokens)
        assert counts.dtype == np.int64 and counts.shape == (vocab_size,)
        np.testing.assert_array_equal(counts, expected)


def test_counts_reject_ids_outside_the_vocabulary(tmp_path: Path) -> None:
    shards = prepared_split(
        tmp_path / "data", np.array([1, 2, 40]), dtype="<u2", vocab_size=50, shard_max_tokens=10
    )
    with pytest.raises(ScratchLMError, match="token id 40"):
        token_counts(shards, 32)


def frequency_mean(weights: torch.Tensor, counts: np.ndarray) -> float:
    frequencies = counts / counts.sum()
    return float((weights[: len(counts)].double().numpy() * frequencies).sum())


def test_weights_average_one_and_favor_rare_tokens() -> None:
    counts = np.bincount(zipf_tokens(200, 20_000), minlength=200)
    weights = inverse_frequency_weights(counts, 256, 0.5)
    assert weights.dtype == torch.float32 and weights.shape == (256,)
    assert frequency_mean(weights, counts) == pytest.approx(1.0, abs=1e-6)
    # monotone: a rarer token never weighs less
    order = np.argsort(-counts, kind="stable")
    ordered = weights[torch.from_numpy(order)]
    assert torch.all(ordered[1:] >= ordered[:-1])
    assert weights[int(order[0])] < 1.0 < weights[int(order[-1])]
    # exactly the power law below the clip: w ∝ (count + 1) ** -0.5
    a, b = int(order[0]), int(order[10])
    expected_ratio = ((counts[b] + 1) / (counts[a] + 1)) ** -0.5
    assert float(weights[b] / weights[a]) == pytest.approx(expected_ratio, rel=1e-5)
    # padding rows never occur as targets
    assert torch.all(weights[200:] == 0)


def test_clipping_caps_rare_tokens_and_keeps_the_mean() -> None:
    counts = np.array([1_000_000, 10_000, 100, 1, 1, 0])
    unclipped = inverse_frequency_weights(counts, 8, 1.0, max_weight=1e12)
    assert float(unclipped.max()) > 100  # a token seen once would dominate
    clipped = inverse_frequency_weights(counts, 8, 1.0, max_weight=10.0)
    assert float(clipped.max()) == pytest.approx(10.0)
    assert frequency_mean(clipped, counts) == pytest.approx(1.0, abs=1e-6)
    assert frequency_mean(unclipped, counts) == pytest.approx(1.0, abs=1e-6)
    # the rare tokens (and the unseen one) sit at the cap; the most frequent carries the rest
    assert torch.all(clipped[1:6] == clipped[1])
    assert float(clipped[1]) == pytest.approx(10.0)
    frequent_mass = counts[0] / counts.sum()
    expected_top = (1 - 10.0 * (1 - frequent_mass)) / frequent_mass
    assert float(clipped[0]) == pytest.approx(expected_top, rel=1e-5)
    assert float(clipped[0]) < 1.0


def test_power_zero_is_uniform() -> None:
    counts = np.array([5, 0, 100, 1])
    weights = inverse_frequency_weights(counts, 64, 0.0)
    assert torch.equal(weights[:4], torch.ones(4))
    assert torch.equal(weights[4:], torch.zeros(60))


def test_bad_arguments_are_user_errors() -> None:
    counts = np.array([3, 4])
    with pytest.raises(ScratchLMError, match="power"):
        inverse_frequency_weights(counts, 64, -0.5)
    with pytest.raises(ScratchLMError, match="rows"):
        inverse_frequency_weights(counts, 1, 0.5)
    with pytest.raises(ScratchLMError, match=">= 1"):
        inverse_frequency_weights(counts, 64, 0.5, max_weight=0.5)
    with pytest.raises(ScratchLMError, match="no tokens"):
        inverse_frequency_weights(np.zeros(4, dtype=np.int64), 64, 0.5)


def test_weighted_cross_entropy_is_the_weighted_mean_and_ignores_masked_targets() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, generator=generator, dtype=torch.bfloat16)  # (B, T, V)
    targets = torch.randint(0, 8, (2, 5), generator=generator)
    targets[0, 1] = -100
    targets[1, 4] = -100
    weights = torch.rand(8, generator=generator) + 0.1
    loss = weighted_cross_entropy(logits, targets, weights)
    # by hand: sum(w[y] * nll) / sum(w[y]) over the targets that are not -100
    keep = targets.view(-1) != -100
    log_probs = torch.log_softmax(logits.float().view(-1, 8), dim=-1)[keep]
    kept = targets.view(-1)[keep]
    nll = -log_probs[torch.arange(len(kept)), kept]
    expected = (weights[kept] * nll).sum() / weights[kept].sum()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
    # None: exactly the trainer's unweighted loss
    plain = weighted_cross_entropy(logits, targets, None)
    reference = F.cross_entropy(logits.float().view(-1, 8), targets.view(-1), ignore_index=-100)
    assert torch.equal(plain, reference)
    torch.testing.assert_close(plain, nll.mean())
    with pytest.raises(ScratchLMError, match="padded_vocab_size"):
        weighted_cross_entropy(logits, targets, torch.ones(7))


def test_weighted_loss_gradient_pushes_rare_targets_harder() -> None:
    logits = torch.zeros(2, 4, requires_grad=True)
    targets = torch.tensor([0, 3])
    weights = torch.tensor([0.5, 1.0, 1.0, 4.0])
    weighted_cross_entropy(logits, targets, weights).backward()
    assert logits.grad is not None
    # the gradient on each row's target logit is -(1 - p) * w[y] / sum(w[y])
    assert float(logits.grad[1, 3]) == pytest.approx(8 * float(logits.grad[0, 0]))  # 4 / 0.5


def test_counts_are_cached_next_to_the_data(tmp_path: Path) -> None:
    tokens = zipf_tokens(100, 3000)
    shards = prepared_split(
        tmp_path / "data", tokens, dtype="<u2", vocab_size=100, shard_max_tokens=1000
    )
    weights = cached_token_weights(tmp_path / "data", shards, 128, 0.5)
    assert (tmp_path / "data" / COUNTS_FILE).is_file()
    assert (tmp_path / "data" / COUNTS_KEY_FILE).is_file()
    cached = np.load(tmp_path / "data" / COUNTS_FILE)
    np.testing.assert_array_equal(cached, np.bincount(tokens, minlength=100))
    # A second call reads the cache: make the shards unreadable to prove it.
    for shard in (tmp_path / "data").glob("train_*.bin"):
        shard.write_bytes(b"\xff" * shard.stat().st_size)  # ids 65535: would be rejected
    again = cached_token_weights(tmp_path / "data", shards, 128, 0.5)
    assert torch.equal(weights, again)
    # no temporary files left behind
    assert not list((tmp_path / "data").glob(".*tmp"))


def test_cache_is_keyed_by_the_manifest_and_checked(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    shards = prepared_split(
        directory, np.array([1, 1, 2, 3]), dtype="<u2", vocab_size=8, shard_max_tokens=10
    )
    cached_token_counts(directory, shards)
    # Another dataset in the same place (a different manifest): recounted, not the stale cache.
    key_record = (directory / COUNTS_KEY_FILE).read_text()
    for path in directory.glob("train_*.bin"):
        path.unlink()
    (directory / MANIFEST_NAME).unlink()
    other = prepared_split(
        directory, np.array([5, 5, 5, 4]), dtype="<u2", vocab_size=8, shard_max_tokens=10
    )
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["created"] = "2026-02-02T00:00:00Z"
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    other = TokenShards.open(directory, "train")
    assert list(cached_token_counts(directory, other)) == [0, 0, 0, 0, 1, 3, 0, 0]
    assert (directory / COUNTS_KEY_FILE).read_text() != key_record
    # A corrupted counts file (digest mismatch) is recomputed, not trusted.
    (directory / COUNTS_FILE).write_bytes((directory / COUNTS_FILE).read_bytes()[:-8] + b"\0" * 8)
    assert list(cached_token_counts(directory, other)) == [0, 0, 0, 0, 1, 3, 0, 0]


def test_read_only_data_directory_just_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "data"
    tokens = np.array([1, 2, 2, 3, 3, 3])
    shards = prepared_split(directory, tokens, dtype="<u2", vocab_size=4, shard_max_tokens=10)

    def read_only(path: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    # (chmod would not stop root, who runs the tests in some containers)
    monkeypatch.setattr("scratchlm.training.token_weights.atomic_open", read_only)
    counts = cached_token_counts(directory, shards)
    assert list(counts) == [0, 1, 2, 3]
    assert not (directory / COUNTS_FILE).exists()
