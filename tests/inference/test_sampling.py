from __future__ import annotations

from typing import Any

import pytest
import torch

from scratchlm.device import on_one_torch_thread
from scratchlm.errors import ScratchLMError
from scratchlm.inference import batch as batch_module
from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import (
    draw_token,
    filter_top_k,
    filter_top_p,
    invert_cdf,
    make_generator,
    next_token_probabilities,
    sample_next_token,
)
from scratchlm.inference.settings import GREEDY, SamplingError, SamplingSettings
from tests.conftest import seeded
from tests.inference.test_engine import make_model


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


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(temperature=0.8, top_k=50),  # the default
        SamplingSettings(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05),
        SamplingSettings(temperature=1.3, top_k=5, repetition_penalty=1.3),
    ],
)
def test_top_k_draws_follow_the_full_vocabulary_distribution(settings: SamplingSettings) -> None:
    """With top-k the draw runs on the k candidates only (sampling.py): its frequencies over
    20,000 rows must match next_token_probabilities, which filters the whole vocabulary, and no
    token outside that distribution's support may appear."""
    vocab = 1000
    logits = torch.randn(1, vocab, generator=seeded(3)) * 3
    counts = torch.zeros(1, vocab, dtype=torch.long)
    counts[0, logits[0].topk(3).indices] = 2  # the penalty moves the top three
    expected = next_token_probabilities(logits, settings, counts)[0]  # (vocab,)
    rows = 20_000
    draws = sample_next_token(logits.expand(rows, -1), settings, seeded(4), counts.expand(rows, -1))
    empirical = torch.bincount(draws, minlength=vocab).float() / rows
    assert bool((empirical[expected == 0] == 0).all())
    # Each frequency within 5 standard deviations of a binomial proportion (and 1e-3).
    sigma = (expected * (1 - expected) / rows).sqrt()
    assert bool(((empirical - expected).abs() <= 5 * sigma + 1e-3).all())


def test_draw_token_follows_a_sparse_distribution() -> None:
    """draw_token draws over the support only: 8,000 draws match the probabilities, and a token
    of probability 0 never comes (a full-support distribution takes the plain path)."""
    probabilities = torch.zeros(500)
    probabilities[[3, 70, 71, 499]] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    generator = seeded(5)
    draws = torch.tensor([draw_token(probabilities, generator) for _ in range(8000)])
    empirical = torch.bincount(draws, minlength=500).float() / len(draws)
    assert set(draws.tolist()) <= {3, 70, 71, 499}
    assert (empirical - probabilities).abs().max() < 0.02
    full = torch.softmax(torch.randn(30, generator=seeded(6)), -1)
    first = [draw_token(full, seeded(9)) for _ in range(3)]
    assert first == [draw_token(full, seeded(9)) for _ in range(3)]


def test_invert_cdf_never_returns_a_token_of_probability_zero() -> None:
    """The draw's boundaries: u = 0 takes the last token that has probability (not a trailing
    zero), a threshold exactly on a cumulative sum takes the token that reached it, and a u just
    below 1 skips leading zeros. Rows are drawn independently and need not sum to 1."""
    probabilities = torch.tensor(
        [
            [0.0, 0.5, 0.0, 0.5, 0.0],
            [0.0, 0.5, 0.0, 0.5, 0.0],
            [0.0, 0.5, 0.0, 0.5, 0.0],
            [0.0, 2.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 3.0],
        ]
    )
    almost_one = 1.0 - 2.0**-53
    uniform = torch.tensor([[0.0], [0.5], [almost_one], [0.25], [almost_one]], dtype=torch.float64)
    assert invert_cdf(probabilities, uniform).tolist() == [3, 1, 1, 3, 4]


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


# --- hardening: extreme settings, logit bias, one row failing alone --------------------------


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-40])
def test_vanishing_temperature_is_the_argmax(temperature: float) -> None:
    logits = torch.randn(4, 50, generator=seeded(3))
    settings = SamplingSettings(temperature=temperature, top_k=None)
    assert torch.equal(sample_next_token(logits, settings, seeded()), logits.argmax(-1))
    probabilities = next_token_probabilities(logits, settings)
    assert torch.equal(probabilities, torch.nn.functional.one_hot(logits.argmax(-1), 50).float())


@pytest.mark.parametrize("penalty", [1e-300, 5e-324, 1e300, 1.7e308])
def test_extreme_repetition_penalty_stays_finite(penalty: float) -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0, 3.0]])
    counts = torch.tensor([[1, 1, 1, 0]])
    for temperature in (0.0, 1e-300, 1.0):
        settings = SamplingSettings(temperature=temperature, top_k=None, repetition_penalty=penalty)
        probabilities = next_token_probabilities(logits, settings, counts)
        assert torch.isfinite(probabilities).all()
        assert abs(float(probabilities.sum()) - 1) < 1e-5
        token = int(sample_next_token(logits, settings, seeded(), counts).item())
        assert 0 <= token < 4
    # A vanishing penalty blows the seen positive logit up past the unseen 3.0: token 0 wins.
    if penalty < 1:
        greedy = SamplingSettings(temperature=0.0, top_k=None, repetition_penalty=penalty)
        assert int(sample_next_token(logits, greedy, seeded(), counts)) == 0


def test_vanishing_top_p_keeps_the_top_token() -> None:
    logits = torch.randn(3, 20, generator=seeded(5))
    kept = torch.isfinite(filter_top_p(logits, 1e-300))
    assert kept.sum(-1).tolist() == [1, 1, 1]
    assert torch.equal(kept.float().argmax(-1), logits.argmax(-1))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("top_p", float("nan")),
        ("min_p", float("nan")),
        ("repetition_penalty", float("inf")),
        ("repetition_penalty", float("nan")),
        ("presence_penalty", float("nan")),
        ("frequency_penalty", float("-inf")),
        ("logit_bias", ((3, float("nan")),)),
        ("logit_bias", ((3, 100.5),)),
        ("logit_bias", ((-1, 1.0),)),
    ],
)
def test_non_finite_and_out_of_range_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(SamplingError) as raised:
        if field == "logit_bias":
            GenerationRequest([1], logit_bias=value)  # type: ignore[arg-type]
        else:
            SamplingSettings(**{field: value})  # type: ignore[arg-type]
    assert raised.value.field == field
    assert f"--{field.replace('_', '-')}" in str(raised.value)
    assert raised.value.for_request().startswith(field)


def test_logit_bias_follows_openai() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0, -2.0]])
    greedy = SamplingSettings(temperature=0.0, top_k=None)
    assert int(sample_next_token(logits, greedy, logit_bias=((0, -100.0),))) == 1  # banned
    plain = SamplingSettings(temperature=1.0, top_k=None)
    generator = seeded(0)
    forced = {
        int(sample_next_token(logits, plain, generator, None, ((3, 100.0),))) for _ in range(50)
    }
    assert forced == {3}
    expected = torch.softmax(torch.tensor([5.0, 2.0, 0.0, -2.0]), -1)
    nudged = next_token_probabilities(logits, plain, logit_bias=((1, 1.0),))
    assert torch.allclose(nudged[0], expected)
    with pytest.raises(SamplingError, match="below the vocabulary size 4"):
        sample_next_token(logits, plain, logit_bias=((4, 1.0),))


def test_out_of_range_seed_is_a_user_error() -> None:
    make_generator(-(2**63), torch.device("cpu"))
    make_generator(2**64 - 1, torch.device("cpu"))
    for seed in (2**64, -(2**63) - 1):
        with pytest.raises(ScratchLMError, match="--seed must be in"):
            make_generator(seed, torch.device("cpu"))


def test_engine_generate_survives_extreme_settings() -> None:
    model = make_model("rope+gqa+qknorm")
    engine = Engine(model)
    for sampling in (
        SamplingSettings(temperature=1e-300, top_k=None),
        SamplingSettings(temperature=1.0, repetition_penalty=1e-300, top_p=1e-300),
        SamplingSettings(temperature=2.0, repetition_penalty=1e300, min_p=1.0),
    ):
        tokens = list(
            engine.generate([1, 2, 3], max_new_tokens=8, sampling=sampling, seed=2**64 - 1)
        )
        assert tokens and all(0 <= token < model.config.vocab_size for token in tokens)
    # A vanishing temperature is greedy decoding.
    greedy = list(engine.generate([1, 2, 3], max_new_tokens=8, sampling=GREEDY))
    tiny = SamplingSettings(temperature=1e-300, top_k=None)
    assert list(engine.generate([1, 2, 3], max_new_tokens=8, sampling=tiny, seed=1)) == greedy
    with pytest.raises(ScratchLMError, match="--seed"):
        list(engine.generate([1, 2, 3], max_new_tokens=2, sampling=GREEDY, seed=2**64))


# A marker setting that fault injection recognises: sampling fails for rows that carry it.
POISONED = SamplingSettings(temperature=0.7, top_k=None, presence_penalty=1.25)


@pytest.mark.parametrize("prefill_chunk", [None, 3])
def test_a_row_whose_sampling_fails_ends_alone(
    monkeypatch: pytest.MonkeyPatch, prefill_chunk: int | None
) -> None:
    real = batch_module.sample_next_token

    def flaky(
        logits: torch.Tensor, settings: SamplingSettings, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if settings == POISONED:
            raise RuntimeError("injected sampling failure")
        return real(logits, settings, *args, **kwargs)

    model = make_model("rope+gqa+qknorm")
    requests = [
        GenerationRequest([1, 2, 3, 4, 5], max_new_tokens=10, sampling=GREEDY),
        GenerationRequest([7, 8], max_new_tokens=10, sampling=POISONED, seed=1),
        GenerationRequest([9, 3, 1], max_new_tokens=10, sampling=SamplingSettings(), seed=2),
    ]
    expected = [
        list(
            Engine(model).generate(
                request.prompt_ids,
                max_new_tokens=request.max_new_tokens,
                sampling=request.sampling,
                seed=request.seed,
            )
        )
        for request in (requests[0], requests[2])
    ]
    monkeypatch.setattr(batch_module, "sample_next_token", flaky)
    decoder = BatchDecoder(model, max_batch=3, prefill_chunk=prefill_chunk)
    handles = [decoder.add(request) for request in requests]
    finished: dict[int, batch_module.Row] = {}
    while decoder.active:
        finished.update((row.handle, row) for row in decoder.step())
    failed = finished[handles[1]]
    assert failed.finish_reason == "error" and failed.error == "injected sampling failure"
    assert [finished[handles[0]].generated, finished[handles[2]].generated] == expected
    assert all(finished[handles[index]].finish_reason == "length" for index in (0, 2))
    # The one-call API reports the failure as a user-facing error.
    with pytest.raises(ScratchLMError, match="request 1: injected sampling failure"):
        Engine(model).generate_batch(requests)


def test_a_row_whose_prefill_forward_fails_ends_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("rope+gqa+qknorm")
    marker = 42  # a prompt holding this token makes its own prefill forward fail
    forward = model.forward

    def poisoned(inputs: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if inputs.shape[0] == 1 and inputs.shape[1] > 1 and marker in inputs[0].tolist():
            raise RuntimeError("injected prefill failure")
        return forward(inputs, *args, **kwargs)  # type: ignore[arg-type]

    alone = list(Engine(model).generate([5, 6, 7], max_new_tokens=6, sampling=GREEDY))
    monkeypatch.setattr(model, "forward", poisoned)
    decoder = BatchDecoder(model, max_batch=2, prefill_chunk=2)
    good = decoder.add(GenerationRequest([5, 6, 7], max_new_tokens=6, sampling=GREEDY))
    bad = decoder.add(GenerationRequest([1, 2, marker, 3], max_new_tokens=6, sampling=GREEDY))
    finished: dict[int, batch_module.Row] = {}
    while decoder.active:
        finished.update((row.handle, row) for row in decoder.step())
    assert finished[bad].finish_reason == "error"
    assert finished[bad].error == "injected prefill failure"
    assert finished[good].generated == alone
    # Without chunking the failure reaches the caller of add() and leaves no row behind.
    unchunked = BatchDecoder(model, max_batch=2)
    with pytest.raises(RuntimeError, match="injected prefill failure"):
        unchunked.add(GenerationRequest([marker, 1], max_new_tokens=3, sampling=GREEDY))
    assert unchunked.active == 0


def test_sampling_runs_on_one_torch_thread_and_restores_the_count() -> None:
    """Per-token sampling runs with one PyTorch thread (no OpenMP region whose helper threads
    would then spin on the decode kernels' cores) and gives the same tokens as the same ops on
    several threads; the caller's thread count comes back, also after an error."""
    seen: list[int] = []

    @on_one_torch_thread
    def probe(fail: bool) -> None:
        seen.append(torch.get_num_threads())
        if fail:
            raise ValueError("boom")

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        probe(False)
        with pytest.raises(ValueError, match="boom"):
            probe(True)
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
        # 50,304 logits: past PyTorch's 32,768-value grain, so the undecorated ops run parallel.
        logits = torch.randn(3, 50_304, generator=torch.Generator().manual_seed(0)) * 4
        settings = SamplingSettings(temperature=0.9, top_k=None, top_p=0.95)
        tokens = sample_next_token(logits, settings, torch.Generator().manual_seed(7))
        undecorated = sample_next_token.__wrapped__  # type: ignore[attr-defined]
        expected = undecorated(logits, settings, torch.Generator().manual_seed(7))
        assert torch.equal(tokens, expected)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
