from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.perplexity import evaluate_batches
from scratchlm.finetune import datasets
from scratchlm.finetune.lora import LoRASettings, apply_lora, merge_lora, merged_state
from scratchlm.finetune.trainer import LORA_LR, FinetuneTrainer, finetune
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from scratchlm.training.run_config import TrainConfig
from tests.conftest import tiny_config

COLORS = ["red", "blue", "green", "yellow", "pink", "black"]
ANIMALS = ["cat", "dog", "fox", "bird", "frog", "duck"]


@pytest.fixture
def instructions(tmp_path: Path) -> Path:
    """Alpaca, messages and prompt/completion shapes mixed, as users' files are."""
    lines = []
    for index, (color, animal) in enumerate((c, a) for c in COLORS for a in ANIMALS):
        if index % 3 == 0:
            lines.append(
                {
                    "instruction": f"What color is the {animal}?",
                    "input": "",
                    "output": f"The {animal} is {color}.",
                }
            )
        elif index % 3 == 1:
            lines.append(
                {
                    "messages": [
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": f"What color is the {animal}?"},
                        {"role": "assistant", "content": f"The {animal} is {color}."},
                    ]
                }
            )
        else:
            lines.append(
                {
                    "prompt": f"What color is the {animal}?",
                    "completion": f"The {animal} is {color}.",
                }
            )
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def config(out: Path, data: Path, **extra: object) -> TrainConfig:
    values: dict[str, object] = {
        "data": str(data),
        "out": str(out),
        "batch_size": 8,
        "max_steps": 60,
        "eval_every": 30,
        "save_every": 100,
        "warmup_steps": 5,
        "quiet": True,
        "sample_tokens": 8,
        "lr": 3e-3,
        "seed": 5,
    }
    values.update(extra)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_prompt_tokens_carry_no_loss(instructions: Path, bpe_tokenizer: Tokenizer) -> None:
    conversations = datasets.read_conversations(instructions)
    examples, _ = datasets.tokenize_conversations(conversations, bpe_tokenizer, 64)
    inputs, targets = datasets.make_batch(examples[:4], bpe_tokenizer.pad_id)
    for row, example in enumerate(examples[:4]):
        learned = [
            token for token, bit in zip(example.ids[1:], example.mask[1:], strict=True) if bit
        ]
        assert targets[row][targets[row] != -100].tolist() == learned
        assert inputs[row, : len(example.ids) - 1].tolist() == example.ids[:-1]


def test_full_finetune_lowers_assistant_loss(
    tmp_path: Path, base: Path, instructions: Path, bpe_tokenizer: Tokenizer
) -> None:
    # the held-out assistant-token loss of the base model, on the split the trainer will use
    examples, _ = datasets.tokenize_conversations(
        datasets.read_conversations(instructions), bpe_tokenizer, 64
    )
    _, val = datasets.split_examples(examples, 0.1, seed=5)
    before = evaluate_batches(
        load_checkpoint(base).model,
        datasets.eval_batches(val, 8, bpe_tokenizer.pad_id),
        device=torch.device("cpu"),
    )
    result = finetune(config(tmp_path / "full", instructions), base=str(base))
    assert result.best_val_loss is not None and result.best_val_loss < 0.4 * before.loss, (
        before.loss,
        result.best_val_loss,
    )
    loaded = load_checkpoint(tmp_path / "full")
    assert loaded.config == load_checkpoint(base).config


def test_lora_trains_only_adapters_and_merges_exactly(
    tmp_path: Path, base: Path, instructions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = LoRASettings(rank=4, alpha=8, targets=("q_proj", "v_proj", "up_proj"))
    finetune(config(tmp_path / "lora", instructions), base=str(base), lora=lora)
    step = tmp_path / "lora" / (tmp_path / "lora" / "latest").read_text().strip()
    adapter = load_file(str(step / "adapter.safetensors"))
    assert adapter and all(".lora_" in name for name in adapter)
    # the base weights did not move: the merged weights differ from the base only in adapted layers
    base_state = load_file(str(base / "model.safetensors"))
    merged = load_file(str(step / "model.safetensors"))
    for name, tensor in base_state.items():
        changed = not torch.equal(tensor, merged[name])
        assert changed == any(target in name for target in lora.targets), name
    # logits of the adapted model equal those of the merged model
    adapted = load_checkpoint(base).model
    apply_lora(adapted, lora)
    adapted.load_state_dict(adapter, strict=False)
    tokens = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        expected = adapted(tokens)
        assert torch.allclose(load_checkpoint(step).model(tokens), expected, atol=1e-5)
        merge_lora(adapted)
        assert torch.allclose(adapted(tokens), expected, atol=1e-5)
    assert main(["merge-lora", "--checkpoint", str(step), "--out", str(tmp_path / "merged")]) == 0
    assert torch.allclose(load_checkpoint(tmp_path / "merged").model(tokens), expected, atol=1e-5)
    assert not (tmp_path / "merged" / "adapter.safetensors").exists()
    # A damaged adapter file is refused by name before it is merged.
    damaged = bytearray((step / "adapter.safetensors").read_bytes())
    damaged[-1] ^= 0xFF
    (step / "adapter.safetensors").write_bytes(bytes(damaged))
    capsys.readouterr()
    out = tmp_path / "merged-again"
    assert main(["merge-lora", "--checkpoint", str(step), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "adapter.safetensors does not match the checksum" in error and "\n" not in error
    assert not out.exists()


def test_lora_resume_is_exact(tmp_path: Path, base: Path, instructions: Path) -> None:
    lora = LoRASettings(rank=4, alpha=8)
    finetune(
        config(tmp_path / "straight", instructions, max_steps=12, eval_every=5),
        base=str(base),
        lora=lora,
    )
    finetune(
        config(tmp_path / "paused", instructions, max_steps=12, eval_every=5, stop_after_steps=6),
        base=str(base),
        lora=lora,
    )
    finetune(
        config(tmp_path / "paused", instructions, max_steps=12, eval_every=5, resume=True),
        base=str(base),
        lora=lora,
    )
    for run in ("straight", "paused"):
        assert (tmp_path / run / "latest").read_text().strip().endswith("step_000012")
    first = load_file(
        str(tmp_path / "straight" / "checkpoints" / "step_000012" / "adapter.safetensors")
    )
    second = load_file(
        str(tmp_path / "paused" / "checkpoints" / "step_000012" / "adapter.safetensors")
    )
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert merged_state  # imported for the merge test above


def test_bad_finetune_data(tmp_path: Path, base: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "there"}\n{"question": "x"}\n')
    with pytest.raises(ScratchLMError, match=r"bad\.jsonl:2"):
        datasets.read_conversations(bad)
    with pytest.raises(ScratchLMError, match="lora-targets"):
        LoRASettings(targets=("attention",))


def test_the_default_rate_goes_to_the_trainers_copy(
    tmp_path: Path, base: Path, instructions: Path
) -> None:
    settings = config(tmp_path / "run", instructions, lr=None, max_steps=1)
    trainer = FinetuneTrainer(settings, base=str(base), lora=LoRASettings(rank=2))
    assert trainer.config.lr == LORA_LR and trainer.learning_rate == LORA_LR
    assert settings.lr is None  # the caller's config is not changed


# --- --context-length: extending a rotary-position model ------------------------------------------


def long_instructions(path: Path, filler_words: int) -> Path:
    """Questions after a long filler: the answer depends on the question at the end only, so
    the stage can learn it at any position; every prompt is longer than the base's 64 tokens."""
    filler = " ".join(["the"] * filler_words)
    lines = [
        {
            "instruction": f"{filler}\n\nWhat color is the {animal}?",
            "output": f"The {animal} is {color}.",
        }
        for color, animal in zip(COLORS * 2, ANIMALS + ANIMALS[::-1], strict=True)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines * 3))
    return path


def test_a_longer_context_keeps_the_weights_and_learns_the_new_positions(
    tmp_path: Path, base: Path, bpe_tokenizer: Tokenizer
) -> None:
    data = long_instructions(tmp_path / "long.jsonl", filler_words=80)
    conversations = datasets.read_conversations(data)
    examples, cut = datasets.tokenize_conversations(conversations, bpe_tokenizer, 128)
    assert cut == 0 and min(len(example.ids) for example in examples) > 64 + 16
    # Extended and untrained, the model is the base model: same logits on the base's context.
    base_model = load_checkpoint(base).model
    extended = build_model(base_model.config.replace(context_length=128))
    extended.load_state_dict(base_model.state_dict())
    ids = torch.tensor([examples[0].ids[:64]])
    torch.testing.assert_close(extended(ids), base_model(ids), rtol=0, atol=0)
    _, val = datasets.split_examples(examples, 0.1, seed=5)
    before = evaluate_batches(
        extended, datasets.eval_batches(val, 8, bpe_tokenizer.pad_id), device=torch.device("cpu")
    )
    notes: list[str] = []
    result = finetune(
        config(tmp_path / "long", data, context_length=128, val_fraction=0.1),
        base=str(base),
        log=notes.append,
    )
    assert not any("were cut" in note for note in notes), notes
    assert result.best_val_loss is not None and result.best_val_loss < 0.5 * before.loss
    tuned = load_checkpoint(tmp_path / "long")
    assert tuned.config == base_model.config.replace(context_length=128)
    # In the base's 64 tokens every example would lose its question and answer.
    _, cut_short = datasets.tokenize_conversations(conversations, bpe_tokenizer, 64)
    assert cut_short == len(conversations)


def test_a_context_past_learned_positions_or_with_lora_is_refused(
    tmp_path: Path,
    base: Path,
    instructions: Path,
    bpe_tokenizer: Tokenizer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    learned = save_checkpoint(
        tmp_path / "learned",
        build_model(
            tiny_config(
                "tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=64, position="learned"
            )
        ),
        bpe_tokenizer,
    )

    def finetune_cli(checkpoint: Path, out: str, context: int, *extra: str) -> int:
        argv = ["finetune", "--data", str(instructions), "--max-steps", "1"]
        argv += ["--checkpoint", str(checkpoint), "--out", str(tmp_path / out)]
        return main([*argv, "--context-length", str(context), *extra])

    refusals = [
        ((learned, "a", 128), (), "positions are learned"),
        ((base, "b", 128), ("--lora-rank", "4"), "drop --lora-rank"),
    ]
    for (checkpoint, out, context), extra, expected in refusals:
        assert finetune_cli(checkpoint, out, context, *extra) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and expected in error, error
        assert not (tmp_path / out).exists()
    # The base's own context is no change, whatever the positions; a rotary model may shrink.
    assert finetune_cli(learned, "c", 64) == 0
    assert finetune_cli(base, "d", 32) == 0
    assert load_checkpoint(tmp_path / "d").config.context_length == 32
    # rl and dpo keep the base model's context.
    for command in ("rl", "dpo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--context-length" not in capsys.readouterr().out
