"""TokenWindowLoader and iter_eval_batches: exact, deterministic, resumable, rank-independent."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scratchlm.data.loader import TokenWindowLoader, iter_eval_batches
from scratchlm.data.shards import TokenShards
from scratchlm.errors import ScratchLMError
from tests.data.helpers import write_token_shards

CONTEXT = 8


@pytest.fixture
def shards(tmp_path: Path) -> TokenShards:
    # Token value == position, so a window's first token says where it starts. Small shards make
    # many windows cross a shard boundary.
    return write_token_shards(
        tmp_path / "data", np.arange(1000, dtype=np.uint16), shard_max_tokens=37
    )


def loader(shards: TokenShards, **overrides: int | str) -> TokenWindowLoader:
    settings: dict[str, Any] = {"context_length": CONTEXT, "batch_size": 4, "seed": 7, **overrides}
    return TokenWindowLoader(shards, **settings)


def batches(
    window_loader: TokenWindowLoader, count: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [window_loader.next_batch() for _ in range(count)]


def test_batches_are_windows_of_the_data_with_shifted_targets(shards: TokenShards) -> None:
    inputs, targets = loader(shards).next_batch()
    assert inputs.shape == targets.shape == (4, CONTEXT)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(
        targets, inputs + 1
    )  # the data counts up, so targets are inputs shifted by one
    assert torch.equal(inputs, inputs[:, :1] + torch.arange(CONTEXT))
    starts = inputs[:, 0]
    assert len(set((starts % CONTEXT).tolist())) == 1  # all windows of an epoch share one shift


def test_same_seed_same_batches_other_seed_other_batches(shards: TokenShards) -> None:
    first = batches(loader(shards), 5)
    second = batches(loader(shards), 5)
    other = batches(loader(shards, seed=8), 5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_restoring_the_state_continues_exactly(shards: TokenShards) -> None:
    uninterrupted = loader(shards)
    expected = batches(uninterrupted, 60)  # crosses several epochs
    resumed_from = loader(shards)
    batches(resumed_from, 25)
    state = resumed_from.state_dict()
    assert set(state.values()) and all(isinstance(value, (int, str)) for value in state.values())
    restored = loader(shards)
    restored.load_state_dict(state)
    for index, (inputs, targets) in enumerate(batches(restored, 35), start=25):
        assert torch.equal(inputs, expected[index][0]) and torch.equal(targets, expected[index][1])
    assert restored.state_dict() == uninterrupted.state_dict()


def test_one_rank_with_two_micro_batches_sees_what_two_ranks_see(shards: TokenShards) -> None:
    single = loader(shards)
    ranks = [loader(shards, rank=rank, world_size=2) for rank in range(2)]
    for _ in range(10):  # 10 global steps of 8 windows stay within the first epoch (>= 123 windows)
        micro_batches = [single.next_batch()[0], single.next_batch()[0]]
        per_rank = [rank_loader.next_batch()[0] for rank_loader in ranks]
        assert torch.equal(torch.cat(micro_batches), torch.cat(per_rank))
    assert single.tokens_served == ranks[0].tokens_served == ranks[1].tokens_served
    # A checkpoint written by the two-rank run resumes a one-rank run at the same place.
    resumed = loader(shards)
    resumed.load_state_dict(ranks[0].state_dict())
    assert torch.equal(resumed.next_batch()[0], single.next_batch()[0])


def test_two_ranks_match_one_rank_with_accumulation_across_epochs(shards: TokenShards) -> None:
    # 1000 tokens / 8 = 123-124 windows per epoch; a step takes 8 (2 micro-batches of 4 on one
    # rank, or 1 micro-batch on each of 2): epochs must roll over at the same step for both.
    single = loader(shards, accumulation=2)
    ranks = [loader(shards, rank=rank, world_size=2) for rank in range(2)]
    epochs = set()
    for _ in range(60):  # about 4 epochs
        micro_batches = [single.next_batch()[0], single.next_batch()[0]]
        per_rank = [rank_loader.next_batch()[0] for rank_loader in ranks]
        assert torch.equal(torch.cat(micro_batches), torch.cat(per_rank))
        epochs.add(single.epoch)
    assert len(epochs) >= 3
    assert single.state_dict() == ranks[0].state_dict()


def test_epochs_roll_over_with_new_boundaries_and_order(tmp_path: Path) -> None:
    small = write_token_shards(
        tmp_path / "small", np.arange(100, dtype=np.uint16), shard_max_tokens=1000
    )
    window_loader = loader(small, context_length=10, batch_size=3)
    seen_by_epoch: dict[int, list[int]] = {}
    for _ in range(40):
        inputs, _ = window_loader.next_batch()
        seen_by_epoch.setdefault(window_loader.epoch, []).extend(inputs[:, 0].tolist())
    assert len(seen_by_epoch) > 5
    shifts = set()
    for epoch, starts in list(seen_by_epoch.items())[:-1]:
        assert len(starts) == len(set(starts)) == 9, (
            epoch
        )  # (100 - shift - 1) // 10 == 9 windows: 3 batches of 3
        shifts.add(starts[0] % 10)
    assert len(shifts) > 1  # window boundaries move between epochs


def test_too_little_data_for_one_batch_is_a_user_error(tmp_path: Path) -> None:
    tiny = write_token_shards(
        tmp_path / "tiny", np.arange(40, dtype=np.uint16), shard_max_tokens=1000
    )
    with pytest.raises(
        ScratchLMError, match="smaller --batch-size or --context-length, or more data"
    ):
        TokenWindowLoader(tiny, context_length=16, batch_size=4, seed=0)
    window_loader = TokenWindowLoader(tiny, context_length=4, batch_size=2, seed=0)
    with pytest.raises(ScratchLMError, match="--seed 0"):
        TokenWindowLoader(tiny, context_length=4, batch_size=2, seed=1).load_state_dict(
            window_loader.state_dict()
        )


def test_eval_batches_are_consecutive_windows_from_the_start(shards: TokenShards) -> None:
    evaluated = list(iter_eval_batches(shards, context_length=CONTEXT, batch_size=16))
    inputs = torch.cat([batch[0] for batch in evaluated])
    targets = torch.cat([batch[1] for batch in evaluated])
    assert inputs.shape == ((1000 - 1) // CONTEXT, CONTEXT)
    assert torch.equal(inputs.flatten(), torch.arange(inputs.numel()))
    assert torch.equal(targets, inputs + 1)
    assert [len(batch[0]) for batch in evaluated][-1] == 124 % 16
    limited = list(iter_eval_batches(shards, context_length=CONTEXT, batch_size=4, max_tokens=50))
    assert sum(len(batch[0]) for batch in limited) == 6  # (50 - 1) // 8; the partial window dropped
    only = list(iter_eval_batches(shards, context_length=CONTEXT, batch_size=4, max_tokens=5))
    assert len(only) == 1 and only[0][0].tolist() == [[0, 1, 2, 3]]  # shorter than one window


# --- windows at document starts ------------------------------------------------------------------

EOS = 2  # write_token_shards' eos_id


def documents_tokens(lengths: list[int]) -> np.ndarray:
    """Documents of these lengths, each ended by EOS; a document token is its position + 10 (never
    EOS), so a window's first token says where it starts."""
    tokens: list[int] = []
    for length in lengths:
        tokens.extend(len(tokens) + 10 + offset for offset in range(length))
        tokens.append(EOS)
    return np.asarray(tokens, dtype=np.uint16)


def naive_document_windows(tokens: np.ndarray, context: int) -> list[int]:
    """Every document start, and start + k * context inside a document (with its EOS) longer than
    the context, for windows of context + 1 tokens that fit."""
    starts = [0] + [index + 1 for index, token in enumerate(tokens) if token == EOS]
    starts = [start for start in starts if start < len(tokens)]
    windows = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(tokens)
        windows.extend(range(start, end, context))
    return [start for start in windows if start + context + 1 <= len(tokens)]


@pytest.fixture
def documents(tmp_path: Path) -> tuple[np.ndarray, TokenShards]:
    rng = np.random.default_rng(0)
    tokens = documents_tokens([int(length) for length in rng.integers(0, 30, size=60)])
    return tokens, write_token_shards(tmp_path / "docs", tokens, shard_max_tokens=37)


def test_document_starts_cross_shard_boundaries(documents: tuple[np.ndarray, TokenShards]) -> None:
    tokens, shards = documents
    expected = [0] + [
        i + 1 for i, token in enumerate(tokens) if token == EOS and i + 1 < len(tokens)
    ]
    assert shards.document_starts().tolist() == expected


def test_document_windows_start_at_documents_and_cover_long_ones(
    documents: tuple[np.ndarray, TokenShards],
) -> None:
    tokens, shards = documents
    expected = naive_document_windows(tokens, CONTEXT)
    assert any(b - a == CONTEXT for a, b in itertools.pairwise(expected))  # long docs
    window_loader = loader(shards, windows="document")
    rows: list[tuple[int, ...]] = []
    while True:
        inputs, targets = window_loader.next_batch()
        if window_loader.epoch > 0:
            break
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
        rows.extend(tuple(row) for row in inputs.tolist())
    # One epoch: every window at most once, all of them but the last partial batch.
    wanted = {tuple(tokens[start : start + CONTEXT].tolist()) for start in expected}
    assert len(rows) == len(set(rows)) == len(expected) // 4 * 4
    assert set(rows) <= wanted


def test_document_windows_resume_exactly_and_refuse_another_mode(
    documents: tuple[np.ndarray, TokenShards],
) -> None:
    _, shards = documents
    uninterrupted = loader(shards, windows="document")
    expected = batches(uninterrupted, 40)  # several epochs
    first = loader(shards, windows="document")
    batches(first, 15)
    restored = loader(shards, windows="document")
    restored.load_state_dict(first.state_dict())
    for index, (inputs, _) in enumerate(batches(restored, 25), start=15):
        assert torch.equal(inputs, expected[index][0])
    with pytest.raises(ScratchLMError, match="--windows document"):
        loader(shards).load_state_dict(first.state_dict())
    with pytest.raises(ScratchLMError, match="windows must be one of any, document"):
        loader(shards, windows="story")
