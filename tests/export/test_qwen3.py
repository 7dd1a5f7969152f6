"""QK-norm models leave as Hugging Face Qwen3 and GGUF qwen3; an embedding norm is baked into the
exported rows; `--layout` forces a layout only when it is exact; the rest is refused in one line.

References: transformers' Qwen3ForCausalLM / LlamaForCausalLM / GPT2LMHeadModel and llama.cpp
(llama-cpp-python) on tiny random models, and a hand-written RMSNorm for the bake.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import export as export_cli
from scratchlm.cli import main
from scratchlm.export import layouts
from scratchlm.export.layouts import export_state
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import save_perturbed_checkpoint, seeded, tiny_config
from tests.export.test_gguf import (
    llama_greedy,
    llama_logits,
    llama_model,
    our_greedy,
    our_logits,
)

# name -> (preset, overrides): akane-124m's options (QK-norm, embedding norm, GQA, tied) at tiny
# widths, and the variations each layout claims.
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "akane": ("akane-124m", {}),
    "qk-untied-mha": ("akane-124m", {"embedding_norm": False, "tie_embeddings": False}),
    "qk-tied-gqa": ("akane-124m", {"embedding_norm": False, "n_kv_head": 2}),
    "qk-embnorm-untied-mqa": ("akane-124m", {"tie_embeddings": False, "n_kv_head": 1}),
    "llama-embnorm": ("llama-15m", {"embedding_norm": True, "n_kv_head": 2}),
    "gpt2-embnorm": ("aksis-small", {"embedding_norm": True, "mlp": "gelu_tanh"}),
}
EXPECTED = {"akane-124m": "qwen3", "llama-15m": "llama", "aksis-small": "gpt2"}
HF_CLASSES = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}


def make_checkpoint(directory: Path, tokenizer: Tokenizer, variant: str) -> Path:
    """A tiny random checkpoint; every weight (norms included) is perturbed so that a misplaced
    or misnamed tensor changes the logits."""
    preset, overrides = VARIANTS[variant]
    config = tiny_config(
        preset,
        vocab_size=tokenizer.vocab_size,
        context_length=64,
        zero_init_output=False,
        **overrides,
    )
    return save_perturbed_checkpoint(directory, config, tokenizer)


def export(kind: str, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["export", kind, "--checkpoint", str(checkpoint), "--out", str(out), *extra])


def test_layout_choices_match_the_cli() -> None:
    assert export_cli.LAYOUT_CHOICES == layouts.LAYOUT_CHOICES


def test_embedding_norm_bake_matches_a_naive_rmsnorm(bpe_tokenizer: Tokenizer) -> None:
    checkpoint_model = build_model(tiny_config("akane-124m", vocab_size=bpe_tokenizer.vocab_size))
    with torch.no_grad():
        assert checkpoint_model.embedding_norm is not None
        checkpoint_model.embedding_norm.weight.normal_(generator=seeded(3))
        checkpoint_model.token_embedding.weight.normal_(generator=seeded(4))
    table = checkpoint_model.token_embedding.weight.detach().double()  # (vocab, d_model)
    weight = checkpoint_model.embedding_norm.weight.detach().double()  # (d_model,)
    eps = checkpoint_model.config.norm_eps
    naive = table / torch.sqrt(table.pow(2).mean(dim=-1, keepdim=True) + eps) * weight
    state = export_state(checkpoint_model)
    assert "embedding_norm.weight" not in state
    torch.testing.assert_close(
        state["token_embedding.weight"].double(), naive, atol=2e-6, rtol=1e-6
    )
    # the head keeps the raw table, though the model ties it
    assert torch.equal(state["lm_head.weight"], checkpoint_model.token_embedding.weight)
    # in bf16 the baked rows are exactly what the model's forward feeds the first block
    bf16 = checkpoint_model.to(torch.bfloat16)
    ids = torch.arange(bf16.config.vocab_size)
    with torch.no_grad():
        forward_rows = bf16.embedding_norm(bf16.token_embedding(ids))  # type: ignore[misc]
    assert torch.equal(export_state(bf16)["token_embedding.weight"][ids], forward_rows)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_computes_the_same_function(
    variant: str, tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    transformers = pytest.importorskip("transformers")
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, variant)
    assert export("hf", checkpoint, tmp_path / "hf") == 0
    ours = load_checkpoint(checkpoint).model
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    layout = EXPECTED[VARIANTS[variant][0]]
    assert hf_config["architectures"] == [HF_CLASSES[layout]]
    # a baked embedding norm unties the head: the rows differ from the head's raw table
    assert hf_config["tie_word_embeddings"] == (
        ours.config.tie_embeddings and not ours.config.embedding_norm
    )
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", local_files_only=True
    ).eval()
    assert type(theirs).__name__ == HF_CLASSES[layout]
    tokens = torch.randint(0, bpe_tokenizer.vocab_size, (2, 40), generator=seeded(5))
    with torch.no_grad():
        difference = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert difference < 1e-4, difference
    prompt = tokens[0, :6].tolist()
    stops = frozenset({bpe_tokenizer.eos_id, bpe_tokenizer.special_id("<|end|>")})
    our_tokens = list(
        Engine(ours).generate(prompt, max_new_tokens=24, sampling=GREEDY, stop_ids=stops)
    )
    assert len(set(our_tokens)) >= 3  # varied output: a meaningful comparison
    padded = ours.config.padded_vocab_size
    assert padded is not None
    with torch.no_grad():
        output = theirs.generate(
            torch.tensor([prompt]),
            max_new_tokens=24,
            do_sample=False,
            suppress_tokens=list(range(bpe_tokenizer.vocab_size, padded)),
        )
    generated = output[0, len(prompt) :].tolist()
    if generated and generated[-1] in stops:  # transformers keeps the stop token it ended on
        generated = generated[:-1]
    assert generated == our_tokens


@pytest.mark.parametrize("variant", ["akane", "qk-untied-mha", "qk-tied-gqa", "llama-embnorm"])
def test_gguf_f32_logits_and_greedy_match_llama_cpp(
    variant: str, tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    gguf = pytest.importorskip("gguf")
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, variant)
    out = tmp_path / "model.gguf"
    assert export("gguf", checkpoint, out) == 0
    config = load_checkpoint(checkpoint).config
    reader = gguf.GGUFReader(out)
    architecture = reader.fields["general.architecture"].contents()
    assert architecture == EXPECTED[VARIANTS[variant][0]]
    names = {tensor.name for tensor in reader.tensors}
    assert ("blk.1.attn_q_norm.weight" in names) == config.qk_norm
    assert ("blk.1.attn_k_norm.weight" in names) == config.qk_norm
    assert ("output.weight" in names) == (not config.tie_embeddings or config.embedding_norm)
    llm = llama_model(out)
    prompt = bpe_tokenizer.encode("Once upon a time, Tom")
    difference = np.abs(llama_logits(llm, prompt) - our_logits(checkpoint, prompt)).max()
    assert difference < 1e-3, difference
    steps = 32 - len(prompt)
    expected = our_greedy(checkpoint, prompt, steps)  # argmax over all rows, as llama_greedy
    assert len(set(expected)) > 3
    assert llama_greedy(llm, prompt, steps) == expected


def test_import_of_a_qwen3_export(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    # Without an embedding norm the round trip is bit-exact (qk_norm=True comes back).
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, "qk-untied-mha")
    assert export("hf", checkpoint, tmp_path / "hf") == 0
    argv = ["import", "hf", "--checkpoint", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]
    assert main(argv) == 0
    original, back = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "back")
    assert back.config.qk_norm and not back.config.embedding_norm
    state = back.model.state_dict()
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    # With one, the import holds the baked rows and an untied head: the same function.
    checkpoint = make_checkpoint(tmp_path / "ckpt2", bpe_tokenizer, "akane")
    assert export("hf", checkpoint, tmp_path / "hf2") == 0
    argv = ["import", "hf", "--checkpoint", str(tmp_path / "hf2"), "--out", str(tmp_path / "back2")]
    assert main(argv) == 0
    back = load_checkpoint(tmp_path / "back2")
    assert not back.config.embedding_norm and not back.config.tie_embeddings
    tokens = torch.randint(0, bpe_tokenizer.vocab_size, (1, 30), generator=seeded(6))
    with torch.no_grad():
        difference = (load_checkpoint(checkpoint).model(tokens) - back.model(tokens)).abs().max()
    assert difference < 1e-5, difference


def one_line_refusal(
    capsys: pytest.CaptureFixture[str], code: int, out: Path, *needles: str
) -> str:
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert "\n" not in error, error
    for needle in needles:
        assert needle in error, (needle, error)
    assert not out.exists()
    return error


def test_forced_layouts(
    tmp_path: Path, bpe_tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    akane = make_checkpoint(tmp_path / "akane", bpe_tokenizer, "akane")
    for kind, out in (("hf", tmp_path / "as-llama"), ("gguf", tmp_path / "as-llama.gguf")):
        code = export(kind, akane, out, "--layout", "llama")
        one_line_refusal(capsys, code, out, "--layout llama", "qk_norm=true", "--layout auto")
    llama = save_checkpoint(
        tmp_path / "llama",
        build_model(tiny_config("llama-15m", vocab_size=bpe_tokenizer.vocab_size)),
        bpe_tokenizer,
    )
    code = export("gguf", llama, tmp_path / "as-qwen3.gguf", "--layout", "qwen3")
    one_line_refusal(capsys, code, tmp_path / "as-qwen3.gguf", "qk_norm=false")
    biased = save_checkpoint(
        tmp_path / "biased",
        build_model(tiny_config("akane-124m", vocab_size=bpe_tokenizer.vocab_size, bias=True)),
        bpe_tokenizer,
    )
    code = export("hf", biased, tmp_path / "biased-hf", "--layout", "qwen3")
    one_line_refusal(capsys, code, tmp_path / "biased-hf", "bias=true")
    # forcing the layout auto picks writes the same file
    assert export("hf", akane, tmp_path / "forced", "--layout", "qwen3") == 0
    assert export("hf", akane, tmp_path / "auto") == 0
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "forced" / name).read_bytes() == (tmp_path / "auto" / name).read_bytes()


@pytest.mark.parametrize(
    ("preset", "blocker", "nearest"),
    [
        ("antimatter-300m", "mlp=leaky_relu", "kia-1.6b (mlp=gelu_tanh)"),
        ("ai4india", "mlp=gelu", "llama-15m (mlp=swiglu)"),
        ("nanogpt-cpu", "norm/bias", "kia-1.6b (mlp=gelu_tanh, bias=true)"),
    ],
)
def test_refusals_name_blockers_and_routes(
    preset: str,
    blocker: str,
    nearest: str,
    tmp_path: Path,
    bpe_tokenizer: Tokenizer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("gguf")
    config = tiny_config(preset, vocab_size=bpe_tokenizer.vocab_size)
    checkpoint = save_checkpoint(tmp_path / "ckpt", build_model(config), bpe_tokenizer)
    out = tmp_path / "model.gguf"
    error = one_line_refusal(capsys, export("gguf", checkpoint, out), out, blocker)
    # qwen3 is llama plus QK-norm: a model without QK-norm is told about llama only
    assert "as llama it has" in error and "as gpt2 it has" in error and "as qwen3" not in error
    assert "`scratchlm export hf --layout custom`" in error
    assert f"nearest exportable preset, {nearest}" in error
