"""q8 / q4 / bf16 weights in the fused decode kernels (scratchlm.inference.kernels.quant and
decode.cpp) and their loading (scratchlm.inference.quantize): the block quantizers against naive
references, the kernel's GEMVs and decode steps against PyTorch on the same (dequantized) weights,
greedy identity with fp32 on a trained model, the forced-AVX2 / disabled / compiler-less paths,
and the packed file beside a checkpoint.

Tests that run the kernels need a C++ compiler (built on first use, then cached) and skip without
one; everything else runs everywhere.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scratchlm.checkpoint import save_checkpoint
from scratchlm.cli.options import add_quantize_argument
from scratchlm.errors import ScratchLMError
from scratchlm.inference import quantize as quantize_module
from scratchlm.inference.engine import Engine
from scratchlm.inference.kernels import decoder as kernel_decoder
from scratchlm.inference.kernels import loader
from scratchlm.inference.kernels.quant import (
    BLOCK,
    ROW_GROUP,
    WEIGHT_TYPES,
    PackedWeight,
    dequantize_q4_0,
    dequantize_q8_0,
    materialize,
    model_linears,
    pack,
    packed_weights,
    quantize_q4_0,
    quantize_q8_0,
)
from scratchlm.inference.load import load_for_inference
from scratchlm.inference.quantize import packed_file_name, quantize_for_cpu
from scratchlm.inference.settings import GREEDY
from scratchlm.kv_cache import KVCache
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer, train_char
from tests.conftest import SAMPLE_TEXT, tiny_config


def _library_or_skip() -> None:
    if not loader.kernels_enabled():
        pytest.skip("SCRATCHLM_KERNELS=0")
    if loader.load_library() is None:
        pytest.skip(f"decode kernels unavailable: {loader.unavailable_reason()}")


def _reset_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the loaded library, so the next use builds/loads under the current environment."""
    monkeypatch.setattr(loader, "_library", None)
    monkeypatch.setattr(loader, "_load_attempted", False)
    monkeypatch.setattr(loader, "_failure", None)


def _weights(rows: int, columns: int) -> torch.Tensor:
    """Rows of different magnitudes, an all-zero block, an exact tie for q4's extreme value."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, columns, generator=generator)
    weight *= torch.logspace(-3, 1, rows).unsqueeze(1)
    weight[0, :BLOCK] = 0.0
    if rows > 1:
        weight[1, 3], weight[1, 5] = 2.0, -2.0  # |max| tie: the first (+2) sets the q4 scale
    return weight


# --- the block quantizers against naive per-block loops (the rules in quant.py's docstring) -----


def _naive_q8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, columns = weight.shape
    blocks = -(-columns // BLOCK)
    codes = np.zeros((rows, blocks * BLOCK), dtype=np.int8)
    scales = np.zeros((rows, blocks), dtype=np.float16)
    for r in range(rows):
        for b in range(blocks):
            values = weight[r, b * BLOCK : (b + 1) * BLOCK]  # the padding is zeros
            d = np.float16(np.abs(values).max() / np.float32(127))
            scales[r, b] = d
            if d != 0:
                inverse = np.float32(1) / np.float32(d)
                q = np.clip(np.round(values * inverse), -127, 127)  # numpy rounds half to even
                codes[r, b * BLOCK : b * BLOCK + len(values)] = q
    return codes, scales


def _naive_q4(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, columns = weight.shape
    blocks = -(-columns // BLOCK)
    padded = np.zeros((rows, blocks * BLOCK), dtype=np.float32)
    padded[:, :columns] = weight
    packed = np.zeros((rows, blocks * BLOCK // 2), dtype=np.uint8)
    scales = np.zeros((rows, blocks), dtype=np.float16)
    for r in range(rows):
        for b in range(blocks):
            values = padded[r, b * BLOCK : (b + 1) * BLOCK]
            extreme = values[int(np.argmax(np.abs(values)))]  # the first on ties
            d = np.float16(extreme / np.float32(-8))
            scales[r, b] = d
            inverse = np.float32(1) / np.float32(d) if d != 0 else np.float32(0)
            codes = (np.clip(np.round(values * inverse), -8, 7) + 8).astype(np.uint8)
            for j in range(BLOCK // 2):
                packed[r, b * BLOCK // 2 + j] = codes[j] | (codes[j + BLOCK // 2] << 4)
    return packed, scales


@pytest.mark.parametrize("columns", [64, 70])  # whole blocks, and a padded last block
def test_q8_codes_and_scales_match_the_naive_rule(columns: int) -> None:
    weight = _weights(9, columns)
    codes, scales = quantize_q8_0(weight)
    naive_codes, naive_scales = _naive_q8(weight.numpy())
    assert np.array_equal(codes.numpy(), naive_codes)
    assert np.array_equal(scales.numpy(), naive_scales)
    values = dequantize_q8_0(codes, scales, columns)
    expected = (naive_codes.astype(np.float32).reshape(9, -1, BLOCK)) * naive_scales.astype(
        np.float32
    )[..., None]
    assert np.array_equal(values.numpy(), expected.reshape(9, -1)[:, :columns])
    # Round-trip error: at most half a step (d / 2) per weight, plus fp16's rounding of d
    # (|q| <= 127 steps of a relative 2^-11).
    step = scales.float().repeat_interleave(BLOCK, dim=1)[:, :columns]
    assert bool(((values - weight).abs() <= step / 2 + 127 * step * 2**-11).all())
    assert bool((codes[0, :BLOCK] == 0).all()) and float(scales[0, 0]) == 0.0


@pytest.mark.parametrize("columns", [64, 70])
def test_q4_codes_and_scales_match_the_naive_rule(columns: int) -> None:
    weight = _weights(9, columns)
    packed, scales = quantize_q4_0(weight)
    naive_packed, naive_scales = _naive_q4(weight.numpy())
    assert np.array_equal(packed.numpy(), naive_packed)
    assert np.array_equal(scales.numpy(), naive_scales)
    assert float(scales[1, 0]) == -0.25  # +2.0 (the first of the tie) maps to code -8
    values = dequantize_q4_0(packed, scales, columns)
    low, high = naive_packed.reshape(9, -1, 16) & 0x0F, naive_packed.reshape(9, -1, 16) >> 4
    codes = np.concatenate([low, high], axis=-1).astype(np.float32) - 8
    expected = (codes * naive_scales.astype(np.float32)[..., None]).reshape(9, -1)[:, :columns]
    assert np.array_equal(values.numpy(), expected)
    step = scales.float().abs().repeat_interleave(BLOCK, dim=1)[:, :columns]
    # Half a step, except the value opposite the extreme: +8 steps clamps to +7 (one step off).
    assert bool(((values - weight).abs() <= step * (1 + 2**-10)).all())


@pytest.mark.parametrize("method", ["q8", "q4"])
def test_packed_layout_groups_rows_block_by_block(method: str) -> None:
    """The kernel's layout: block b of row 4 g + i at data[g, b, i * bytes : (i + 1) * bytes],
    the last group padded with zero rows (scales too); dequantize undoes it exactly."""
    weight = _weights(9, 70)  # 9 rows: 3 groups, the last with 3 padding rows
    codes, scales = quantize_q8_0(weight) if method == "q8" else quantize_q4_0(weight)
    matrix = pack(weight, method)
    assert matrix.scales is not None
    width = BLOCK if method == "q8" else BLOCK // 2
    assert matrix.data.shape == (3, 3, ROW_GROUP * width)
    for row in range(12):
        for block in range(3):
            stored = matrix.data[row // 4, block, (row % 4) * width : (row % 4 + 1) * width]
            if row < 9:
                assert torch.equal(stored, codes[row, block * width : (block + 1) * width])
            else:
                assert not bool(stored.any()) and not bool(matrix.scales[row].any())
    assert torch.equal(matrix.scales[:9], scales)
    dequantize = dequantize_q8_0 if method == "q8" else dequantize_q4_0
    assert torch.equal(matrix.dequantize(), dequantize(codes, scales, 70))


def test_bf16_rounds_to_nearest_even() -> None:
    weight = _weights(4, 40)
    matrix = pack(weight, "bf16")
    bits = weight.numpy().view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # naive RNE
    assert np.array_equal(matrix.data.view(torch.int16).numpy().view(np.uint16), rounded)
    assert torch.equal(matrix.dequantize(), weight.to(torch.bfloat16).float())


# --- the kernel's GEMVs: a bound derived from the input quantization ---------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("method", ["q8", "q4", "bf16"])
def test_packed_gemv_within_the_derived_bound(method: str, threads: int) -> None:
    """y = W x with W packed: against W's dequantized values in float64. For q8/q4 the kernel
    rounds x to int8 blocks, each value off by at most d_x / 2 (d_x = block amax / 127), so
    |y - W x| <= sum over blocks of d_x / 2 * sum |w| in the block, plus fp32 rounding
    (bounded by K * eps * sum |w x|, generously). bf16 rounds x to bf16 precision (as every
    bf16 GEMV/GEMM of the kernel does); weights and rounded inputs are exact in fp32, so against
    the rounded x: fp32 rounding only."""
    _library_or_skip()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows, columns in ((1, 32), (13, 70), (130, 512), (37, 1376)):
            weight = _weights(rows, columns)
            x = torch.randn(columns, generator=torch.Generator().manual_seed(1)) * 3
            bias = torch.randn(rows)
            matrix = pack(weight, method)
            dense = matrix.dequantize().double()
            if method == "bf16":
                x = x.to(torch.bfloat16).float()  # the kernel's rounding; `fast` rounds it again
            fast = loader.gemv_packed(
                WEIGHT_TYPES[method], matrix.data, matrix.scales, x, rows, bias
            )
            reference = dense @ x.double() + bias.double()
            magnitude = dense.abs() @ x.abs().double() + bias.abs().double()
            tolerance = columns * torch.finfo(torch.float32).eps * magnitude + 1e-6
            if method != "bf16":
                padded = nn.functional.pad(x, (0, -columns % BLOCK)).reshape(-1, BLOCK)
                half_step = (padded.abs().amax(dim=1) / 127 / 2).double()  # per block
                weight_blocks = nn.functional.pad(dense.abs(), (0, -columns % BLOCK))
                weight_sums = weight_blocks.reshape(rows, -1, BLOCK).sum(dim=-1)
                tolerance = tolerance + weight_sums @ half_step
            error = (fast.double() - reference).abs()
            assert bool((error <= tolerance).all()), f"{method} {rows}x{columns}"
    finally:
        torch.set_num_threads(saved)


# --- whole decode steps against PyTorch on the same weights ------------------------------------


def _random_model(preset: str, **overrides: object) -> GPT:
    torch.manual_seed(0)
    return build_model(tiny_config(preset, init_std=0.2, **overrides)).eval()


def _quantize_inputs_like_the_kernel(model: GPT, method: str) -> None:
    """Forward pre-hooks that round every linear layer's input as the kernel does: for q8/q4 per
    32-value block, d = amax / 127, x -> round(x * (1 / d)) * d (fp32, half to even); for bf16 to
    bf16 precision (nearest even)."""

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        x = inputs[0]
        if method == "bf16":
            return (x.to(torch.bfloat16).to(x.dtype),)
        columns = x.shape[-1]
        blocks = nn.functional.pad(x, (0, -columns % BLOCK)).unflatten(-1, (-1, BLOCK))
        d = blocks.abs().amax(dim=-1, keepdim=True) / 127
        inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
        rounded = (torch.round(blocks * inverse) * d).flatten(-2)[..., :columns]
        return (rounded,)

    for _, linear in model_linears(model):
        linear.register_forward_pre_hook(hook)


ARCHITECTURES = [
    ("llama-42m", {}),
    ("akane-124m", {}),
    ("small", {"mlp": "relu2", "tie_embeddings": False, "qk_norm": False}),
    ("llama-42m", {"d_model": 36, "ffn_hidden": 52, "n_head": 6, "n_kv_head": 2}),  # padded rows
]


@pytest.mark.parametrize("method", ["q8", "q4", "bf16"])
@pytest.mark.parametrize(("preset", "overrides"), ARCHITECTURES)
@torch.inference_mode()
def test_decode_steps_match_pytorch_on_the_same_weights(
    preset: str, overrides: dict[str, object], method: str
) -> None:
    """Kernel decode steps of a packed model against its PyTorch forward, which runs on the
    dequantized weights (the quantized model holds them) with, for q8/q4, the kernel's input
    rounding (int8 blocks; bf16 precision) emulated by hooks: the same computation, so what
    remains is fp32 summation order and, rarely, an input that rounds the other way at a boundary
    (one step, d_x or one bf16 unit, on one value). Measured ~1e-6 of the largest logit. A flip in a late layer's input moves that one
    step's logits by up to ~0.6% of the largest (seen with 1 thread, whose summation order differs
    from the reference's at a boundary), so one step of the ten may be off by up to 1e-2; every
    other step must agree within 1e-3."""
    _library_or_skip()
    model = quantize_for_cpu(_random_model(preset, **overrides), method)
    reference_model = quantize_for_cpu(_random_model(preset, **overrides), method)
    _quantize_inputs_like_the_kernel(reference_model, method)
    config = model.config
    prompt = torch.randint(0, config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(0))
    reference_cache = KVCache.for_model(config, 1, 16)
    fast_cache = KVCache.for_model(config, 1, 16)
    reference_model(prompt, kv_cache=reference_cache, last_token_only=True)
    model(prompt, kv_cache=fast_cache, last_token_only=True)
    reference_cache.keys.copy_(fast_cache.keys)  # the same prefill for both (the prompt's
    reference_cache.values.copy_(fast_cache.values)  # inputs were rounded only in one)
    decoder = kernel_decoder.fast_decoder(model, fast_cache)
    assert decoder is not None and decoder.packed is not None
    assert decoder.packed.format == method
    token = 3
    flipped_steps = 0
    for _ in range(10):
        # Each step from the same cache: a flipped input code (or bf16 rounding) in a key or value
        # would stay in the cache and move every later step, and count more than once.
        reference_cache.keys.copy_(fast_cache.keys)
        reference_cache.values.copy_(fast_cache.values)
        reference = reference_model(
            torch.tensor([[token]]), kv_cache=reference_cache, last_token_only=True
        )
        fast = decoder.step(token)
        scale = float(reference.abs().max())
        torch.testing.assert_close(fast, reference, rtol=0, atol=1e-2 * scale)
        flipped_steps += not torch.allclose(fast, reference, rtol=0, atol=1e-3 * scale)
        token = int(reference[0, -1, : config.vocab_size].argmax())
    assert flipped_steps <= 1, f"{flipped_steps} of 10 steps differ by more than 1e-3"


def test_quantized_model_computes_with_the_dequantized_weights() -> None:
    """Every linear layer (a tied head too) reads as its packed matrix's values; the embedding
    stays the fp32 original; a weight replaced afterwards makes the kernel ignore the stale copy
    (and hold the rest as fp32 for its fp32 mode)."""
    model = _random_model("llama-42m")  # tied embeddings
    quantized = quantize_for_cpu(model, "q4")
    assert model.lm_head.weight is model.token_embedding.weight  # the original is untouched
    packed = packed_weights(quantized)
    assert packed is not None and packed.matches(quantized)
    assert torch.equal(quantized.token_embedding.weight, model.token_embedding.weight)
    assert quantized.lm_head.weight is not quantized.token_embedding.weight
    for name, linear in model_linears(quantized):
        assert torch.equal(linear.weight, packed.matrices[name].dequantize())
        assert not torch.equal(linear.weight, dict(model_linears(model))[name].weight)
    with torch.no_grad():
        dict(model_linears(quantized))["blocks.0.attention.q_proj"].weight = nn.Parameter(
            packed.matrices["blocks.0.attention.q_proj"].dequantize() * 2
        )
    assert not packed.matches(quantized)
    if loader.kernels_enabled() and loader.load_library() is not None:
        cache = KVCache.for_model(quantized.config, 1, 8)
        decoder = kernel_decoder.fast_decoder(quantized, cache)
        assert decoder is not None and decoder.packed is None  # fp32 on the current weights
        assert not any(isinstance(p, PackedWeight) for p in quantized.parameters())


def test_a_quantized_model_holds_no_fp32_copy_of_its_linear_layers() -> None:
    """With the kernels, each linear layer is held once, packed: the model's own storage is the
    embedding and the norms, and a long prompt through the PyTorch forward gives the logits of a
    model holding the dequantized weights as plain fp32. In-place writes are refused."""
    _library_or_skip()
    for method in ("q8", "q4", "bf16"):
        quantized = quantize_for_cpu(_random_model("llama-42m"), method)
        reference = quantize_for_cpu(_random_model("llama-42m"), method)
        assert materialize(reference) == len(model_linears(reference))
        linears = dict(model_linears(quantized))
        assert all(isinstance(linear.weight, PackedWeight) for linear in linears.values())
        plain_bytes = sum(
            p.untyped_storage().nbytes()
            for p in quantized.parameters()
            if not isinstance(p, PackedWeight)
        )
        embedding = quantized.token_embedding.weight
        norms = sum(p.numel() for n, p in quantized.named_parameters() if "norm" in n)
        assert plain_bytes == (embedding.numel() + norms) * 4
        tokens = torch.randint(0, quantized.config.vocab_size, (2, quantized.config.context_length))
        with torch.inference_mode():
            torch.testing.assert_close(quantized(tokens), reference(tokens), rtol=0, atol=1e-5)
        with pytest.raises(ScratchLMError, match="read-only"), torch.no_grad():
            linears["blocks.0.mlp.up_proj"].weight.mul_(2)


def test_a_quantized_model_saves_the_values_it_computes_with(tmp_path: Path) -> None:
    """A quantized model saved as a checkpoint holds plain fp32 weights: the dequantized values
    (what it computes with), loadable without --quantize."""
    _library_or_skip()
    tokenizer = train_char([SAMPLE_TEXT])
    quantized = quantize_for_cpu(_random_model("llama-42m", vocab_size=tokenizer.vocab_size), "q4")
    save_checkpoint(tmp_path / "saved", quantized, tokenizer)
    loaded, _ = load_for_inference(str(tmp_path / "saved"), "cpu")
    for name, linear in model_linears(loaded.model):
        if name == "lm_head" and loaded.model.config.tie_embeddings:
            continue  # stored once, as the embedding
        assert torch.equal(linear.weight, dict(model_linears(quantized))[name].weight)


def test_a_fallback_holds_fp32_weights_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel cannot run the model (a forward hook here), every step is a PyTorch step:
    the quantized weights become plain fp32 parameters once, with the same values, and the
    packed copy still matches them. With the kernels disabled, quantizing holds fp32 from the
    start."""
    _library_or_skip()
    quantized = quantize_for_cpu(_random_model("llama-42m"), "q8")
    before = {name: linear.weight.matrix for name, linear in model_linears(quantized)}
    quantized.blocks[0].register_forward_pre_hook(lambda module, inputs: None)
    assert kernel_decoder.fast_decoder(quantized, KVCache.for_model(quantized.config, 1, 8)) is None
    for name, linear in model_linears(quantized):
        assert type(linear.weight) is nn.Parameter
        assert torch.equal(linear.weight, before[name].dequantize())
    packed = packed_weights(quantized)
    assert packed is not None and packed.matches(quantized)
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    disabled = quantize_for_cpu(_random_model("llama-42m"), "q8")
    assert not any(isinstance(p, PackedWeight) for p in disabled.parameters())


# --- a trained model: greedy text -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> tuple[GPT, Tokenizer]:
    """A tiny Llama-shaped model trained (120 steps, ~3 s) until it recites SAMPLE_TEXT: peaked logits, as a
    real model's, where quantization must not change the greedy text."""
    tokenizer = train_char([SAMPLE_TEXT])
    torch.manual_seed(0)
    config = tiny_config(
        "llama-42m", vocab_size=tokenizer.vocab_size, d_model=64, ffn_hidden=128, context_length=96
    )
    model = build_model(config)
    data = torch.tensor(tokenizer.encode(SAMPLE_TEXT) * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        starts = torch.randint(0, len(data) - 65, (8,), generator=generator)
        batch = torch.stack([data[start : start + 65] for start in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = nn.functional.cross_entropy(
            logits[..., : tokenizer.vocab_size].flatten(0, 1), batch[:, 1:].flatten()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.6, "the fixture model did not learn the text"
    return model.eval(), tokenizer


def _greedy(model: GPT, tokenizer: Tokenizer) -> list[int]:
    prompt = tokenizer.encode("Once upon a time")
    return list(Engine(model).generate(prompt, max_new_tokens=32, sampling=GREEDY))


def test_q8_greedy_text_equals_fp32_on_a_trained_model(
    trained: tuple[GPT, Tokenizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _library_or_skip()
    model, tokenizer = trained
    calls: list[str] = []
    original = kernel_decoder.FastDecoder.step

    def counted(self: kernel_decoder.FastDecoder, token: int) -> torch.Tensor:
        calls.append("f32" if self.packed is None else self.packed.format)
        return original(self, token)

    monkeypatch.setattr(kernel_decoder.FastDecoder, "step", counted)
    fp32 = _greedy(model, tokenizer)
    q8 = _greedy(quantize_for_cpu(model, "q8"), tokenizer)
    assert calls == ["f32"] * 31 + ["q8"] * 31  # the prefill gives each first token
    assert q8 == fp32 and len(fp32) == 32
    assert tokenizer.decode(fp32) in SAMPLE_TEXT  # it recites


def test_forced_avx2_and_disabled_kernels_give_the_same_tokens(
    trained: tuple[GPT, Tokenizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _library_or_skip()
    model, tokenizer = trained
    quantized = quantize_for_cpu(model, "q8")
    default = _greedy(quantized, tokenizer)
    _reset_loader(monkeypatch)
    monkeypatch.setenv(loader.ENV_ISA, "avx2")
    library = loader.load_library()
    assert library is not None, loader.unavailable_reason()
    assert library.sl_isa_mask() == 1 | 2 | 4  # AVX2, FMA, F16C; no AVX-512 instructions
    assert "scratchlm_decode_avx2_" in loader.library_path()[0].parent.name
    assert _greedy(quantized, tokenizer) == default
    monkeypatch.setenv(loader.ENV_SWITCH, "0")
    assert kernel_decoder.fast_decoder(quantized, KVCache.for_model(model.config, 1, 8)) is None
    assert _greedy(quantized, tokenizer) == default  # PyTorch on the dequantized weights


def test_a_missing_compiler_warns_once_and_falls_back(
    trained: tuple[GPT, Tokenizer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, tokenizer = trained
    expected = _greedy(model, tokenizer)  # the kernels when there are, else PyTorch
    _reset_loader(monkeypatch)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with caplog.at_level(logging.WARNING, logger=loader.__name__):
        assert _greedy(model, tokenizer) == expected
        assert _greedy(quantize_for_cpu(model, "q8"), tokenizer) == expected
    warnings = [record for record in caplog.records if record.name == loader.__name__]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "no C++ compiler found" in message and "PyTorch" in message and "\n" not in message


def test_an_unsupported_cpu_or_isa_setting_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for flags, setting, reason in (
        (frozenset({"avx", "sse4_2"}), "native", "lacks avx2, f16c, fma"),
        (loader.cpu_flags(), "avx9", "SCRATCHLM_KERNEL_ISA='avx9' is not one of native, avx2"),
    ):
        _reset_loader(monkeypatch)
        monkeypatch.setattr(loader, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setenv(loader.ENV_ISA, setting)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=loader.__name__):
            assert loader.load_library() is None
        assert reason in str(loader.unavailable_reason())
        assert len(caplog.records) == 1 and reason in caplog.records[0].getMessage()


def test_the_build_is_keyed_by_the_cpus_instruction_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    if loader._compiler() is None:
        pytest.skip("no C++ compiler")
    base = frozenset({"avx", "avx2", "fma", "f16c", "sse4_2"})
    monkeypatch.setattr(loader, "cpu_flags", lambda: base)
    avx2_path = loader.library_path()[0]
    monkeypatch.setattr(loader, "cpu_flags", lambda: base | {"avx512f", "avx512bw"})
    avx512_path = loader.library_path()[0]
    assert avx2_path != avx512_path
    assert avx2_path.parent.name.startswith("scratchlm_decode_avx2_")
    assert avx512_path.parent.name.startswith("scratchlm_decode_avx512_")


def test_a_binary_for_other_instructions_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _library_or_skip()
    library = loader.load_library()
    assert library is not None
    monkeypatch.setattr(loader, "cpu_flags", lambda: frozenset({"avx", "sse4_2"}))
    with pytest.raises(RuntimeError, match="needs avx2"):
        loader._check_isa(library)


# --- the packed file beside a checkpoint --------------------------------------------------------


def test_packed_file_is_reused_and_rewritten_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = train_char([SAMPLE_TEXT])
    config = tiny_config("llama-42m", vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "ckpt", build_model(config), tokenizer)
    packs: list[str] = []
    original_pack = quantize_module.pack_model

    def counted(model: GPT, method: str) -> dict[str, object]:
        packs.append(method)
        return original_pack(model, method)  # type: ignore[return-value]

    monkeypatch.setattr(quantize_module, "pack_model", counted)
    first = load_for_inference(str(checkpoint), "cpu", "q8")[0].model
    path = checkpoint / packed_file_name("q8")
    assert packs == ["q8"] and path.is_file()
    written = path.stat().st_mtime_ns
    second = load_for_inference(str(checkpoint), "cpu", "q8")[0].model
    assert packs == ["q8"] and path.stat().st_mtime_ns == written  # read, not redone
    first_packed, second_packed = packed_weights(first), packed_weights(second)
    assert first_packed is not None and second_packed is not None
    for name, matrix in first_packed.matrices.items():
        again = second_packed.matrices[name]
        assert torch.equal(matrix.data, again.data)
        assert matrix.scales is not None and again.scales is not None
        assert torch.equal(matrix.scales, again.scales)
    for (_, a), (_, b) in zip(model_linears(first), model_linears(second), strict=True):
        assert torch.equal(a.weight, b.weight)

    # Beside other weights (a retrained checkpoint): the file is stale, ignored and rewritten.
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other", build_model(config), tokenizer)
    stale = other / packed_file_name("q8")
    shutil.copyfile(path, stale)
    third = load_for_inference(str(other), "cpu", "q8")[0].model
    assert packs == ["q8", "q8"] and stale.read_bytes() != path.read_bytes()
    fresh = quantize_for_cpu(load_for_inference(str(other), "cpu")[0].model, "q8")
    for (_, a), (_, b) in zip(model_linears(third), model_linears(fresh), strict=True):
        assert torch.equal(a.weight, b.weight)


def test_packed_file_goes_to_the_cache_when_the_checkpoint_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = train_char([SAMPLE_TEXT])
    torch.manual_seed(0)
    model = build_model(tiny_config("llama-42m", vocab_size=tokenizer.vocab_size))
    checkpoint = save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    original_write = quantize_module.write_packed

    def read_only(path: Path, *args: object) -> None:
        if path.parent == checkpoint:  # as a read-only directory (root ignores chmod)
            raise PermissionError(f"read-only: {path}")
        original_write(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(quantize_module, "write_packed", read_only)
    load_for_inference(str(checkpoint), "cpu", "bf16")
    assert not (checkpoint / packed_file_name("bf16")).exists()
    cached = list((quantize_module.default_cache_root() / "quantized").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith(packed_file_name("bf16"))
    packs: list[str] = []

    def refuse(model: GPT, method: str) -> dict[str, object]:
        packs.append(method)
        raise AssertionError("the cached file should have been read")

    monkeypatch.setattr(quantize_module, "pack_model", refuse)
    loaded = load_for_inference(str(checkpoint), "cpu", "bf16")[0].model
    assert packs == [] and packed_weights(loaded) is not None


def test_the_quantize_flag() -> None:
    parser = argparse.ArgumentParser()
    add_quantize_argument(parser)
    assert parser.parse_args(["--quantize", "q4"]).quantize == "q4"
    assert parser.parse_args([]).quantize == "none"
    assert "int8" not in parser.format_help()  # retired: accepted only to say what replaced it
    assert parser.parse_args(["--quantize", "int8"]).quantize == "int8"


def test_int8_is_retired_with_a_pointer_to_q8() -> None:
    model = _random_model("llama-42m")
    with pytest.raises(ScratchLMError, match="use q8"):
        quantize_for_cpu(model, "int8")
    with pytest.raises(ScratchLMError, match="unknown quantization"):
        quantize_for_cpu(model, "q5")
    assert quantize_for_cpu(model, "none") is model
    with pytest.raises(ScratchLMError, match="fp32"):
        quantize_for_cpu(_random_model("llama-42m").to(torch.bfloat16), "q8")
