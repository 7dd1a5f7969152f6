"""Many tokens per kernel call (decode.cpp's sl_forward_tokens, `FastDecoder.forward`): batched
decode steps of N rows at their own positions and prefills of T consecutive positions, against N
single-row kernel steps and against the model's forward; and the callers that route through them
(Decoder.prefill/score, BatchDecoder, beam search, speculative decoding), which must give the same
tokens with the kernels on, off (SCRATCHLM_KERNELS=0) and built for AVX2 only.

The kernel tests need a C++ compiler (the library is built on first use, then cached) and skip
without one.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference import decode as decode_module
from scratchlm.inference.batch import BatchDecoder, GenerationRequest, Row
from scratchlm.inference.beam import beam_search
from scratchlm.inference.decode import Decoder
from scratchlm.inference.kernels import decoder as kernel_decoder
from scratchlm.inference.kernels import loader
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.inference.settings import GREEDY
from scratchlm.inference.speculative import SpeculativeStats, speculative_generate
from scratchlm.kv_cache import KV_CACHE_TYPES, KVCache, cache_dtype, set_cache_dtype
from scratchlm.model import GPT, build_model
from tests.conftest import tiny_config
from tests.inference.test_quantized_decode import _quantize_inputs_like_the_kernel


def _library_or_skip() -> None:
    if not loader.kernels_enabled():
        pytest.skip("SCRATCHLM_KERNELS=0")
    if loader.load_library() is None:
        pytest.skip(f"decode kernels unavailable: {loader.unavailable_reason()}")


def _random_model(preset: str, **overrides: object) -> GPT:
    torch.manual_seed(0)
    # init_std 0.2: logits far from uniform, so an error shows (and argmax ties are rare)
    return build_model(tiny_config(preset, init_std=0.2, **overrides)).eval()


def _models(preset: str, overrides: dict[str, object], method: str) -> tuple[GPT, GPT]:
    """The model the kernels run (its weights in `method`) and a reference that computes the same
    numbers with PyTorch (the same dequantized weights; inputs rounded as the kernel rounds them)."""
    if method == "fp32":
        model = _random_model(preset, **overrides)
        return model, model
    model = quantize_for_cpu(_random_model(preset, **overrides), method)
    reference = quantize_for_cpu(_random_model(preset, **overrides), method)
    _quantize_inputs_like_the_kernel(reference, method)
    return model, reference


def _close(actual: torch.Tensor, expected: torch.Tensor, method: str) -> None:
    """fp32 and bf16 differ from PyTorch by summation order (~1e-6 of the largest value measured);
    q8/q4 also by an input code that rounds the other way at a .5 boundary now and then (one
    step d_x on one value), ~1e-4 measured: 1e-3 of the largest value leaves margin for both."""
    scale = float(expected.abs().max())
    tolerance = (1e-4 if method in ("fp32", "bf16") else 1e-3) * scale
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance)


def _close_rows(actual: torch.Tensor, expected: torch.Tensor, method: str) -> None:
    """Rows (dim 0) of kernel results against the model's. For q8/q4 a row may also differ by an
    input code that rounds the other way at a .5 boundary (the kernel's fp32 sums and PyTorch's
    differ in the last bit): one code moves that input by d_x = amax / 127, ~1e-2 of the largest
    logit at most through the tiny models' 0.2-std weights (1.4e-2 / 4.1 measured once in 32 rows
    of two steps). bf16 rounds every input to 8 bits of mantissa the same way, so one value may
    move by 2^-8 of itself (8.3e-3 / 4.0 measured once in 5 rows, AVX2 build). fp32 rows must all
    be as close as `_close` asks; for the others, all but one row in eight within 1e-3 of the
    largest value."""
    if method == "fp32":
        _close(actual, expected, method)
        return
    scale = float(expected.abs().max())
    errors = (actual - expected).abs().flatten(1).amax(dim=1)  # (rows,)
    assert float(errors.max()) <= 2e-2 * scale, errors
    assert int((errors > 1e-3 * scale).sum()) <= max(1, len(errors) // 8), errors


# GQA + QK-norm + embedding norm + SwiGLU (akane); GPT-2 math: learned positions, LayerNorm,
# biases, tanh GELU (kia); soft-capped logits with a squared-ReLU MLP and an untied head; odd sizes
# (d_model 36, 6 heads over 2 KV heads, ffn 52: SIMD tails and padded q8/q4 row groups).
ARCHITECTURES = [
    ("akane-124m", {}),
    ("kia-1.6b", {}),
    ("ai4india", {"logit_softcap": 10.0, "mlp": "relu2", "tie_embeddings": False}),
    ("llama-42m", {"d_model": 36, "ffn_hidden": 52, "n_head": 6, "n_kv_head": 2}),
]
METHODS = ["fp32", "bf16", "q8", "q4"]


# Every architecture and format at 2 and 5 rows; 32 rows (the server's largest batches: every
# tile size and remainder) on the odd sizes in each format and on the GQA model in fp32 and q4.
CASES = [
    (*architecture, method, rows)
    for architecture in ARCHITECTURES
    for method in METHODS
    for rows in (2, 5, 32)
    if rows < 32
    or architecture is ARCHITECTURES[3]
    or (architecture is ARCHITECTURES[0] and method in ("fp32", "q4"))
]


@pytest.mark.parametrize(("preset", "overrides", "method", "rows"), CASES)
@torch.inference_mode()
def test_batched_steps_equal_single_row_steps_and_the_model(
    preset: str, overrides: dict[str, object], method: str, rows: int
) -> None:
    """N rows of different lengths, two batched steps each: the logits and the cache rows match
    N separate single-row kernel steps and the model's forward with per-row positions."""
    _library_or_skip()
    model, reference_model = _models(preset, overrides, method)
    config = model.config
    generator = torch.Generator().manual_seed(rows)
    lengths = torch.randint(1, 20, (rows,), generator=generator).tolist()
    reference = KVCache.for_model(config, rows, 24)
    for row, length in enumerate(lengths):  # each row its own prompt and length
        prompt = torch.randint(0, config.vocab_size, (1, length), generator=generator)
        model(prompt, kv_cache=reference.rows(row, row + 1))
    batched = KVCache.for_model(config, rows, 24)
    batched.keys.copy_(reference.keys)
    batched.values.copy_(reference.values)
    singles = []
    for row, length in enumerate(lengths):
        single = KVCache.for_model(config, 1, 24)
        single.keys.copy_(reference.keys[:, row : row + 1])
        single.values.copy_(reference.values[:, row : row + 1])
        single.length = length
        singles.append(single)
    fast = kernel_decoder.fast_decoder(model, batched, batch=True)
    assert fast is not None
    assert (fast.packed is None) == (method == "fp32")
    decoders = [kernel_decoder.fast_decoder(model, single) for single in singles]
    positions = list(lengths)
    tokens = torch.randint(0, config.vocab_size, (rows,), generator=generator).tolist()
    for _ in range(2):
        logits = fast.forward(tokens, range(rows), positions)  # (rows, padded_vocab)
        assert logits.shape == (rows, config.padded_vocab_size)
        expected = reference_model(
            torch.tensor(tokens).view(rows, 1),
            positions=torch.tensor(positions).view(rows, 1),
            kv_cache=reference,
        )[:, -1]
        _close_rows(logits, expected, method)
        for row, decoder in enumerate(decoders):
            assert decoder is not None
            one_row = decoder.step(tokens[row])[0, -1]
            # The same kernel math (the same int8 inputs), summed in another order at most.
            _close(logits[row], one_row, method)
        tokens = [int(token) for token in expected[:, : config.vocab_size].argmax(-1)]
        positions = [position + 1 for position in positions]
    for row, single in enumerate(singles):
        filled = positions[row]
        _close(batched.keys[:, row, :, :filled], single.keys[:, 0, :, :filled], method)
        _close(batched.values[:, row, :, :filled], single.values[:, 0, :, :filled], method)
    for tensor, expected_tensor in (
        (batched.keys, reference.keys),
        (batched.values, reference.values),
    ):
        _close_rows(tensor.transpose(0, 1), expected_tensor.transpose(0, 1), method)


@pytest.mark.parametrize("tokens", [1, 7, 64, 150])
@pytest.mark.parametrize("method", METHODS)
@torch.inference_mode()
def test_prefill_equals_the_model(
    method: str, tokens: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoder.prefill through the kernels (150 tokens: three calls of at most 64 here) gives the
    model's last-token logits and cache; a continuation at an explicit position (a chunked
    prefill of a BatchDecoder row) and `score` (every position's logits) too. (Prompts longer
    than KERNEL_PREFILL_MAX_TOKENS run the model's forward by default: lifted here so that the
    kernel's long prefills stay tested.)"""
    _library_or_skip()
    monkeypatch.setattr(decode_module, "KERNEL_PREFILL_MAX_TOKENS", defaultdict(lambda: 10**6))
    monkeypatch.setattr(kernel_decoder, "FORWARD_CHUNK", 64)  # chunks that attend to earlier ones
    model, reference_model = _models("akane-124m", {"context_length": 192}, method)
    config = model.config
    prompt = torch.randint(
        0, config.vocab_size, (tokens + 9,), generator=torch.Generator()
    ).tolist()
    cache = KVCache.for_model(config, 1, 192)
    reference = KVCache.for_model(config, 1, 192)
    decoder = Decoder(model, cache)
    logits = decoder.prefill(prompt[:tokens])
    assert decoder._kernel is not None  # the kernels ran it
    expected = reference_model(
        torch.tensor([prompt[:tokens]]), kv_cache=reference, last_token_only=True
    )[:, -1, : config.vocab_size]
    _close(logits, expected, method)
    assert cache.length == reference.length == tokens
    assert cache.lengths.tolist() == reference.lengths.tolist() == [tokens]
    _close(cache.keys[..., :tokens, :], reference.keys[..., :tokens, :], method)
    _close(cache.values[..., :tokens, :], reference.values[..., :tokens, :], method)
    # The next 4 tokens at an explicit position (the length is not the row's), then 5 more with
    # every position's logits.
    logits = decoder.prefill(prompt[tokens : tokens + 4], position=tokens)
    expected = reference_model(
        torch.tensor([prompt[tokens : tokens + 4]]),
        positions=torch.arange(tokens, tokens + 4).view(1, 4),
        kv_cache=reference,
        last_token_only=True,
    )[:, -1, : config.vocab_size]
    _close(logits, expected, method)
    assert cache.lengths.tolist() == reference.lengths.tolist() == [tokens + 4]
    cache.length = reference.length = tokens + 4
    scored = decoder.score(prompt[tokens + 4 :])
    expected = reference_model(torch.tensor([prompt[tokens + 4 :]]), kv_cache=reference)[0]
    _close(scored, expected[:, : config.vocab_size], method)
    assert cache.length == reference.length == tokens + 9
    _close(cache.keys[..., : tokens + 9, :], reference.keys[..., : tokens + 9, :], method)


@pytest.mark.parametrize("method", METHODS)
@torch.inference_mode()
def test_prefill_on_odd_sizes_equals_the_model(method: str) -> None:
    """Odd matrix widths and row counts (d_model 35, 5 heads of 7, ffn 51; GPT-2 math, no
    rotary): the tiles' remainders in K (an odd last pair of bf16 weights) and in rows (a partial
    group of 16), over enough tokens for every format's many-input tiles."""
    _library_or_skip()
    overrides = {"d_model": 35, "n_head": 5, "n_kv_head": 5, "ffn_hidden": 51, "context_length": 48}
    model, reference_model = _models("kia-1.6b", overrides, method)
    prompt = [(5 * token + 3) % model.config.vocab_size for token in range(40)]
    decoder = Decoder(model, KVCache.for_model(model.config, 1, 48))
    logits = decoder.prefill(prompt)
    assert decoder._kernel is not None
    expected = reference_model(torch.tensor([prompt]), last_token_only=True)[0, :, :]
    _close(logits, expected[:, : logits.shape[-1]], method)


@torch.inference_mode()
def test_forward_refuses_bad_arguments() -> None:
    _library_or_skip()
    model = _random_model("llama-42m")
    cache = KVCache.for_model(model.config, 2, 8)
    assert kernel_decoder.unsupported_reason(model, cache) is not None  # step() is batch-1
    assert kernel_decoder.unsupported_reason(model, cache, batch=True) is None
    fast = kernel_decoder.fast_decoder(model, cache, batch=True)
    assert fast is not None
    with pytest.raises(IndexError, match="past the KV cache"):
        fast.forward([1, 2], [0, 1], [3, 8])
    with pytest.raises(IndexError, match="outside the cache"):
        fast.forward([1, 2], [0, 2], [3, 3])
    with pytest.raises(IndexError, match="vocabulary"):
        fast.forward([fast.vocab], [0], [0])
    with pytest.raises(ValueError, match="same row and position"):
        fast.forward([1, 2], [0, 0], [3, 3])
    with pytest.raises(ValueError, match="increasing order"):
        fast.forward([1, 2], [0, 1], [3, 3], logits_for=[1, 0])
    with pytest.raises(ValueError, match="increasing order"):
        fast.forward([1, 2], [0, 1], [3, 3], logits_for=[2])


@torch.inference_mode()
def test_forward_returns_the_logits_asked_for() -> None:
    """`logits_for` picks rows of the full logits (a batch step with a prompt chunk mixed in:
    the decode rows' logits and the chunk's last)."""
    _library_or_skip()
    model = _random_model("llama-42m")
    cache = KVCache.for_model(model.config, 2, 16)
    fast = kernel_decoder.fast_decoder(model, cache, batch=True)
    assert fast is not None
    tokens, rows, positions = [5, 6, 7, 8, 9], [0, 1, 1, 1, 1], [0, 0, 1, 2, 3]
    full = fast.forward(tokens, rows, positions)  # (5, vocab)
    picked = fast.forward(tokens, rows, positions, logits_for=[0, 4])  # the same writes again
    torch.testing.assert_close(picked, full[[0, 4]], rtol=0, atol=0)


# --- the callers: identical tokens with the kernels on, off and built for AVX2 ------------------


def _count_forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the token count of every FastDecoder.forward call."""
    calls: list[int] = []
    original = kernel_decoder.FastDecoder.forward

    def counted(
        self: kernel_decoder.FastDecoder, tokens: list[int], *args: object, **kwargs: object
    ) -> torch.Tensor:
        calls.append(len(tokens))
        return original(self, tokens, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernel_decoder.FastDecoder, "forward", counted)
    return calls


def _count_mixed_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of prompt chunks of every BatchDecoder step that mixed them into the
    decode step's kernel call."""
    mixed: list[int] = []
    mixed_step = BatchDecoder._mixed_step

    def counted(
        self: BatchDecoder, running: list[Row], plan: list[tuple[Row, list[int]]]
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        mixed.append(len(plan))
        return mixed_step(self, running, plan)

    monkeypatch.setattr(BatchDecoder, "_mixed_step", counted)
    return mixed


def _serve(model: GPT) -> list[list[int]]:
    """Five greedy rows through a BatchDecoder: joins mid-way, chunked prefills, rows leaving."""
    decoder = BatchDecoder(model, max_batch=4, prefill_chunk=6)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12, 13], [14] * 9, [15, 16, 17, 18]]
    budgets = [12, 6, 9, 5, 7]
    handles: list[int] = []
    finished: dict[int, list[int]] = {}
    waiting = list(zip(prompts, budgets, strict=True))
    while waiting or decoder.active:
        if waiting and decoder.has_room:
            prompt, budget = waiting.pop(0)
            request = GenerationRequest(prompt, max_new_tokens=budget, sampling=GREEDY)
            handles.append(decoder.add(request))
        for row in decoder.step():
            finished[handles.index(row.handle)] = row.generated
    return [finished[index] for index in range(len(prompts))]


def _beams(model: GPT) -> list[tuple[list[int], float]]:
    results = beam_search(model, [3, 1, 4, 1, 5], beam_width=3, max_new_tokens=10)
    return [(result.token_ids, result.score) for result in results]


def _speculate(target: GPT, draft: GPT) -> tuple[list[int], int]:
    stats = SpeculativeStats()
    tokens = list(
        speculative_generate(
            target, draft, [2, 7, 1, 8], max_new_tokens=16, sampling=GREEDY, stats=stats
        )
    )
    return tokens, stats.accepted


# q8 with an fp16 cache is left out: the kernel's int8 input rounding (which PyTorch does not
# do) then lands in fp16 keys and values, and one near-tie flips a token of the greedy rows; the
# fp16 cache's numbers under q4 are compared with a tolerance below.
@pytest.mark.parametrize(
    ("method", "kv_cache"), [("fp32", "fp32"), ("q8", "fp32"), ("fp32", "fp16")]
)
def test_batch_beam_and_speculative_tokens_match_without_kernels(
    monkeypatch: pytest.MonkeyPatch, method: str, kv_cache: str
) -> None:
    """Greedy tokens of the BatchDecoder, beam search and speculative decoding are the same
    through the kernels' batched steps and prefills (which they do use) as through PyTorch, with
    an fp32 or an fp16 KV cache (PyTorch attends over the same rounded keys and values)."""
    _library_or_skip()
    model = _random_model("small")
    draft = _random_model("small", n_layer=1)
    if method != "fp32":
        model, draft = quantize_for_cpu(model, method), quantize_for_cpu(draft, method)
    set_cache_dtype(model, kv_cache)
    set_cache_dtype(draft, kv_cache)
    assert cache_dtype(model) == KV_CACHE_TYPES[kv_cache]
    calls = _count_forwards(monkeypatch)
    mixed = _count_mixed_steps(monkeypatch)
    served = _serve(model)
    assert any(count >= 2 for count in calls)  # batch steps of several rows ran in the kernel
    assert mixed  # prompt chunks rode along with decode steps in one kernel call
    calls.clear()
    beams = _beams(model)
    assert 3 in calls  # the three beams' steps
    calls.clear()
    speculated = _speculate(model, draft)
    assert calls and max(calls) >= 2  # the target verified drafts in one kernel call
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    calls.clear()
    assert _serve(model) == served
    fallback_beams = _beams(model)
    # fp32: the same function, so every beam agrees. q8: the kernel rounds each GEMV input to
    # int8 blocks and PyTorch does not (~1e-3 of a logit), so lower beams whose scores nearly tie
    # may swap places; the best one must not.
    compared = len(beams) if method == "fp32" else 1
    for (tokens, score), (expected_tokens, expected) in list(
        zip(beams, fallback_beams, strict=True)
    )[:compared]:
        assert tokens == expected_tokens
        assert score == pytest.approx(expected, rel=1e-4 if method == "fp32" else 1e-2)
    assert _speculate(model, draft) == speculated
    assert calls == []  # PyTorch throughout
    assert len(served[0]) == 12 and speculated[1] > 0


@pytest.mark.parametrize("kv_cache", ["fp32", "fp16"])
def test_forced_avx2_batch_and_prefill_give_the_same_tokens(
    monkeypatch: pytest.MonkeyPatch, kv_cache: str
) -> None:
    _library_or_skip()
    model = quantize_for_cpu(_random_model("small"), "q4")
    set_cache_dtype(model, kv_cache)  # fp16: the AVX2 build's F16C conversions
    served, beams = _serve(model), _beams(model)
    monkeypatch.setattr(loader, "_library", None)
    monkeypatch.setattr(loader, "_load_attempted", False)
    monkeypatch.setattr(loader, "_failure", None)
    monkeypatch.setenv(loader.ENV_ISA, "avx2")
    library = loader.load_library()
    assert library is not None, loader.unavailable_reason()
    assert library.sl_isa_mask() == 1 | 2 | 4  # AVX2, FMA, F16C; no AVX-512 instructions
    calls = _count_forwards(monkeypatch)
    assert _serve(model) == served
    assert [tokens for tokens, _ in _beams(model)] == [tokens for tokens, _ in beams]
    assert calls


@torch.inference_mode()
def test_long_prompts_prefill_through_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past KERNEL_PREFILL_MAX_TOKENS the prefill is the model's forward (lengths where the
    kernel was not measured against it); up to it, the kernel's."""
    _library_or_skip()
    limit = decode_module.KERNEL_PREFILL_MAX_TOKENS["f32"]
    model, _ = _models("akane-124m", {"context_length": limit + 8}, "fp32")
    calls = _count_forwards(monkeypatch)
    prompt = [token % model.config.vocab_size for token in range(limit + 1)]
    Decoder(model, KVCache.for_model(model.config, 1, limit + 8)).prefill(prompt[:limit])
    assert calls == [limit]
    Decoder(model, KVCache.for_model(model.config, 1, limit + 8)).prefill(prompt)
    assert calls == [limit]


@torch.inference_mode()
@pytest.mark.parametrize("method", ["q8", "q4", "bf16"])
def test_a_quantized_model_prefills_every_prompt_in_the_kernel(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """Quantized formats have no prefill limit (their forward would dequantize every weight per
    op): a prompt past fp32's limit goes through the kernel, and its next-token logits match the
    PyTorch reference on the same weights."""
    _library_or_skip()
    length = decode_module.KERNEL_PREFILL_MAX_TOKENS["f32"] + 40
    model, reference = _models("llama-42m", {"context_length": length + 8}, method)
    calls = _count_forwards(monkeypatch)
    prompt = [(7 * token) % model.config.vocab_size for token in range(length)]
    logits = Decoder(model, KVCache.for_model(model.config, 1, length + 8)).prefill(prompt)
    assert calls == [length]
    expected = reference(torch.tensor([prompt]), last_token_only=True)[0, :, : logits.shape[-1]]
    # Over 1,000 positions one q4 input code rounds the other way at a .5 boundary (9e-3 of the
    # largest logit measured at 1,064 tokens, the same with calls of 64 or 256 tokens):
    # `_close_rows` allows that one step.
    _close_rows(logits, expected, method)


def _edge_rows(model: GPT) -> list[tuple[list[int], str]]:
    """Rows that end at their first token (nothing to generate, one token, a stop token) join a
    running row with chunked prefills: their prompts ride along with its decode steps."""
    decoder = BatchDecoder(model, max_batch=4, prefill_chunk=4)
    first = GenerationRequest([1, 2, 3, 4, 5], max_new_tokens=14, sampling=GREEDY)
    probe = GenerationRequest([9, 8, 7, 6, 5, 4], max_new_tokens=1, sampling=GREEDY)
    handles = [decoder.add(first)]
    finished: dict[int, Row] = {}
    for row in decoder.step() + decoder.step():  # the first row's prompt, then one decode step
        finished[row.handle] = row
    handles.append(decoder.add(GenerationRequest([3, 3, 3, 3, 3], max_new_tokens=0)))
    handles.append(decoder.add(probe))
    while decoder.active:
        for row in decoder.step():
            finished[row.handle] = row
    # The probe's one token, now as a stop token of a fresh row: it ends at its first token.
    stop = finished[handles[2]].generated[0]
    stopping = GenerationRequest(
        [9, 8, 7, 6, 5, 4], max_new_tokens=5, sampling=GREEDY, stop_ids=frozenset({stop})
    )
    handles.append(
        decoder.add(GenerationRequest([1, 2, 3, 4, 5], max_new_tokens=6, sampling=GREEDY))
    )
    for row in decoder.step() + decoder.step():
        finished[row.handle] = row
    handles.append(decoder.add(stopping))
    while decoder.active:
        for row in decoder.step():
            finished[row.handle] = row
    return [(finished[h].generated, finished[h].finish_reason or "") for h in handles]


def test_rows_ending_at_their_first_token_in_a_mixed_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _library_or_skip()
    model = _random_model("small")
    mixed = _count_mixed_steps(monkeypatch)
    rows = _edge_rows(model)
    assert mixed
    assert [reason for _, reason in rows] == ["length", "length", "length", "length", "stop"]
    assert rows[1][0] == [] and len(rows[2][0]) == 1 and rows[4][0] == []
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    mixed.clear()
    assert _edge_rows(model) == rows
    assert mixed == []


@torch.inference_mode()
@pytest.mark.parametrize("method", ["fp32", "q4"])
def test_an_fp16_cache_matches_pytorch_over_the_rounded_keys_and_values(method: str) -> None:
    """The kernel with an fp16 cache (a prefill, then single steps) against the model's forward
    with the same cache: both write keys and values rounded to fp16 and attend over them in
    fp32. The cache holds half the bytes of an fp32 one."""
    _library_or_skip()
    model, reference = _models("llama-42m", {}, method)
    config = model.config
    fast_cache = KVCache.for_model(config, 1, 48, dtype=torch.float16)
    reference_cache = KVCache.for_model(config, 1, 48, dtype=torch.float16)
    assert fast_cache.nbytes * 2 == KVCache.for_model(config, 1, 48).nbytes
    decoder = Decoder(model, fast_cache)
    prompt = [(5 * index + 3) % config.vocab_size for index in range(20)]
    logits = decoder.prefill(prompt)
    assert decoder._kernel_decoder() is not None  # the kernel ran, on the fp16 cache
    expected = reference(torch.tensor([prompt]), kv_cache=reference_cache, last_token_only=True)
    _close(logits, expected[0, :, : logits.shape[-1]], method)
    token = int(logits.argmax())
    for _ in range(8):
        reference_cache.keys.copy_(fast_cache.keys)  # each step from the same cache (see
        reference_cache.values.copy_(fast_cache.values)  # test_quantized_decode)
        expected = reference(
            torch.tensor([[token]]), kv_cache=reference_cache, last_token_only=True
        )
        logits = decoder.step(token)
        _close(logits, expected[0, :, : logits.shape[-1]], method)
        token = int(expected[0, -1, : config.vocab_size].argmax())
    written = fast_cache.keys[:, 0, :, : len(prompt) + 8]
    assert written.abs().sum() > 0 and torch.isfinite(written).all()


def test_an_fp16_cache_is_refused_off_cpu_fp32() -> None:
    model = _random_model("tiny").to(torch.bfloat16)
    with pytest.raises(ScratchLMError, match="fp32 models on CPU"):
        set_cache_dtype(model, "fp16")
    with pytest.raises(ScratchLMError, match="unknown KV cache type"):
        set_cache_dtype(_random_model("tiny"), "int8")


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("n_head", "n_kv_head"), [(8, 1), (4, 2), (2, 2)])
@torch.inference_mode()
def test_prefill_attention_runs_against_the_model(
    n_head: int, n_kv_head: int, kv_dtype: torch.dtype
) -> None:
    """The kernel attends for runs of consecutive positions together (decode.cpp's attend_run:
    up to 16 tokens x the query heads of a KV head), for head sizes that are whole SIMD vectors
    (32 here; the tiny test models' 8 go token by token on AVX-512). 8 query heads per KV head
    make 128 queries a run; with 2 or 1, a tile of queries spans tokens that see different
    positions. One call holds a run that continues row 0 mid-row (16 + 4 tokens after 6 written
    by an earlier call) and a 3-token prompt of row 1 (token by token); the cache's unused
    positions hold NaN, which a run must never read. Logits of every token against the model's
    forward over each row alone (with a cache of the same element type)."""
    _library_or_skip()
    overrides = {"d_model": 32 * n_head, "n_head": n_head, "n_kv_head": n_kv_head, "ffn_hidden": 96}
    model = _random_model("llama-42m", context_length=64, **overrides)
    config = model.config
    cache = KVCache.for_model(config, 2, 64, dtype=kv_dtype)
    cache.keys.fill_(float("nan"))
    cache.values.fill_(float("nan"))
    fast = kernel_decoder.fast_decoder(model, cache, batch=True)
    assert fast is not None
    generator = torch.Generator().manual_seed(3)
    first = torch.randint(0, config.vocab_size, (26,), generator=generator).tolist()
    second = torch.randint(0, config.vocab_size, (3,), generator=generator).tolist()
    fast.forward(first[:6], [0] * 6, range(6))
    logits = fast.forward(
        first[6:] + second, [0] * 20 + [1] * 3, [*range(6, 26), *range(3)]
    )  # (23, padded vocab)
    assert torch.isfinite(logits).all()
    expected = []
    for prompt in (first, second):
        reference_cache = KVCache.for_model(config, 1, 64, dtype=kv_dtype)
        expected.append(model(torch.tensor([prompt]), kv_cache=reference_cache)[0])
    wanted = torch.cat([expected[0][6:], expected[1]])[:, : config.vocab_size]
    # With an fp16 cache a key or value whose fp32 sums differ in the last bit may round to the
    # other fp16 neighbour (2^-11 of itself): the looser tolerance of a q8 input code that rounds
    # the other way (1.7e-3 / 8.6 measured once in the 4-2 case).
    _close(logits[:, : config.vocab_size], wanted, "fp32" if kv_dtype == torch.float32 else "q8")
