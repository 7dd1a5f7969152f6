"""Sampling: pure functions of the logits and a seeded generator.

`sample_next_token(logits, settings, generator)` draws one token per row. Temperature 0 means argmax;
otherwise the logits are divided by the temperature, restricted by top-k and top-p (nucleus: the
smallest set of tokens whose probability mass reaches p), and sampled with `torch.multinomial` from
the caller's `torch.Generator`, so the same seed gives the same tokens.
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

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ScratchLMError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ScratchLMError(f"--top-k must be >= 1 (or omitted), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ScratchLMError(f"--top-p must be in (0, 1], got {self.top_p}")


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


def sample_next_token(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    if settings.temperature == 0:
        return torch.argmax(logits, dim=-1)
    logits = logits.float() / settings.temperature
    if settings.top_k is not None:
        logits = filter_top_k(logits, settings.top_k)
    if settings.top_p is not None:
        logits = filter_top_p(logits, settings.top_p)
    probabilities = torch.softmax(logits, dim=-1)
    return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(-1)
