"""The custom Hugging Face layout (`export hf --layout custom`): our own modeling code, loaded by
real transformers with `trust_remote_code=True` (offline, from a local directory), computes our
logits and our greedy text for every ModelConfig option; auto picks it only where no standard
layout is exact, and GGUF still refuses what llama.cpp cannot run.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.chat_template import Message, render
from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.config import MLP_KINDS, ModelConfig
from scratchlm.export.custom import REMOTE_CODE_DIRECTORY, REMOTE_CODE_FILES
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import save_perturbed_checkpoint, seeded, tiny_config

transformers = pytest.importorskip("transformers")

# name -> (preset, overrides). Together they cover every option: each MLP kind, learned and rotary
# positions (two thetas), LayerNorm (with and without bias) and RMSNorm (two eps), MHA/GQA/MQA, an
# explicit head_dim, QK-norm, the embedding norm, soft-capping, biases, tied and untied heads,
# dropout (none in eval); the last two are the seed presets that no standard layout expresses.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gelu-learned-layernorm-bias-tied": ("aksis-small", {"mlp": "gelu", "dropout": 0.1}),
    "gelu_tanh-rope-rmsnorm-gqa-untied": (
        "tiny",
        {
            "mlp": "gelu_tanh",
            "n_kv_head": 2,
            "tie_embeddings": False,
            "rope_theta": 5e5,
            "qk_norm": False,
        },
    ),
    "leaky_relu-learned-mqa-softcap-untied": (
        "antimatter-300m",
        {"n_kv_head": 1, "leaky_relu_slope": 0.2, "logit_softcap": 10.0, "tie_embeddings": False},
    ),
    "swiglu-qknorm-embnorm-gqa-tied": ("akane-124m", {}),
    "relu2-rope-layernorm-nobias-qknorm-untied-softcap": (
        "nanogpt-cpu",
        {
            "mlp": "relu2",
            "position": "rope",
            "qk_norm": True,
            "tie_embeddings": False,
            "logit_softcap": 5.0,
        },
    ),
    "swiglu-learned-rmsnorm-bias-embnorm-head_dim": (
        "tiny",
        {"position": "learned", "bias": True, "embedding_norm": True, "head_dim": 12},
    ),
    "antimatter-300m-like": ("antimatter-300m", {}),
    "ai4india-like": ("ai4india", {}),
}


def make_checkpoint(directory: Path, tokenizer: Tokenizer, variant: str) -> Path:
    """A tiny random checkpoint; every weight (norms and biases included) is perturbed, so that a
    misplaced, misnamed or ignored tensor changes the logits."""
    preset, overrides = VARIANTS[variant]
    config = tiny_config(
        preset, vocab_size=tokenizer.vocab_size, context_length=64, zero_init_output=False
    ).replace(**overrides)
    return save_perturbed_checkpoint(directory, config, tokenizer)


def export(checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["export", "hf", "--checkpoint", str(checkpoint), "--out", str(out), *extra])


def load_theirs(directory: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(
        directory, trust_remote_code=True, local_files_only=True
    ).eval()


def their_greedy(model: Any, prompts: list[list[int]], steps: int, config: ModelConfig) -> Any:
    """transformers' greedy `generate()` over left-padded prompts; the padding rows of the
    vocabulary are suppressed, as our engine never samples them."""
    width = max(len(prompt) for prompt in prompts)
    pad = model.config.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    assert config.padded_vocab_size is not None
    with torch.no_grad():
        output = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=steps,
            do_sample=False,
            suppress_tokens=list(range(config.vocab_size, config.padded_vocab_size)),
        )
    return output[:, width:]


def trimmed(tokens: list[int], stops: frozenset[int], pad: int) -> list[int]:
    """A generated row up to (not including) its first stop token, as our engine returns it."""
    for index, token in enumerate(tokens):
        if token in stops:
            return tokens[:index]
    assert pad not in tokens
    return tokens


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_runs_our_modeling_code_exactly(
    variant: str, tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, variant)
    ours = load_checkpoint(checkpoint).model
    forced = () if variant.endswith("-like") else ("--layout", "custom")  # the seeds: auto
    assert export(checkpoint, tmp_path / "hf", *forced) == 0
    theirs = load_theirs(tmp_path / "hf")
    assert type(theirs).__name__ == "ScratchLMForCausalLM"
    if ours.config.tie_embeddings:
        assert theirs.lm_head.weight is theirs.token_embedding.weight
    tokens = torch.randint(0, bpe_tokenizer.vocab_size, (2, 40), generator=seeded(5))
    with torch.no_grad():
        difference = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert difference < 1e-4, difference
    # Greedy text through generate() with transformers' KV cache: after the prompt, every forward
    # sees one new token, so the cache is what carries the context.
    lengths: list[int] = []
    theirs.register_forward_pre_hook(
        lambda _module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True,
    )
    prompts = [tokens[0, :6].tolist(), tokens[1, :3].tolist()]
    stops = frozenset({bpe_tokenizer.eos_id, bpe_tokenizer.special_id("<|end|>")})
    expected = [
        list(Engine(ours).generate(prompt, max_new_tokens=16, sampling=GREEDY, stop_ids=stops))
        for prompt in prompts
    ]
    assert len(set(expected[0])) >= 3  # varied output: a meaningful comparison
    single = their_greedy(theirs, prompts[:1], 16, ours.config)
    assert trimmed(single[0].tolist(), stops, -1) == expected[0]
    assert lengths[0] == 6 and set(lengths[1:]) == {1}, lengths
    # A batch of two prompts of different lengths, left-padded: each row as alone.
    batched = their_greedy(theirs, prompts, 16, ours.config)
    pad = theirs.config.pad_token_id
    assert [trimmed(row.tolist(), stops, pad) for row in batched] == expected


def test_export_directory(
    tmp_path: Path, bpe_tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", bpe_tokenizer, "antimatter-300m-like")
    config = load_checkpoint(checkpoint).config
    out = tmp_path / "hf"
    assert export(checkpoint, out) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["model_type"] == "scratchlm"
    assert hf_config["architectures"] == ["ScratchLMForCausalLM"]
    assert hf_config["auto_map"] == {
        "AutoConfig": "configuration_scratchlm.ScratchLMConfig",
        "AutoModelForCausalLM": "modeling_scratchlm.ScratchLMForCausalLM",
    }
    for field, value in config.to_dict().items():  # every ModelConfig field, as it is
        assert hf_config[field] == value, field
    assert ModelConfig.from_dict({k: hf_config[k] for k in config.to_dict()}) == config
    for name in REMOTE_CODE_FILES:
        assert (out / name).read_bytes() == (REMOTE_CODE_DIRECTORY / name).read_bytes()
    # the tokenizer files and chat template are the standard export's
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "Once upon a time 😀 a cat named Tom"
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == bpe_tokenizer.encode(text)
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon a time."},
        {"role": "user", "content": "More?"},
    ]
    ids = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    assert list(ids) == render(messages, bpe_tokenizer, add_generation_prompt=True)[0]
    # --force replaces a custom export (its code files are the export's own)
    assert export(checkpoint, out, "--force") == 0
    # and `import hf` reads it back bit for bit
    back = tmp_path / "back"
    assert main(["import", "hf", "--checkpoint", str(out), "--out", str(back)]) == 0
    original, imported = load_checkpoint(checkpoint).model, load_checkpoint(back).model
    assert imported.config == original.config
    state = imported.state_dict()
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_remote_code_imports_only_torch_and_transformers() -> None:
    """Users load an export without scratchlm installed."""
    allowed = {"__future__", "typing", "torch", "transformers"}
    for name in REMOTE_CODE_FILES:
        tree = ast.parse((REMOTE_CODE_DIRECTORY / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # the sibling file, as transformers copies both
                    assert node.module in {Path(file).stem for file in REMOTE_CODE_FILES}
                    continue
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, (name, roots)
    source = (REMOTE_CODE_DIRECTORY / "modeling_scratchlm.py").read_text(encoding="utf-8")
    for kind in MLP_KINDS:  # a new MLP kind in config.py must reach the modeling code
        assert f'"{kind}"' in source or f"# {kind}" in source, kind


def test_auto_keeps_standard_layouts_and_gguf_still_refuses(
    tmp_path: Path, bpe_tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    llama = save_checkpoint(
        tmp_path / "llama",
        build_model(tiny_config("llama-15m", vocab_size=bpe_tokenizer.vocab_size)),
        bpe_tokenizer,
    )
    assert export(llama, tmp_path / "llama-hf") == 0
    hf_config = json.loads((tmp_path / "llama-hf" / "config.json").read_text())
    assert hf_config["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in hf_config
    assert not (tmp_path / "llama-hf" / "modeling_scratchlm.py").exists()
    capsys.readouterr()
    ai4india = make_checkpoint(tmp_path / "ai4india", bpe_tokenizer, "ai4india-like")
    for extra in ((), ("--layout", "custom")):
        out = tmp_path / "model.gguf"
        code = main(["export", "gguf", "--checkpoint", str(ai4india), "--out", str(out), *extra])
        error = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in error and not out.exists(), error
        assert "`scratchlm export hf --layout custom`" in error, error
