"""GGUF export of the GPT-2 layout (llama.cpp's `gpt2` architecture): metadata, refusals, and
parity with llama.cpp (llama-cpp-python)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.checkpoint import save_checkpoint
from scratchlm.errors import ScratchLMError
from scratchlm.export.gguf import export_gguf
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import seeded, tiny_config
from tests.export.test_gguf import llama_greedy, llama_logits, our_greedy, our_logits

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

CONTEXT = 64


def make_checkpoint(directory: Path, tokenizer: Tokenizer, **overrides: object) -> Path:
    """A tiny random GPT-2-layout checkpoint (tanh GELU); init_std=0.2 makes greedy output vary."""
    values: dict[str, object] = {
        "mlp": "gelu_tanh",
        "vocab_size": tokenizer.vocab_size,
        "context_length": CONTEXT,
        "init_std": 0.2,
    }
    values.update(overrides)
    config = tiny_config("aksis-small", **values)
    torch.manual_seed(0)
    model = build_model(config)
    generator = seeded(0)
    with torch.no_grad():  # norms and biases start at 1 and 0: perturb them so they matter
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return save_checkpoint(directory, model, tokenizer)


def fp16_table_gelu_logits(
    checkpoint: Path, ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> np.ndarray:
    """Our logits with GELU as llama.cpp's CPU backend computes it: a lookup table indexed by the
    float16 input that holds float16 outputs (ggml_vec_gelu_f32), worth ~1e-3 in the logits."""
    import scratchlm.model

    exact = torch.nn.functional.gelu

    def table_gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        return exact(x.half().float(), approximate=approximate).half().float()

    with monkeypatch.context() as patch:
        patch.setattr(scratchlm.model.F, "gelu", table_gelu)
        return our_logits(checkpoint, ids)


def llama_model(path: Path) -> object:
    # f32 KV cache (type 0) so that an f32 export matches our float32 forward pass closely.
    return llama_cpp.Llama(
        model_path=str(path), logits_all=True, n_ctx=CONTEXT, verbose=False, type_k=0, type_v=0
    )


def test_metadata_and_tensors(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    reader = gguf.GGUFReader(export_gguf(checkpoint, tmp_path / "model.gguf"))

    def value(key: str) -> object:
        return reader.fields[key].contents()

    assert value("general.architecture") == "gpt2"
    assert value("gpt2.block_count") == 2
    assert value("gpt2.embedding_length") == 32
    assert value("gpt2.feed_forward_length") == 64
    assert value("gpt2.context_length") == CONTEXT
    assert value("gpt2.attention.head_count") == 4
    assert value("gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "gpt-2"
    shapes = {tensor.name: tuple(int(n) for n in tensor.shape) for tensor in reader.tensors}
    # GGUF lists dimensions innermost first: [in, out] for a torch [out, in] weight.
    assert shapes["blk.0.attn_qkv.weight"] == (32, 96)
    assert shapes["blk.0.attn_qkv.bias"] == (96,)
    assert shapes["position_embd.weight"] == (32, CONTEXT)
    for name in ("output_norm.bias", "blk.1.ffn_norm.bias", "blk.1.ffn_down.bias"):
        assert name in shapes
    assert "output.weight" not in shapes  # tied: llama.cpp reuses token_embd


def test_refuses_exact_gelu_and_names_both_layouts(
    tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    config = tiny_config("aksis-small", vocab_size=bpe_tokenizer.vocab_size)
    assert config.mlp == "gelu"
    checkpoint = save_checkpoint(tmp_path / "ckpt", build_model(config), bpe_tokenizer)
    with pytest.raises(
        ScratchLMError, match=r"as llama it has.*rmsnorm.*as gpt2 it has.*gelu_tanh"
    ):
        export_gguf(checkpoint, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


def test_refuses_grouped_query_gpt2(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, n_kv_head=2)
    with pytest.raises(ScratchLMError, match="grouped-query"):
        export_gguf(checkpoint, tmp_path / "model.gguf")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_f32_logits_and_greedy_match_llama_cpp(
    tmp_path: Path, bpe_tokenizer: Tokenizer, tied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, tie_embeddings=tied)
    out = export_gguf(checkpoint, tmp_path / "model.gguf", dtype="f32")
    reader = gguf.GGUFReader(out)
    assert ("output.weight" in {tensor.name for tensor in reader.tensors}) is not tied
    llm = llama_model(out)
    prompt = bpe_tokenizer.encode("Once upon a time, Tom")
    theirs = llama_logits(llm, prompt)
    # Against our math with llama.cpp's float16 GELU table the export is exact to 1e-3; against
    # our exact float32 tanh GELU the table alone costs about 1e-3.
    table = np.abs(theirs - fp16_table_gelu_logits(checkpoint, prompt, monkeypatch)).max()
    assert table < 1e-3, table
    difference = np.abs(theirs - our_logits(checkpoint, prompt)).max()
    assert difference < 5e-3, difference
    steps = CONTEXT - len(prompt)
    ours = our_greedy(checkpoint, prompt, steps)
    assert len(set(ours)) > 3  # the perturbed weights give varied output, a meaningful check
    assert llama_greedy(llm, prompt, steps) == ours


def test_f16_logits_close(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, tie_embeddings=False)
    prompt = bpe_tokenizer.encode("The ball rolled into the garden.")
    llm = llama_model(export_gguf(checkpoint, tmp_path / "model.gguf", dtype="f16"))
    difference = np.abs(llama_logits(llm, prompt) - our_logits(checkpoint, prompt)).max()
    assert difference < 5e-2, difference
