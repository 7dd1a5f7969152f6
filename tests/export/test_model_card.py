"""The model card of `export hf`: metadata read back by huggingface_hub's own parser, facts checked
against the model and the run report, and the usage snippet run through transformers."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.export.hf import export_hf
from scratchlm.model import build_model
from scratchlm.report.markdown import render_markdown
from scratchlm.report.run import load_run
from scratchlm.report.speed import InferenceSpeed
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config

huggingface_hub = pytest.importorskip("huggingface_hub")
transformers = pytest.importorskip("transformers")

EVAL_RECORD = {
    "kind": "eval",
    "step": 100,
    "val_loss": 2.5,
    "val_perplexity": 12.18,
    "task/arc_easy/acc": 0.31,
    "task/arc_easy/centered": 0.08,
    "task/lambada/acc": 0.12,
    "task/lambada/centered": 0.12,
    "task/centered_aggregate": 0.1,
    "task_info": {
        "arc_easy": {"metric": "acc", "chance": 0.25, "examples": 64},
        "lambada": {"metric": "acc", "chance": 0.0, "examples": 32},
    },
}
HAND_EVAL = {
    "checkpoint": "runs/x/best",
    "num_fewshot": 0,
    "limit": 50,
    "aggregate_tasks": [
        {
            "task": "hellaswag",
            "metric": "acc_norm",
            "value": 0.2734,
            "random_baseline": 0.25,
            "centered": 0.0312,
            "examples": 50,
        }
    ],
    "centered_aggregate": 0.0312,
}


def make_run(
    run_dir: Path, tokenizer: Tokenizer, preset: str = "tiny", **overrides: object
) -> Path:
    """A run directory as `train --eval-tasks` and `eval --tasks --json > RUN/eval/` leave it."""
    torch.manual_seed(0)
    config = tiny_config(preset, vocab_size=tokenizer.vocab_size, init_std=0.2, **overrides)
    training = {
        "step": 120,
        "tokens": 123_456,
        "best_val_loss": 2.5,
        "run_config": {"data": "tinystories", "val_data": None},
    }
    save_checkpoint(run_dir / "best", build_model(config), tokenizer, training=training)
    run_config = {"data": "tinystories", "val_data": "val.txt", "resolved": {}}
    (run_dir / "run_config.json").write_text(json.dumps(run_config))
    records = [
        {"kind": "train", "step": 50, "loss": 3.0, "tokens": 51_200},
        EVAL_RECORD,
        {"kind": "end", "step": 120, "tokens": 123_456, "best_val_loss": 2.5, "best_step": 100},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "hellaswag.json").write_text(json.dumps(HAND_EVAL))
    return run_dir


def python_block(card: str) -> str:
    match = re.search(r"```python\n(.*?)```", card, flags=re.DOTALL)
    assert match is not None, card
    return match.group(1)


def test_card_of_a_run_has_its_facts_and_results(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    run = make_run(tmp_path / "run", bpe_tokenizer)
    out = export_hf(str(run), tmp_path / "hf", license="apache-2.0")
    card_path = out / "README.md"
    metadata = huggingface_hub.ModelCard.load(card_path).data.to_dict()
    assert metadata == {
        "library_name": "transformers",
        "license": "apache-2.0",
        "tags": ["scratchlm", "qwen3", "text-generation", "from-scratch"],
        "pipeline_tag": "text-generation",
    }
    card = card_path.read_text(encoding="utf-8")
    loaded = load_checkpoint(run)
    # The parameter count is the model's own (unique tensors: a tied head counts once).
    unique = {id(p): p.numel() for p in loaded.model.parameters()}
    assert f"| parameters | {sum(unique.values()):,} " in card
    assert "| context length | 32 tokens |" in card
    assert f"| chat template | scratchlm v{loaded.tokenizer.chat_template_version} " in card
    assert f"{bpe_tokenizer.vocab_size:,} tokens" in card and "| kind | bpe |" in card
    assert "| tokens seen | 123,456 |" in card and "| optimizer steps | 120 |" in card
    assert "| training data | tinystories |" in card and "| validation data | val.txt |" in card
    assert "License not set" not in card and "trust_remote_code" not in card
    # The benchmark tables are the report's own: every row the report shows, the card shows.
    report = render_markdown(
        load_run(run), InferenceSpeed(skipped=True), generated="", version="", html_name="r.html"
    )
    rows = [
        line for line in report.splitlines() if re.match(r"\| (arc_easy|lambada|hellaswag) ", line)
    ]
    assert len(rows) >= 3
    for row in rows:
        if "| 0.0800 |" in row or "hellaswag" in row:  # the last-step and hand-eval tables
            assert row in card, row
    assert "eval/hellaswag.json" in card and "step 100" in card


def test_card_of_a_custom_export_without_a_run(
    tmp_path: Path, bpe_tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    config = tiny_config("antimatter-300m", vocab_size=bpe_tokenizer.vocab_size)
    checkpoint = save_checkpoint(tmp_path / "ckpt", build_model(config), bpe_tokenizer)
    out = tmp_path / "hf"
    assert main(["export", "hf", "-m", str(checkpoint), "--out", str(out)]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    metadata = huggingface_hub.ModelCard.load(out / "README.md").data.to_dict()
    assert metadata["library_name"] == "scratchlm" and metadata["license"] == "other"
    assert "custom_code" in metadata["tags"] and "custom" in metadata["tags"]
    assert "License not set" in card and "--license" in card
    assert "trust_remote_code=True" in python_block(card)
    assert "No benchmark results were recorded" in card
    assert "| tokens seen | not recorded |" in card
    assert f"| MLP | leaky_relu (slope {config.leaky_relu_slope:g})" in card
    # --force replaces an export whose README.md is its own card.
    assert main(["export", "hf", "-m", str(checkpoint), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("preset", ["tiny", "antimatter-300m"])
def test_the_usage_snippet_runs_in_transformers(
    preset: str, tmp_path: Path, bpe_tokenizer: Tokenizer
) -> None:
    # Room for the prompt and the snippet's 50 new tokens (learned positions end at the context).
    run = make_run(tmp_path / "run", bpe_tokenizer, preset, context_length=128)
    out = export_hf(str(run), tmp_path / "hf")
    code = python_block((out / "README.md").read_text(encoding="utf-8"))
    assert f"model_id = {str(out)!r}" in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # the card's own code, as a reader runs it
    assert printed.getvalue().endswith("\n")


def test_a_bad_license_is_refused_before_writing(
    tmp_path: Path, bpe_tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path / "run", bpe_tokenizer)
    out = tmp_path / "hf"
    assert main(["export", "hf", "-m", str(run), "--out", str(out), "--license", "My License"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--license 'My License'" in error, error
    assert not out.exists()


@pytest.mark.parametrize(
    ("stage", "settings", "measured", "rows"),
    [
        (
            "dpo",
            {"loss": "sigmoid", "beta": 0.1},
            {"val_loss": 0.25, "val_preference_accuracy": 0.625, "val_reward_accuracy": 0.875},
            [
                "| preference tuning | loss sigmoid, beta 0.1 |",
                "| held-out preference accuracy (summed log-probs) | 0.625 |",
                "| held-out reward accuracy | 0.875 |",
                "| best held-out preference loss | 0.25 |",
            ],
        ),
        (
            "rl",
            {
                "task": "arithmetic",
                "reward": None,
                "group_size": 8,
                "prompts_per_step": 8,
                "kl": 0.0,
            },
            {"val_loss": 0.75, "pass@1": 0.25, "pass@k": 0.5},
            [
                "| RL from verifiable rewards | task arithmetic, reward default, group_size 8, "
                "prompts_per_step 8, kl 0.0 |",
                "| held-out pass@1 (greedy) | 0.25 |",
                "| held-out pass@k | 0.5 |",
                "| best held-out 1 - pass@1 | 0.75 |",
            ],
        ),
    ],
)
def test_card_of_a_post_training_checkpoint_says_what_the_stage_measured(
    tmp_path: Path,
    bpe_tokenizer: Tokenizer,
    stage: str,
    settings: dict[str, object],
    measured: dict[str, float],
    rows: list[str],
) -> None:
    torch.manual_seed(0)
    config = tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size)
    checkpoint = save_checkpoint(
        tmp_path / "ckpt",
        build_model(config),
        bpe_tokenizer,
        training={"step": 10, "best_val_loss": measured["val_loss"], "val": measured},
        extra_metadata={stage: settings},
    )
    out = tmp_path / "hf"
    assert main(["export", "hf", "-m", str(checkpoint), "--out", str(out)]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    for row in rows:
        assert row in card, row
    assert "| best validation loss |" not in card and "perplexity" not in card
