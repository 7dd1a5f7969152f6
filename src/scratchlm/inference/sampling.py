"""Sampling: pure functions of the logits (and the tokens so far) and a seeded generator.

The pipeline for one row, in order:
1. penalties from the history: repetition (the seed formula: a seen token's positive logit is divided
   by the penalty, a negative one multiplied), presence (minus a constant once a token has appeared)
   and frequency (minus a constant per occurrence), as OpenAI defines them;
2. temperature 0 means argmax (greedy) — nothing below applies;
3. divide by the temperature, then keep the top-k logits, the nucleus (the smallest set of tokens
   whose probability mass reaches top-p) and the tokens with at least min-p times the top token's
   probability;
4. draw from the softmax with the caller's `torch.Generator`, so the same seed gives the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scratchlm.errors import ScratchLMError


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ScratchLMError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ScratchLMError(f"--top-k must be >= 1 (or omitted), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ScratchLMError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ScratchLMError(f"--min-p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ScratchLMError(
                f"--repetition-penalty must be > 0 (1 = off), got {self.repetition_penalty}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ScratchLMError(
                    f"--{name.replace('_', '-')} must be in [-2, 2], got {getattr(self, name)}"
                )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_history(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


GREEDY = SamplingSettings(temperature=0.0, top_k=None)


def history_counts(
    token_ids: list[int], settings: SamplingSettings, vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    """Occurrences of every token so far, (1, vocab), for the penalties; None when none apply."""
    if not settings.uses_history:
        return None
    counts = torch.zeros(1, vocab_size, dtype=torch.long, device=device)
    ids = torch.tensor(token_ids, dtype=torch.long, device=device)
    counts[0].index_add_(0, ids, torch.ones_like(ids))
    return counts


def apply_penalties(
    logits: torch.Tensor, token_counts: torch.Tensor, settings: SamplingSettings
) -> torch.Tensor:
    """logits (B, V), token_counts (B, V) occurrences of each token so far -> penalized logits."""
    if not settings.uses_history:
        return logits
    logits = logits.float()
    seen = token_counts > 0
    if settings.repetition_penalty != 1.0:
        penalty = settings.repetition_penalty
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalized, logits)
    if settings.presence_penalty != 0.0:
        logits = logits - settings.presence_penalty * seen.float()
    if settings.frequency_penalty != 0.0:
        logits = logits - settings.frequency_penalty * token_counts.float()
    return logits


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (B, V); the rest become -inf."""
    if k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches p (at least one token)."""
    if p >= 1.0:
        return logits
    sorted_logits, sorted_indices = torch.sort(logits, dim=-1, descending=True)
    probabilities = torch.softmax(sorted_logits.float(), dim=-1)
    # Mass of the tokens strictly before each one: a token is kept while that mass is still < p.
    mass_before = torch.cumsum(probabilities, dim=-1) - probabilities
    remove_sorted = mass_before >= p
    remove = remove_sorted.scatter(-1, sorted_indices, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least min_p times the most likely token's."""
    if min_p <= 0.0:
        return logits
    probabilities = torch.softmax(logits.float(), dim=-1)
    threshold = probabilities.max(dim=-1, keepdim=True).values * min_p
    return logits.masked_fill(probabilities < threshold, float("-inf"))


def shape_logits(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Temperature and the truncation filters (for temperature > 0): logits (B, V) -> logits."""
    logits = logits.float() / settings.temperature
    if settings.top_k is not None:
        logits = filter_top_k(logits, settings.top_k)
    if settings.top_p is not None:
        logits = filter_top_p(logits, settings.top_p)
    if settings.min_p is not None:
        logits = filter_min_p(logits, settings.min_p)
    return logits


def next_token_probabilities(
    logits: torch.Tensor, settings: SamplingSettings, token_counts: torch.Tensor | None = None
) -> torch.Tensor:
    """The distribution a sampler draws from, (B, V); one-hot on the argmax when greedy."""
    if token_counts is not None:
        logits = apply_penalties(logits, token_counts, settings)
    if settings.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(shape_logits(logits, settings), dim=-1)


def sample_next_token(
    logits: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
    token_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    if token_counts is not None:
        logits = apply_penalties(logits, token_counts, settings)
    if settings.greedy:
        return torch.argmax(logits, dim=-1)
    probabilities = torch.softmax(shape_logits(logits, settings), dim=-1)
    return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(-1)
