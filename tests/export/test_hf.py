"""Hugging Face export and import, proven by parity with real transformers (offline, local files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchlm.chat_template import Message, render
from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.export.hf import export_hf, load_or_adopt_tokenizer
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer, train_bpe
from tests.conftest import tiny_config

transformers = pytest.importorskip("transformers")

MIXED = "Once upon a time 😀 中文字符 and code: def f(x):\n    return x ** 2  # café"
LAYOUTS = {
    "llama-gqa-tied": ("llama-15m", {"n_kv_head": 2}),
    "llama-mha-untied": ("llama-15m", {"tie_embeddings": False}),
    "gpt2-tied": ("aksis-small", {"mlp": "gelu_tanh"}),
    "gpt2-untied-exact-gelu": ("aksis-small", {"mlp": "gelu", "tie_embeddings": False}),
}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_bpe(
        [MIXED * 30, "Tom loved to play with his red ball. " * 50, "def g(y): return y\n" * 20], 500
    )


def make_checkpoint(directory: Path, tokenizer: Tokenizer, layout: str) -> Path:
    preset, overrides = LAYOUTS[layout]
    torch.manual_seed(0)
    config = tiny_config(
        preset,
        vocab_size=tokenizer.vocab_size,
        context_length=64,
        init_std=0.2,
        zero_init_output=False,
        **overrides,
    )
    return save_checkpoint(directory, build_model(config), tokenizer)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_transformers_computes_the_same_function(
    layout: str, tmp_path: Path, tokenizer: Tokenizer
) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", tokenizer, layout)
    assert (
        main(["export", "hf", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "hf")]) == 0
    )
    ours = load_checkpoint(checkpoint).model
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", local_files_only=True
    ).eval()
    expected = "LlamaForCausalLM" if layout.startswith("llama") else "GPT2LMHeadModel"
    assert type(theirs).__name__ == expected
    tokens = torch.randint(0, tokenizer.vocab_size, (2, 40))
    with torch.no_grad():
        difference = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert difference < 1e-4, difference
    prompt = tokens[0, :6].tolist()
    stops = frozenset({tokenizer.eos_id, tokenizer.special_id("<|end|>")})
    our_tokens = list(
        Engine(ours).generate(prompt, max_new_tokens=32, sampling=GREEDY, stop_ids=stops)
    )
    assert len(set(our_tokens)) > 3
    with torch.no_grad():
        output = theirs.generate(
            torch.tensor([prompt]),
            max_new_tokens=32,
            do_sample=False,
            suppress_tokens=list(range(tokenizer.vocab_size, ours.config.padded_vocab_size)),
        )
    generated = output[0, len(prompt) :].tolist()
    if generated and generated[-1] in stops:  # transformers keeps the stop token it ended on
        generated = generated[:-1]
    assert generated == our_tokens


def test_exported_tokenizer_and_chat_template_match(tmp_path: Path, tokenizer: Tokenizer) -> None:
    export_hf(str(make_checkpoint(tmp_path / "ckpt", tokenizer, "llama-gqa-tied")), tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(
        tmp_path / "hf", local_files_only=True
    )
    assert hf_tokenizer(MIXED, add_special_tokens=False)["input_ids"] == tokenizer.encode(MIXED)
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a story 😀"},
        {"role": "assistant", "content": "Once upon a time."},
        {"role": "user", "content": "More?"},
    ]
    ids = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    assert list(ids) == render(messages, tokenizer, add_generation_prompt=True)[0]
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.eos_id, tokenizer.special_id("<|end|>")]


@pytest.mark.parametrize("layout", ["llama-mha-untied", "gpt2-tied"])
def test_import_round_trip_is_exact(layout: str, tmp_path: Path, tokenizer: Tokenizer) -> None:
    checkpoint = make_checkpoint(tmp_path / "ckpt", tokenizer, layout)
    export_hf(str(checkpoint), tmp_path / "hf", max_shard_bytes=50_000)  # several shards + index
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert (
        main(
            ["import", "hf", "--checkpoint", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]
        )
        == 0
    )
    original, back = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "back")
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(tensor, back.model.state_dict()[name]), name
    assert back.tokenizer.encode(MIXED) == tokenizer.encode(MIXED)


def test_refusals(tmp_path: Path, tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    # A forced standard layout that is not exact is refused (auto would pick the custom layout).
    for preset, layout, blocker in (
        ("ai4india", "llama", "mlp=gelu"),
        ("antimatter-300m", "gpt2", "leaky_relu"),
    ):
        path = save_checkpoint(
            tmp_path / preset,
            build_model(tiny_config(preset, vocab_size=tokenizer.vocab_size)),
            tokenizer,
        )
        with pytest.raises(ScratchLMError, match=blocker):
            export_hf(str(path), tmp_path / f"{preset}-hf", layout=layout)
        assert not (tmp_path / f"{preset}-hf").exists()
    checkpoint = make_checkpoint(tmp_path / "ckpt", tokenizer, "llama-gqa-tied")
    (tmp_path / "taken").mkdir()
    assert (
        main(["export", "hf", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "taken")])
        == 2
    )
    assert "--force" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "hf",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "taken"),
                "--force",
            ]
        )
        == 0
    )


def test_import_of_a_foreign_model_keeps_its_function(tmp_path: Path) -> None:
    """A GPT-2 style model with its own tokenizer (no scratchlm special tokens, vocab not padded):
    the import adopts the tokenizer (our specials first, GPT-2's <|endoftext|> becomes ours) and
    moves the embedding rows, so the imported model computes the same next-token scores."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(
        [MIXED * 20, "Tom loved to play with his red ball. " * 30], trainer=trainer
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    backend.save(str(foreign / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=backend.get_vocab_size(),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    theirs = transformers.GPT2LMHeadModel(config).eval()
    theirs.save_pretrained(foreign)
    assert (
        main(["import", "hf", "--checkpoint", str(foreign), "--out", str(tmp_path / "ours")]) == 0
    )
    ours = load_checkpoint(tmp_path / "ours")
    assert ours.tokenizer.eos_id == 2 and ours.tokenizer.vocab_size == backend.get_vocab_size() + 7
    text = "Tom loved to play 😀 with code: def f(x):"
    old_ids = backend.encode(text).ids
    new_ids = ours.tokenizer.encode(text)
    assert ours.tokenizer.decode(new_ids) == text and len(new_ids) == len(old_ids)
    # every old token id maps to one new id; compare the logits of the real tokens through the map
    _, old_id_for_new = load_or_adopt_tokenizer(foreign)
    assert old_id_for_new is not None
    old_to_new = {old: new for new, old in enumerate(old_id_for_new) if old >= 0}
    assert [old_to_new[i] for i in old_ids] == new_ids
    columns_old = torch.tensor(sorted(old_to_new))
    columns_new = torch.tensor([old_to_new[i] for i in sorted(old_to_new)])
    with torch.no_grad():
        reference = theirs(torch.tensor([old_ids])).logits[0][:, columns_old]
        imported = ours.model(torch.tensor([new_ids]))[0][:, columns_new]
    assert (reference - imported).abs().max() < 1e-4
    # and it fine-tunes: the chat template works with the adopted tokenizer
    _, mask = render(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        ours.tokenizer,
    )
    assert sum(mask) > 0
