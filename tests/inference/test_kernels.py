"""The fp32 CPU decode kernels (scratchlm.inference.kernels) behind the decode primitive: parity with the model's forward,
greedy identity through Engine, and the fallback whenever they cannot or must not be used (q8, q4
and bf16 weights: test_quantized_decode.py).

The kernel tests need a C++ compiler (the library is built on first use, ~2 s, then cached); they
skip cleanly without one. The fallback tests run everywhere.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratchlm.config import preset_config
from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.bench import time_batch_one
from scratchlm.inference.engine import Engine
from scratchlm.inference.kernels import decoder as kernel_decoder
from scratchlm.inference.kernels import loader
from scratchlm.inference.session import DecodeSession
from scratchlm.inference.settings import GREEDY, SamplingSettings
from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT, Block, build_model
from tests.conftest import tiny_config


def _library_or_skip() -> None:
    if not loader.kernels_enabled():
        pytest.skip("SCRATCHLM_KERNELS=0")
    if loader.load_library() is None:
        pytest.skip(f"fp32 decode kernels unavailable: {loader.unavailable_reason()}")


def _model(preset: str, **overrides: object) -> GPT:
    torch.manual_seed(0)
    # init_std 0.2: logits far from uniform, so an error would show (and argmax ties are rare)
    return build_model(tiny_config(preset, init_std=0.2, **overrides)).eval()


# Every architecture option the kernel implements: RMSNorm/LayerNorm, RoPE/learned positions, all
# five MLP kinds, GQA/MHA, QK-norm, embedding norm, biases, tied/untied head, logit soft-capping,
# and a head_dim / d_model that are not multiples of the SIMD width (masked tails).
ARCHITECTURES = [
    ("llama-120m", {}),
    ("akane-124m", {}),
    ("kia-1.6b", {}),
    ("antimatter-300m", {}),
    ("aksis-small", {}),
    ("ai4india", {"logit_softcap": 10.0}),
    ("small", {"mlp": "relu2", "tie_embeddings": False}),
    ("llama-42m", {"d_model": 36, "ffn_hidden": 52, "n_head": 6, "n_kv_head": 2}),
]


@pytest.mark.parametrize(("preset", "overrides"), ARCHITECTURES)
@torch.inference_mode()
def test_decode_steps_match_the_model_forward(preset: str, overrides: dict[str, object]) -> None:
    _library_or_skip()
    model = _model(preset, **overrides)
    config = model.config
    prompt = torch.randint(0, config.vocab_size, (1, 5))
    reference_cache = KVCache.for_model(config, 1, 16)
    fast_cache = KVCache.for_model(config, 1, 16)
    model(prompt, kv_cache=reference_cache, last_token_only=True)
    model(prompt, kv_cache=fast_cache, last_token_only=True)
    decoder = kernel_decoder.fast_decoder(model, fast_cache)
    assert decoder is not None
    token = 3
    for _ in range(10):
        reference = model(torch.tensor([[token]]), kv_cache=reference_cache, last_token_only=True)
        fast = decoder.step(token)
        assert fast.shape == reference.shape
        # fp32 with a different summation order: each of the ~K-term dot products differs by a few
        # ulps, compounded over 2 layers; ~1e-6 relative is measured, 1e-4 leaves margin.
        torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4 * reference.abs().max())
        token = int(reference[0, -1, : config.vocab_size].argmax())
    assert fast_cache.length == reference_cache.length == 15
    torch.testing.assert_close(fast_cache.keys, reference_cache.keys, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_cache.values, reference_cache.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gemv_matches_linear(threads: int) -> None:
    _library_or_skip()
    torch.manual_seed(0)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows, columns in ((1, 16), (7, 33), (130, 768), (1001, 45), (64, 2048)):
            weight, x, bias = torch.randn(rows, columns), torch.randn(columns), torch.randn(rows)
            # Two fp32 summation orders of K products differ by about sqrt(K) roundings of the
            # running sum (a random walk); bound it by sqrt(K) * eps * sum |w x| per row.
            eps = torch.finfo(torch.float32).eps
            tolerance = columns**0.5 * eps * (weight.abs() @ x.abs()) + 1e-6
            for with_bias in (None, bias):
                fast = loader.gemv(weight, x, with_bias)
                reference = nn.functional.linear(x, weight, with_bias)
                assert fast.shape == reference.shape
                assert bool(((fast - reference).abs() <= tolerance).all())
    finally:
        torch.set_num_threads(saved)


def test_greedy_generation_is_identical_with_and_without_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _library_or_skip()
    torch.manual_seed(0)
    config = preset_config("small", vocab_size=512).replace(context_length=64)
    model = build_model(config).eval()  # the real `small` shape, random weights
    prompt = torch.randint(0, config.vocab_size, (12,)).tolist()
    calls = 0
    original = kernel_decoder.FastDecoder.step

    def counted(self: kernel_decoder.FastDecoder, token: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return original(self, token)

    monkeypatch.setattr(kernel_decoder.FastDecoder, "step", counted)
    fast = list(Engine(model).generate(prompt, max_new_tokens=32, sampling=GREEDY))
    assert calls == 31  # the prefill gives the first token, the kernels the other 31
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    reference = list(Engine(model).generate(prompt, max_new_tokens=32, sampling=GREEDY))
    assert calls == 31
    assert fast == reference


def test_seeded_sampling_and_context_end_with_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    _library_or_skip()
    model = _model("llama-42m")
    settings = SamplingSettings(temperature=0.9, top_k=20, repetition_penalty=1.2)
    # 24 prompt tokens + up to 10 new in a 32-token context: it stops when the context is full (the
    # prefill's token, then one per free position: 9).
    prompt = list(range(1, 25))
    fast = list(Engine(model).generate(prompt, max_new_tokens=10, sampling=settings, seed=7))
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    reference = list(Engine(model).generate(prompt, max_new_tokens=10, sampling=settings, seed=7))
    assert fast == reference and len(fast) == 9


def test_bench_decode_uses_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    _library_or_skip()
    model = _model("llama-42m")
    used: list[bool] = []
    original = kernel_decoder.fast_decoder

    def spy(model: nn.Module, cache: KVCache) -> kernel_decoder.FastDecoder | None:
        decoder = original(model, cache)
        used.append(decoder is not None)
        return decoder

    monkeypatch.setattr("scratchlm.inference.decode.fast_decoder", spy)
    _, _, rate = time_batch_one(model, torch.tensor([[1, 2, 3]]), 6)
    assert used == [True] and rate > 0


def test_step_refuses_a_full_cache_and_bad_tokens() -> None:
    _library_or_skip()
    model = _model("llama-42m")
    cache = KVCache.for_model(model.config, 1, 4)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
        decoder = kernel_decoder.fast_decoder(model, cache)
        assert decoder is not None
        assert model.config.padded_vocab_size is not None
        with pytest.raises(IndexError, match="vocabulary"):
            decoder.step(model.config.padded_vocab_size)
        decoder.step(4)
        with pytest.raises(IndexError, match="full"):
            decoder.step(5)


# --- the fallback: these run with or without a compiler -------------------------------------


def test_fallback_when_the_fast_path_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("llama-42m")
    cache = KVCache.for_model(model.config, 1, 8)
    adapted = _model("llama-42m")  # a projection replaced by another module (as an adapter)
    block = adapted.blocks[0]
    assert isinstance(block, Block)
    setattr(block.attention, "q_proj", nn.Sequential(block.attention.q_proj))  # noqa: B010
    assert kernel_decoder.fast_decoder(adapted, cache) is None
    assert "not an nn.Linear" in str(kernel_decoder.unsupported_reason(adapted, cache))
    assert (
        kernel_decoder.unsupported_reason(model, KVCache.for_model(model.config, 2, 8)) is not None
    )
    bf16 = _model("llama-42m").to(torch.bfloat16)
    assert kernel_decoder.unsupported_reason(bf16, cache) is not None
    compiled = _model("llama-42m")
    compiled.forward = torch.compile(compiled.forward)  # type: ignore[method-assign]
    assert kernel_decoder.unsupported_reason(compiled, cache) is not None
    dropout = build_model(tiny_config("llama-42m", dropout=0.1))  # training mode
    assert kernel_decoder.unsupported_reason(dropout, cache) is not None
    hooked = _model("llama-42m")
    hooked.blocks[0].register_forward_hook(lambda *args: None)
    assert kernel_decoder.unsupported_reason(hooked, cache) is not None
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    assert kernel_decoder.fast_decoder(model, cache) is None


def test_generation_falls_back_without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a machine without a compiler: the build fails, nothing is raised, PyTorch decodes.
    monkeypatch.setattr(loader, "_library", None)
    monkeypatch.setattr(loader, "_load_attempted", False)
    monkeypatch.setattr(loader, "_failure", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert loader.load_library() is None
    assert "compiler" in str(loader.unavailable_reason())
    model = _model("llama-42m")
    tokens = list(Engine(model).generate([1, 2, 3], max_new_tokens=8, sampling=GREEDY))
    assert len(tokens) == 8
    with pytest.raises(RuntimeError, match="unavailable"):
        loader.gemv(torch.ones(2, 2), torch.ones(2))


def test_chat_session_turns_use_the_kernels_and_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """DecodeSession (the terminal chat's multi-turn cache) decodes through the kernels; with
    the cache rolled back and reused across turns, tokens match the PyTorch path exactly."""
    _library_or_skip()
    model = _model("llama-42m")
    settings = SamplingSettings(temperature=0.9, top_k=20)
    calls = 0
    original = kernel_decoder.FastDecoder.step

    def counted(self: kernel_decoder.FastDecoder, token: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return original(self, token)

    monkeypatch.setattr(kernel_decoder.FastDecoder, "step", counted)

    def conversation() -> list[list[int]]:
        session = DecodeSession(model)
        first = list(session.generate([1, 2, 3, 4], max_new_tokens=6, sampling=settings, seed=3))
        # turn 2 keeps turn 1 and its answer (reused from the cache), then a new message
        prompt = [1, 2, 3, 4, *first, 5, 6]
        second = list(session.generate(prompt, max_new_tokens=6, sampling=settings, seed=4))
        assert session.reused == len(prompt) - 3  # all but the new message and the last token
        # an edited history: the cache rolls back to the common prefix
        third = list(session.generate([1, 2, 9, 9, 9], max_new_tokens=6, sampling=settings, seed=5))
        return [first, second, third]

    fast = conversation()
    assert calls == 15  # 5 per turn: the prefill gives each turn's first token
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    assert conversation() == fast
    assert calls == 15


@pytest.mark.parametrize(("first_tokens", "second_tokens"), [(12, 4), (5, 12)])
def test_batch_decoder_uses_the_kernels_while_one_row_decodes(
    monkeypatch: pytest.MonkeyPatch, first_tokens: int, second_tokens: int
) -> None:
    """The server's BatchDecoder decodes a lone row through the kernels (cache row 0, its own
    position) and switches to the batched forward when a second row joins; the tokens match the
    PyTorch path throughout, also when the first row leaves and the second moves into row 0."""
    _library_or_skip()
    model = _model("llama-42m")
    settings = SamplingSettings(temperature=0.9, top_k=20)
    calls = 0
    original = kernel_decoder.FastDecoder.step

    def counted(self: kernel_decoder.FastDecoder, token: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return original(self, token)

    monkeypatch.setattr(kernel_decoder.FastDecoder, "step", counted)

    def serve() -> dict[int, list[int]]:
        decoder = BatchDecoder(model, max_batch=2)
        first = GenerationRequest([1, 2, 3], max_new_tokens=first_tokens, sampling=settings, seed=1)
        second = GenerationRequest(
            [4, 5, 6, 7], max_new_tokens=second_tokens, sampling=settings, seed=2
        )
        handles = [decoder.add(first)]
        for _ in range(3):  # alone: kernel steps
            decoder.step()
        handles.append(decoder.add(second))  # lands in slot 1; both decode batched
        finished: dict[int, list[int]] = {}
        while decoder.active:  # one finishes first; the other decodes alone again
            for row in decoder.step():
                finished[handles.index(row.handle)] = row.generated
        return finished

    fast = serve()
    assert calls >= 6  # 3 steps before the second row joins, and the last ones after one leaves
    kernel_calls = calls
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    assert serve() == fast
    assert calls == kernel_calls
    assert [len(fast[0]), len(fast[1])] == [first_tokens, second_tokens]
