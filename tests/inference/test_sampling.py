from __future__ import annotations

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.sampling import (
    SamplingSettings,
    filter_top_k,
    filter_top_p,
    sample_next_token,
)
from tests.conftest import seeded


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(4, 50)
    chosen = sample_next_token(logits, SamplingSettings(temperature=0.0), seeded())
    assert torch.equal(chosen, logits.argmax(-1))


def test_top_k_keeps_exactly_k() -> None:
    logits = torch.randn(3, 40)
    kept = torch.isfinite(filter_top_k(logits, 5)).sum(-1)
    assert kept.tolist() == [5, 5, 5]


def test_top_p_keeps_smallest_set_reaching_p() -> None:
    probabilities = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probabilities.log()
    for p, expected in [(0.5, 1), (0.51, 2), (0.7, 2), (0.71, 3), (0.9, 4), (1.0, 5)]:
        kept = torch.isfinite(filter_top_p(logits, p)).sum().item()
        assert kept == expected, (p, kept)
    shuffled = logits[:, torch.tensor([3, 0, 4, 1, 2])]
    assert torch.isfinite(filter_top_p(shuffled, 0.7)).tolist() == [
        [False, True, False, True, False]
    ]


def test_same_seed_same_tokens_and_distribution() -> None:
    logits = torch.randn(1, 30)
    settings = SamplingSettings(temperature=1.0, top_k=None)
    first = [sample_next_token(logits, settings, seeded(7)).item() for _ in range(3)]
    second = [sample_next_token(logits, settings, seeded(7)).item() for _ in range(3)]
    assert first == second
    generator = seeded(1)
    draws = torch.stack([sample_next_token(logits, settings, generator) for _ in range(4000)])
    empirical = torch.bincount(draws.flatten(), minlength=30).float() / draws.numel()
    assert (empirical - torch.softmax(logits[0], -1)).abs().max() < 0.03


def test_invalid_settings() -> None:
    with pytest.raises(ScratchLMError):
        SamplingSettings(temperature=-1)
    with pytest.raises(ScratchLMError):
        SamplingSettings(top_p=1.5)
    with pytest.raises(ScratchLMError):
        SamplingSettings(top_k=0)


def test_min_p_keeps_tokens_above_fraction_of_top() -> None:
    from scratchlm.inference.sampling import filter_min_p

    probabilities = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])
    kept = torch.isfinite(filter_min_p(probabilities.log(), 0.19)).tolist()
    assert kept == [[True, True, True, False, False]]  # threshold 0.095


def test_repetition_penalty_is_the_seed_formula() -> None:
    from scratchlm.inference.sampling import apply_penalties

    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    counts = torch.tensor([[1, 3, 0, 0]])
    out = apply_penalties(logits, counts, SamplingSettings(repetition_penalty=2.0))
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # seen: positive divided, negative multiplied


def test_presence_and_frequency_penalties() -> None:
    from scratchlm.inference.sampling import apply_penalties

    logits = torch.zeros(1, 3)
    counts = torch.tensor([[0, 1, 3]])
    out = apply_penalties(
        logits, counts, SamplingSettings(presence_penalty=0.5, frequency_penalty=0.25)
    )
    assert out.tolist() == [[0.0, -0.75, -1.25]]


def test_penalties_change_the_greedy_choice() -> None:
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    counts = torch.tensor([[2, 0, 0]])
    settings = SamplingSettings(temperature=0.0, repetition_penalty=2.0)
    assert sample_next_token(logits, settings, seeded(), counts).item() == 1
