"""GGUF export: the file's metadata, refusals, and parity with llama.cpp (llama-cpp-python)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.chat_template import JINJA_TEMPLATE, Message, render, render_text
from scratchlm.checkpoint import save_checkpoint
from scratchlm.errors import ScratchLMError
from scratchlm.export.gguf import (
    export_gguf,
    interleave_rope_rows,
)
from scratchlm.model import apply_rope, build_model, rope_tables
from scratchlm.tokenizer import Tokenizer
from tests.conftest import SAMPLE_TEXT, save_perturbed_checkpoint, seeded, tiny_config

gguf = pytest.importorskip("gguf")

MIXED_TEXT = 'Tom said: 你好世界 😀 café!\n\tdef f(x):  return x["a"] + 1  # naïve'


def make_checkpoint(directory: Path, tokenizer: Tokenizer, **overrides: object) -> Path:
    """A tiny random Llama-math checkpoint, weights perturbed so that greedy output varies."""
    config = tiny_config("llama-15m", vocab_size=tokenizer.vocab_size, **overrides)
    return save_perturbed_checkpoint(directory, config, tokenizer)


# (name, overrides): MHA and GQA, tied and untied heads
VARIANTS: dict[str, dict[str, object]] = {
    "mha-tied": {"tie_embeddings": True},
    "gqa-untied": {"n_kv_head": 2, "tie_embeddings": False},
}


def test_interleave_rope_rows_matches_interleaved_rope() -> None:
    # Rotate-half RoPE on q = W x equals interleaved-pair RoPE on q' = W' x, up to the same row
    # permutation: the permuted output, rotated pairwise, is the permuted rotate-half output.
    head_dim, n_heads, positions = 8, 2, 5
    weight = torch.randn(n_heads * head_dim, 16, generator=seeded(1))
    inputs = torch.randn(positions, 16, generator=seeded(2))
    cos, sin = rope_tables(head_dim, positions, 10000.0)
    ours = apply_rope(
        (inputs @ weight.T).view(positions, n_heads, head_dim).transpose(0, 1), cos, sin
    )
    permuted = (inputs @ interleave_rope_rows(weight, n_heads).T).view(positions, n_heads, head_dim)
    pairs = permuted.transpose(0, 1).reshape(n_heads, positions, head_dim // 2, 2)
    angles = torch.atan2(sin[:, : head_dim // 2], cos[:, : head_dim // 2])
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated_even = even * angles.cos() - odd * angles.sin()
    rotated_odd = even * angles.sin() + odd * angles.cos()
    interleaved = torch.stack((rotated_even, rotated_odd), dim=-1).reshape(
        n_heads, positions, head_dim
    )
    # Undo the permutation: interleaved pair j sits at rows j and j + head_dim / 2 in ours.
    half = head_dim // 2
    restored = torch.cat((interleaved[..., 0::2], interleaved[..., 1::2]), dim=-1)
    assert half * 2 == head_dim
    torch.testing.assert_close(restored, ours, atol=1e-5, rtol=1e-5)


def test_metadata_and_tokenizer(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = export_gguf(checkpoint, tmp_path / "model.gguf")
    reader = gguf.GGUFReader(out)

    def value(key: str) -> object:
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("llama.block_count") == 2
    assert value("llama.embedding_length") == 32
    assert value("llama.attention.head_count") == 4
    assert value("llama.attention.head_count_kv") == 4
    assert value("llama.feed_forward_length") == 64
    assert value("llama.context_length") == 32
    assert value("llama.rope.dimension_count") == 8
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "gpt-2"
    assert value("tokenizer.chat_template") == JINJA_TEMPLATE
    tokens = value("tokenizer.ggml.tokens")
    types = value("tokenizer.ggml.token_type")
    assert isinstance(tokens, list) and isinstance(types, list)
    # padded to the embedding's rows (371 -> 384)
    padded = tiny_config("llama-15m", vocab_size=bpe_tokenizer.vocab_size).padded_vocab_size
    assert padded is not None and padded > bpe_tokenizer.vocab_size
    assert len(tokens) == len(types) == padded
    assert tokens[:3] == ["<|pad|>", "<|bos|>", "<|endoftext|>"]
    assert types[0] == gguf.TokenType.CONTROL and types[8] == gguf.TokenType.NORMAL
    assert tokens[-1] == f"[PAD{padded - 1}]" and types[-1] == gguf.TokenType.UNUSED
    assert value("tokenizer.ggml.bos_token_id") == 1
    assert value("tokenizer.ggml.eos_token_id") == 2
    assert value("tokenizer.ggml.padding_token_id") == 0
    names = {tensor.name for tensor in reader.tensors}
    assert "token_embd.weight" in names and "blk.1.ffn_down.weight" in names
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd


def test_refuses_non_llama_math(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    config = tiny_config("antimatter-300m", vocab_size=bpe_tokenizer.vocab_size)
    checkpoint = save_checkpoint(tmp_path / "ckpt", build_model(config), bpe_tokenizer)
    with pytest.raises(ScratchLMError, match="leaky_relu"):
        export_gguf(checkpoint, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


def test_refuses_to_overwrite_without_force(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    out = tmp_path / "model.gguf"
    out.write_bytes(b"GGUF precious")
    with pytest.raises(ScratchLMError, match="--force"):
        export_gguf(checkpoint, out)
    assert out.read_bytes() == b"GGUF precious"
    export_gguf(checkpoint, out, force=True)  # a GGUF file: --force may overwrite it
    assert out.read_bytes()[:4] == b"GGUF" and out.stat().st_size > 100
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


def test_rejects_unknown_dtype(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    with pytest.raises(ScratchLMError, match="q8_0"):
        export_gguf(tmp_path / "missing", tmp_path / "model.gguf", dtype="q4")


# --- parity with llama.cpp --------------------------------------------------------------------------


def our_logits(checkpoint: Path, ids: list[int]) -> np.ndarray:
    from scratchlm.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).model
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0]
    return logits.float().numpy()


def our_greedy(checkpoint: Path, ids: list[int], steps: int) -> list[int]:
    from scratchlm.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).model
    sequence = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            sequence.append(int(model(torch.tensor([sequence]))[0, -1].argmax()))
    return sequence[len(ids) :]


def llama_model(path: Path) -> object:
    llama_cpp = pytest.importorskip("llama_cpp")
    # f32 KV cache (type 0) so that an f32 export matches our float32 forward pass closely.
    return llama_cpp.Llama(
        model_path=str(path), logits_all=True, n_ctx=32, verbose=False, type_k=0, type_v=0
    )


def llama_logits(llm: object, ids: list[int]) -> np.ndarray:
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(ids)  # type: ignore[attr-defined]
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # type: ignore[attr-defined]


def llama_greedy(llm: object, ids: list[int], steps: int) -> list[int]:
    generated: list[int] = []
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(ids)  # type: ignore[attr-defined]
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))  # type: ignore[attr-defined]
        generated.append(token)
        llm.eval([token])  # type: ignore[attr-defined]
    return generated


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_f32_logits_and_greedy_match_llama_cpp(
    tmp_path: Path, bpe_tokenizer: Tokenizer, variant: str
) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, **VARIANTS[variant])
    out = export_gguf(checkpoint, tmp_path / "model.gguf", dtype="f32")
    llm = llama_model(out)
    prompt = bpe_tokenizer.encode("Once upon a time, Tom")
    difference = np.abs(llama_logits(llm, prompt) - our_logits(checkpoint, prompt)).max()
    assert difference < 1e-3, difference
    steps = 32 - len(prompt)
    ours = our_greedy(checkpoint, prompt, steps)
    assert len(set(ours)) > 3  # the perturbed weights give varied output, a meaningful check
    assert llama_greedy(llm, prompt, steps) == ours


def test_f16_and_bf16_logits_close(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, n_kv_head=2)
    prompt = bpe_tokenizer.encode("The ball rolled into the garden.")
    reference = our_logits(checkpoint, prompt)
    for dtype in ("f16", "bf16"):
        llm = llama_model(export_gguf(checkpoint, tmp_path / f"model-{dtype}.gguf", dtype=dtype))
        difference = np.abs(llama_logits(llm, prompt) - reference).max()
        assert difference < (5e-2 if dtype == "f16" else 5e-1), (dtype, difference)


def test_q8_0_loads_and_generates(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, tie_embeddings=False)
    out = export_gguf(checkpoint, tmp_path / "model.gguf", dtype="q8_0")
    llm = llama_model(out)
    prompt = bpe_tokenizer.encode("Once upon a time")
    difference = np.abs(llama_logits(llm, prompt) - our_logits(checkpoint, prompt)).max()
    assert difference < 1.0, difference
    generated = llama_greedy(llm, prompt, 8)
    assert len(generated) == 8 and all(0 <= token < 384 for token in generated)


def test_llama_cpp_tokenizer_matches_ours(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    llm = llama_model(export_gguf(checkpoint, tmp_path / "model.gguf"))
    for text in (MIXED_TEXT, SAMPLE_TEXT, "<|end|> typed as text", "  two  spaces\n\n"):
        ours = bpe_tokenizer.encode(text)
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)  # type: ignore[attr-defined]
        assert theirs == ours, text
        assert llm.detokenize(ours).decode("utf-8") == text  # type: ignore[attr-defined]


def test_llama_cpp_tokenizes_rendered_chat_like_our_template(
    tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    # Ollama and llama.cpp tokenize the rendered template text with special tokens parsed.
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer)
    llm = llama_model(export_gguf(checkpoint, tmp_path / "model.gguf"))
    messages: list[Message] = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "你好 😀 print(x)"},
    ]
    text = render_text(messages, add_generation_prompt=True)
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)  # type: ignore[attr-defined]
    assert theirs == render(messages, bpe_tokenizer, add_generation_prompt=True)[0]
    assert llm.metadata["tokenizer.chat_template"] == JINJA_TEMPLATE  # type: ignore[attr-defined]
