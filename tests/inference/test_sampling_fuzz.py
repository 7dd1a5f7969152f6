"""Property tests of the sampler over its whole accepted parameter space: whatever the settings and
however wild the logits (huge, -inf, +inf, NaN), an accepted setting gives a valid token id and a
finite distribution that sums to 1; a refused one is a SamplingError that names the field."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchlm.errors import ScratchLMError
from scratchlm.inference.sampling import next_token_probabilities, sample_next_token
from scratchlm.inference.settings import SamplingError, SamplingSettings, check_logit_bias

FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# Deterministic (no example database, the same examples every run) and bounded in count.
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors: worker threads only add wake-ups (tens of ms each on a busy machine).
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# Values at every edge: the smallest subnormal double, float32's subnormals and limits, huge doubles.
EDGES = [5e-324, 1e-300, 1e-45, 1e-38, 1e-30, 1e-7, 0.5, 1.0, 2.0, 1e30, 3.4e38, 1e300, 1.7e308]


def positive(edges: list[float] = EDGES) -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(edges),
        st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False),
    )


def anything_float() -> st.SearchStrategy[float]:
    """Mostly valid values, sometimes NaN, inf or a negative (which must be refused)."""
    return st.one_of(positive(), st.floats(), st.sampled_from([math.nan, math.inf, -math.inf]))


LOGIT_VALUES = st.one_of(
    st.floats(min_value=-30, max_value=30, allow_nan=False),
    st.sampled_from(
        [-math.inf, math.inf, math.nan, 1e38, -1e38, FLOAT32_MAX, -FLOAT32_MAX, 0.0, -0.0]
    ),
)


@st.composite
def logits_and_counts(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor | None]:
    rows = draw(st.integers(1, 3))
    vocab = draw(st.integers(1, 40))
    values = [[draw(LOGIT_VALUES) for _ in range(vocab)] for _ in range(rows)]
    logits = torch.tensor(values, dtype=draw(st.sampled_from([torch.float32, torch.bfloat16])))
    for row in logits:  # (after the cast: float32's largest number is inf in bfloat16)
        if not (torch.isfinite(row) | (row == math.inf)).any():
            row[draw(st.integers(0, vocab - 1))] = draw(st.floats(-30, 30))  # something to choose
    counts = None
    if draw(st.booleans()):
        counts = torch.tensor(
            [[draw(st.integers(0, 5000)) for _ in range(vocab)] for _ in range(rows)]
        )
    return logits, counts


@st.composite
def sampling_fields(draw: st.DrawFn, vocab: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "temperature": draw(st.one_of(st.just(0.0), anything_float())),
        "top_k": draw(st.one_of(st.none(), st.integers(-2, 10**20))),
        "top_p": draw(st.one_of(st.none(), anything_float())),
        "min_p": draw(st.one_of(st.none(), st.just(0.0), anything_float())),
        "repetition_penalty": draw(anything_float()),
        "presence_penalty": draw(st.one_of(st.floats(-2, 2), anything_float())),
        "frequency_penalty": draw(st.one_of(st.floats(-2, 2), anything_float())),
    }
    bias = draw(
        st.dictionaries(
            st.integers(0, vocab - 1),
            st.one_of(st.floats(-100, 100), st.sampled_from([-100.0, 100.0])),
            max_size=4,
        )
    )
    fields["logit_bias"] = tuple(bias.items())  # passed beside the settings
    return fields


@FUZZ
@given(data=st.data(), case=logits_and_counts())
def test_any_accepted_setting_samples_a_valid_token(
    data: st.DataObject, case: tuple[torch.Tensor, torch.Tensor | None]
) -> None:
    logits, counts = case
    vocab = logits.shape[-1]
    fields = data.draw(sampling_fields(vocab))
    bias = fields.pop("logit_bias")
    try:
        sampling = SamplingSettings(**fields)
        check_logit_bias(bias)
    except SamplingError as error:
        assert error.field in (*fields, "logit_bias")  # refused, naming the field
        assert error.field in error.for_request()
        return
    probabilities = next_token_probabilities(logits, sampling, counts, bias)
    assert probabilities.shape == logits.shape
    assert torch.isfinite(probabilities).all() and (probabilities >= 0).all()
    assert torch.allclose(probabilities.sum(-1), torch.ones(logits.shape[0]), atol=1e-4)
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**63 - 1)))
    tokens = sample_next_token(logits, sampling, generator, counts, bias)
    assert tokens.shape == (logits.shape[0],)
    raw = logits.float()
    for row, token in enumerate(tokens.tolist()):
        assert 0 <= token < vocab
        # A token whose logit was -inf or NaN is never chosen while another one can be.
        assert not (math.isnan(raw[row, token]) or raw[row, token] == -math.inf)
        assert probabilities[row, token] > 0


@FUZZ
@given(
    temperature=st.one_of(st.just(0.0), positive()),
    penalty=positive(),
    vocab=st.integers(2, 30),
)
def test_extreme_settings_on_ordinary_logits(
    temperature: float, penalty: float, vocab: int
) -> None:
    logits = torch.randn(2, vocab, generator=torch.Generator().manual_seed(vocab))
    counts = torch.ones(2, vocab, dtype=torch.long)  # every token seen: the penalty hits all
    sampling = SamplingSettings(
        temperature=temperature, top_k=None, top_p=1e-300, repetition_penalty=penalty
    )
    probabilities = next_token_probabilities(logits, sampling, counts)
    assert torch.isfinite(probabilities).all()
    assert torch.allclose(probabilities.sum(-1), torch.ones(2), atol=1e-4)
    tokens = sample_next_token(logits, sampling, torch.Generator().manual_seed(0), counts)
    assert all(0 <= token < vocab for token in tokens.tolist())


def test_no_finite_logit_is_one_clear_error() -> None:
    for value in (math.nan, -math.inf):
        logits = torch.tensor([[0.0, 1.0], [value, value]])
        for sampling in (SamplingSettings(), SamplingSettings(temperature=0.0)):
            try:
                sample_next_token(logits, sampling, torch.Generator().manual_seed(0))
            except ScratchLMError as error:
                assert "no finite logit" in str(error)
            else:
                raise AssertionError("a row without a finite logit was sampled")
