"""Quantized GGUF (q8_0, q5_1, q5_0, q4_1, q4_0) through llama.cpp, K-quant refusals, and the
Hugging Face export's --dtype (bf16, fp16) through transformers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scratchlm.checkpoint import load_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.export import gguf as gguf_export
from scratchlm.export import hf as hf_export
from scratchlm.export.gguf import export_gguf
from scratchlm.tokenizer import Tokenizer
from tests.export.test_gguf import llama_greedy, llama_logits, llama_model, make_checkpoint

gguf = pytest.importorskip("gguf")

QUANTS = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
PROMPT = "Once upon a time, Tom saw a big red ball in the park"
# Mean |llama.cpp logit - our float32 logit| over the prompt, as a fraction of our logits'
# standard deviation, on the random tiny model below (d_model 32: 1 or 2 blocks per row, the
# worst case for block quants). Measured 0.04 (q8_0), 0.17-0.20 (q5), 0.34-0.39 (q4).
RELATIVE_ERROR_BOUND = {"q8_0": 0.08, "q5_1": 0.3, "q5_0": 0.3, "q4_1": 0.5, "q4_0": 0.5}


def our_logits(checkpoint: Path, ids: list[int]) -> np.ndarray:
    model = load_checkpoint(checkpoint).model
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].float().numpy()  # (T, padded_vocab)


@pytest.mark.parametrize("tied", [True, False])
def test_quantized_logits_close_to_f32_in_bit_order(
    tmp_path: Path, bpe_tokenizer: Tokenizer, tied: bool
) -> None:
    overrides: dict[str, object] = {"tie_embeddings": tied}
    if not tied:
        overrides["n_kv_head"] = 2
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, **overrides)
    prompt = bpe_tokenizer.encode(PROMPT)
    reference = our_logits(checkpoint, prompt)
    scale = float(reference.std())
    errors: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for dtype in QUANTS:
        out = export_gguf(checkpoint, tmp_path / f"model-{dtype}.gguf", dtype=dtype)
        sizes[dtype] = out.stat().st_size
        llm = llama_model(out)
        errors[dtype] = float(np.abs(llama_logits(llm, prompt) - reference).mean()) / scale
        assert errors[dtype] < RELATIVE_ERROR_BOUND[dtype], (dtype, errors)
        generated = llama_greedy(llm, prompt[:8], 8)
        assert len(generated) == 8 and all(0 <= token < reference.shape[1] for token in generated)
    # Fewer bits, larger error: q8 < both q5 < both q4 (q5_1 vs q5_0 may go either way).
    assert errors["q8_0"] < min(errors["q5_1"], errors["q5_0"]), errors
    assert max(errors["q5_1"], errors["q5_0"]) < min(errors["q4_1"], errors["q4_0"]), errors
    assert sizes["q8_0"] > sizes["q5_1"] > sizes["q5_0"] > sizes["q4_1"] > sizes["q4_0"], sizes


@pytest.mark.parametrize("dtype", QUANTS)
def test_metadata_and_tensor_types(tmp_path: Path, bpe_tokenizer: Tokenizer, dtype: str) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, tie_embeddings=False)
    reader = gguf.GGUFReader(export_gguf(checkpoint, tmp_path / "model.gguf", dtype=dtype))
    assert reader.fields["general.quantization_version"].contents() == gguf.GGML_QUANT_VERSION
    expected_file_type = getattr(gguf.LlamaFileType, f"MOSTLY_{dtype.upper()}")
    assert reader.fields["general.file_type"].contents() == int(expected_file_type)
    types = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    quant = gguf.GGMLQuantizationType
    assert types["blk.0.attn_norm.weight"] == quant.F32
    assert types["output_norm.weight"] == quant.F32
    assert types["blk.1.ffn_down.weight"] == getattr(quant, dtype.upper())
    assert types["token_embd.weight"] == getattr(quant, dtype.upper())  # untied: the file's type
    assert types["output.weight"] == quant.Q8_0  # llama.cpp's Q6_K, which gguf-py cannot write


def test_tied_head_is_q8_0_and_f32_file_type(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, tie_embeddings=True)
    reader = gguf.GGUFReader(export_gguf(checkpoint, tmp_path / "q4.gguf", dtype="q4_0"))
    types = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert "output.weight" not in types
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0  # it is the head
    reader = gguf.GGUFReader(export_gguf(checkpoint, tmp_path / "f32.gguf", dtype="f32"))
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.ALL_F32)
    assert reader.fields["general.quantization_version"].contents() == gguf.GGML_QUANT_VERSION


def test_rows_off_the_block_size_fall_back_to_f16_and_are_logged(
    tmp_path: Path, bpe_tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    # d_model 48: every weight with 48 inputs has rows of 1.5 blocks; ffn_down (64 inputs) splits.
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, d_model=48)
    with caplog.at_level(logging.WARNING, logger="scratchlm.export.gguf"):
        out = export_gguf(checkpoint, tmp_path / "model.gguf", dtype="q4_0")
    types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert "blk.0.attn_q.weight [48, 48]" in caplog.text
    assert "blk.0.ffn_down.weight" not in caplog.text
    prompt = bpe_tokenizer.encode(PROMPT)
    reference = our_logits(checkpoint, prompt)
    error = np.abs(llama_logits(llama_model(out), prompt) - reference).mean() / reference.std()
    assert error < RELATIVE_ERROR_BOUND["q4_0"], error


@pytest.mark.parametrize("dtype", ["q4_k", "Q4_K_M", "q6_k", "q3"])
def test_refused_dtype_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, bpe_tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str], dtype: str
) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = tmp_path / "model.gguf"
    argv = ["export", "gguf", "-m", str(checkpoint), "--out", str(out), "--dtype", dtype]
    if dtype in gguf_export.KQUANT_DTYPES:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("error: "), error
        assert f"llama-quantize model-f16.gguf model-{dtype.upper()}.gguf {dtype.upper()}" in error
    else:
        # Not a choice of the parser (an unknown name or a spelling llama-quantize uses):
        # argparse's usage error, also exit 2.
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(ScratchLMError, match="llama-quantize"):
        gguf_export.check_dtype("q4_k_m")


# --- Hugging Face --dtype ---------------------------------------------------------------------------

# (mean, max) |transformers logit in `dtype` - our float32 logit| over our logits' standard
# deviation: bf16 keeps 8 mantissa bits, fp16 11, and transformers computes in that dtype.
# Measured on the random tiny model: bf16 0.015 / 0.18, fp16 0.002 / 0.023.
HF_TOLERANCE = {"bf16": (0.04, 0.4), "fp16": (0.006, 0.06)}


@pytest.mark.parametrize("layout", ["llama", "custom"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_hf_half_precision_export_matches(
    tmp_path: Path, bpe_tokenizer: Tokenizer, dtype: str, layout: str
) -> None:
    transformers = pytest.importorskip("transformers")
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, n_kv_head=2)
    out = tmp_path / "hf"
    argv = ["export", "hf", "-m", str(checkpoint), "--out", str(out), "--dtype", dtype]
    assert main([*argv, "--layout", layout]) == 0
    torch_dtype, name = hf_export.HF_TORCH_DTYPES[dtype]
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["torch_dtype"] == hf_config["dtype"] == name
    stored = load_file(str(out / "model.safetensors"))
    assert {tensor.dtype for tensor in stored.values()} == {torch_dtype}

    ours = load_checkpoint(checkpoint).model
    tokens = torch.randint(0, bpe_tokenizer.vocab_size, (2, 24), generator=torch.Generator())
    with torch.no_grad():
        reference = ours(tokens)[..., : bpe_tokenizer.vocab_size]  # (B, T, V)
        # The stored weights are ours rounded to `dtype`: computed in float32 they give our model
        # with rounded weights (a reference built here, independent of the export).
        for parameter in ours.parameters():
            parameter.copy_(parameter.to(torch_dtype).float())
        rounded = ours(tokens)[..., : bpe_tokenizer.vocab_size]
    remote = {"trust_remote_code": True} if layout == "custom" else {}
    as_float = transformers.AutoModelForCausalLM.from_pretrained(
        out, local_files_only=True, dtype=torch.float32, **remote
    ).eval()
    native = transformers.AutoModelForCausalLM.from_pretrained(
        out, local_files_only=True, dtype="auto", **remote
    ).eval()
    assert next(native.parameters()).dtype == torch_dtype
    with torch.no_grad():
        float_logits = as_float(tokens).logits[..., : bpe_tokenizer.vocab_size]
        native_logits = native(tokens).logits.float()[..., : bpe_tokenizer.vocab_size]
    assert (float_logits - rounded).abs().max().item() < 1e-4
    scale = reference.std().item()
    difference = (native_logits - reference).abs() / scale
    mean_bound, max_bound = HF_TOLERANCE[dtype]
    assert difference.mean().item() < mean_bound, difference.mean().item()
    assert difference.max().item() < max_bound, difference.max().item()
