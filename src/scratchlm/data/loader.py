"""Batches of token windows for training (shuffled, resumable, rank-aware) and evaluation (in order).

Training windows hold `context_length + 1` tokens (inputs and the targets shifted by one). Where
they start (`windows`):
- "any": at `shift + k * context_length`. Each epoch draws a new `shift` in [0, context_length), so
  every epoch sees different window boundaries.
- "document": at document starts (after each end-of-document token), as nanochat aligns its rows to
  BOS: every document is read from its beginning, so the model never learns that its characters,
  say, appear unintroduced (a window cut mid-story shows names out of nowhere). A document longer
  than the context continues in further windows, at its start + k * context_length; a window runs
  on past its document's end into the next one, as in "any".
Each epoch draws a new permutation of the windows from a generator seeded by (seed, epoch), so any
epoch can be regenerated exactly. A global cursor
walks that order: at cursor c, rank r takes windows `order[c + r*B : c + (r+1)*B]` and the cursor
advances by B * world_size. So one rank taking two micro-batches sees exactly the windows that two
ranks taking one each see, and the (epoch, cursor) pair is all a checkpoint needs to resume exactly.
A new epoch starts only at an optimizer-step boundary (every `accumulation` micro-batches), when
fewer windows are left than one optimizer step takes: so the epoch boundaries, too, depend only on
the global batch (B * world_size * accumulation), not on how it is split over ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from scratchlm.data.shards import TokenShards
from scratchlm.errors import ScratchLMError

_EPOCH_SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs map to distinct generator seeds
WINDOW_STARTS = ("any", "document")


def document_window_starts(shards: TokenShards, context_length: int) -> np.ndarray:
    """Window starts aligned to documents: each document's start, and start + k * context_length
    inside a document longer than the context; only windows that fit in the split (int64)."""
    starts = shards.document_starts()
    ends = np.append(starts[1:], shards.num_tokens)
    pieces = -(-(ends - starts) // context_length)  # windows per document, ceil(length / context)
    offsets = np.arange(int(pieces.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(pieces) - pieces, pieces
    )
    windows = np.repeat(starts, pieces) + offsets * context_length
    return windows[windows + context_length + 1 <= shards.num_tokens]


class TokenWindowLoader:
    """Deterministic, resumable training batches: `next_batch()` -> (inputs, targets) int64."""

    def __init__(
        self,
        shards: TokenShards,
        *,
        context_length: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        accumulation: int = 1,
        windows: str = "any",
    ) -> None:
        if windows not in WINDOW_STARTS:
            raise ScratchLMError(
                f"windows must be one of {', '.join(WINDOW_STARTS)}, got {windows!r}"
            )
        if context_length < 1 or batch_size < 1:
            raise ScratchLMError(
                f"context_length and batch_size must be positive (got {context_length} and "
                f"{batch_size})"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ScratchLMError(f"rank {rank} is outside world size {world_size}")
        self.shards = shards
        self.context_length = context_length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.global_batch_windows = batch_size * world_size
        # Enough windows for one global batch at any shift in [0, context_length).
        needed = (self.global_batch_windows + 1) * context_length
        # Windows one optimizer step takes. Epochs roll over at step boundaries, unless the data
        # holds fewer windows than one step (then at micro-batch boundaries: tiny data still works).
        step_windows = self.global_batch_windows * max(1, accumulation)
        self.windows = windows
        # "document": the same starts every epoch (None: "any", computed per epoch from a shift)
        self._document_starts = (
            document_window_starts(shards, context_length) if windows == "document" else None
        )
        fewest_windows = (
            (shards.num_tokens - context_length) // context_length
            if self._document_starts is None
            else len(self._document_starts)
        )
        self.rollover_windows = (
            step_windows if fewest_windows >= step_windows else self.global_batch_windows
        )
        if shards.num_tokens < needed:
            ranks = f"{world_size} ranks x " if world_size > 1 else ""
            raise ScratchLMError(
                f"the {shards.split} split of {shards.directory} has {shards.num_tokens} tokens, but "
                f"one batch ({ranks}{batch_size} windows of {context_length} tokens) needs "
                f"{needed}; use a smaller --batch-size or --context-length, or more data"
            )
        if self._document_starts is not None and fewest_windows < self.global_batch_windows:
            raise ScratchLMError(
                f"the {shards.split} split of {shards.directory} holds {fewest_windows} document "
                f"windows, fewer than one batch ({self.global_batch_windows}); use a smaller "
                "--batch-size, more data, or --windows any"
            )
        self.epoch = 0
        self.cursor = 0  # index into this epoch's window order, shared by all ranks
        self.tokens_served = 0  # input tokens served to all ranks together
        self._order_epoch = -1
        self._order = torch.empty(0, dtype=torch.int64)
        self._shift = 0

    def _prepare_epoch(self) -> None:
        if self._order_epoch == self.epoch:
            return
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_SEED_STRIDE + self.epoch)
        # The windows of an epoch depend on (seed, epoch, tokens, context_length) only, never on
        # the batch size or world size: that is what makes 1 rank x 2 micro-batches == 2 ranks x 1.
        if self._document_starts is not None:
            window_count = len(self._document_starts)
        else:
            self._shift = int(torch.randint(self.context_length, (1,), generator=generator).item())
            window_count = (self.shards.num_tokens - self._shift - 1) // self.context_length
        assert window_count >= self.global_batch_windows, "checked in __init__"
        self._order = torch.randperm(window_count, generator=generator)
        self._order_epoch = self.epoch

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next (inputs, targets), both (batch_size, context_length) int64."""
        self._prepare_epoch()
        left = len(self._order) - self.cursor
        at_boundary = self.cursor % self.rollover_windows == 0
        # (the second test only matters if a resume changed the global batch mid-epoch)
        if (at_boundary and left < self.rollover_windows) or left < self.global_batch_windows:
            self.epoch += 1
            self.cursor = 0
            self._prepare_epoch()
        first = self.cursor + self.rank * self.batch_size
        window_indices = self._order[first : first + self.batch_size].tolist()
        window = self.context_length + 1
        rows = np.empty((self.batch_size, window), dtype=np.int64)
        for row, index in enumerate(window_indices):
            start = (
                self._shift + index * self.context_length
                if self._document_starts is None
                else int(self._document_starts[index])
            )
            rows[row] = self.shards.read(start, window)
        self.cursor += self.global_batch_windows
        self.tokens_served += self.global_batch_windows * self.context_length
        batch = torch.from_numpy(rows)
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def state_dict(self) -> dict[str, int | str]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "tokens_served": self.tokens_served,
            "seed": self.seed,
            "context_length": self.context_length,
            "num_tokens": self.shards.num_tokens,
            "windows": self.windows,
        }

    def load_state_dict(self, state: dict[str, int | str]) -> None:
        """Continue exactly where the loader that saved `state` stopped (any batch/world size)."""
        current_values: tuple[tuple[str, int | str], ...] = (
            ("seed", self.seed),
            ("context_length", self.context_length),
            ("num_tokens", self.shards.num_tokens),
            ("windows", self.windows),
        )
        # A state saved before `windows` existed was saved by an "any" loader.
        state = {"windows": "any", **state}
        for name, current in current_values:
            saved = state.get(name, current)
            if saved != current:
                fix = {
                    "seed": f"resume with --seed {saved}",
                    "context_length": f"resume with --context-length {saved}",
                    "num_tokens": "resume with the same prepared data it was trained on",
                    "windows": f"resume with --windows {saved}",
                }[name]
                raise ScratchLMError(
                    f"the checkpoint's data position was saved with {name} {saved}, this run has "
                    f"{current}; {fix}"
                )
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self.tokens_served = int(state["tokens_served"])
        self._order_epoch = -1


def iter_eval_batches(
    shards: TokenShards,
    *,
    context_length: int,
    batch_size: int,
    max_tokens: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows in order from the start of the split (up to `max_tokens` tokens).

    The last partial window is dropped, unless it is the only one (a split shorter than one window
    is evaluated as one shorter window). The last batch may hold fewer than `batch_size` windows.
    """
    if context_length < 1 or batch_size < 1:
        raise ScratchLMError(
            f"context_length and batch_size must be positive (got {context_length} and {batch_size})"
        )
    limit = shards.num_tokens if max_tokens is None else min(shards.num_tokens, max_tokens)
    if limit < 2:
        raise ScratchLMError(
            f"evaluating needs at least 2 tokens but only {limit} are available in the "
            f"{shards.split} split; raise the evaluation token limit or use more data"
        )
    full_windows = (limit - 1) // context_length
    if full_windows == 0:
        only_window = torch.from_numpy(shards.read(0, limit).astype(np.int64))
        yield only_window[None, :-1], only_window[None, 1:]
        return
    for first_window in range(0, full_windows, batch_size):
        count = min(batch_size, full_windows - first_window)
        # Consecutive windows share one token (a window's last target is the next one's first
        # input), so one contiguous read serves the whole batch.
        tokens = shards.read(first_window * context_length, count * context_length + 1)
        tokens64 = torch.from_numpy(tokens.astype(np.int64))
        yield (
            tokens64[:-1].reshape(count, context_length),
            tokens64[1:].reshape(count, context_length),
        )
